"""Web: the councillors' acknowledgement pages, the clerks' interface, the JSON API."""
