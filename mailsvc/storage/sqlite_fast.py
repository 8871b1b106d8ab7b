"""Statements of the queue's hot path straight through the sqlite3 driver.

On the queue's own SQLite connection (mailsvc.storage.units) the few statements every message
runs — enqueue, claim, outcome, settle, the acknowledgement key — skip SQLAlchemy's
compile-and-bind round, which cost more than SQLite's own work for them. Values are converted
with SQLAlchemy's own SQLite processors, so rows written either way read back alike; errors are
raised as SQLAlchemy raises them, so callers handle one kind. Everything else, and every other
database, goes through SQLAlchemy as before.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

_DIALECT = sqlite_dialect.dialect()

datetime_to_db: Callable[[datetime], str] = (
    DateTime().dialect_impl(_DIALECT).bind_processor(_DIALECT)  # type: ignore[assignment]
)
datetime_from_db: Callable[[str], datetime] = (
    DateTime().dialect_impl(_DIALECT).result_processor(_DIALECT, None)  # type: ignore[assignment]
)
date_to_db: Callable[[date], str] = (
    Date().dialect_impl(_DIALECT).bind_processor(_DIALECT)  # type: ignore[assignment]
)

# UPDATE … RETURNING (SQLite 3.35 and later).
RETURNING = sqlite3.sqlite_version_info >= (3, 35)


def driver(conn: Connection) -> Any:
    """The sqlite3 connection under ``conn`` when it is one, else None."""
    if conn.dialect.driver == "pysqlite":
        return conn.connection.driver_connection
    return None


@contextlib.contextmanager
def as_dbapi_error(what: str) -> Iterator[None]:
    """Raise a driver error as SQLAlchemy would (callers and the units' recovery know those).

    ``DBAPIError.instance`` is SQLAlchemy's internal wrapper: pinned by
    tests/unit/test_aiosmtpd_pin.py.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise DBAPIError.instance(what, None, exc, sqlite3.Error) from exc
