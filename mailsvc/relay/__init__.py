"""The residents' relay: SMTP in (smtp/) → the queue (storage.queue) → delivery (delivery/)."""
