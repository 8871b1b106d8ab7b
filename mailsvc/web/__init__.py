"""Web: the councillors' acknowledgement page and (later) the clerks' interface."""
