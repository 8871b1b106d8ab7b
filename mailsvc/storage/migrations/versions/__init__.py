"""One module per schema revision (Alembic reads them by file, not by import)."""
