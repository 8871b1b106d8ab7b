"""Command-line entry points: ``mailsvc …``. The top of the layers: nothing imports the CLI."""

from mailsvc.cli.main import main

__all__ = ["main"]
