"""mailsvc: the mail system of a city council."""

__version__ = "0.1.0"
