"""The schema's Alembic migrations: ``env.py``, ``versions/`` (one file per revision), run by
``mailsvc.storage.schema`` on a connection it holds, never from an ``alembic.ini``.

A change to ``mailsvc/storage/tables.py`` needs a revision: ``python -m
mailsvc.storage.migrations "what changed"`` writes one into ``versions/`` from the difference
between the head schema and the tables (check it, and use ``op.batch_alter_table`` for what
SQLite cannot ALTER). tests/unit/test_schema.py fails until the two agree.
"""
