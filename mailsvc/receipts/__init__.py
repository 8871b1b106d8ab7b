"""Receipts: DSN/MDN parsing, IMAP flag checks, signed tokens."""
