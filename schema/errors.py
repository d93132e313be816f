"""The metadata layer's errors: SchemaError and the database errors a damaged DB raises.

The engine translates all of them in one place (engine/errors.translate); nothing above
the engine looks at peewee's or sqlite3's exception types.
"""

from __future__ import annotations

import sys


class SchemaError(Exception):
    """Base of the errors schema/ raises on purpose."""


class SchemaTooNew(SchemaError, RuntimeError):
    """The store was written by a newer version of this program (a schema version we do not know)."""


class DatabaseCorrupt(SchemaError, RuntimeError):
    """The metadata database cannot be opened: not a database, damaged pages, tables not ours."""


def is_database_error(e: BaseException) -> bool:
    """An SQL error from a damaged metadata DB or one not ours (a table or column missing, a
    corrupt page) raised by a query: sqlite3's or peewee's DatabaseError. peewee is looked up,
    not imported: when it was never imported, no peewee error can have been raised."""
    import sqlite3

    if isinstance(e, (sqlite3.DatabaseError, SchemaError)):
        return True
    peewee = sys.modules.get("peewee")
    return peewee is not None and isinstance(e, peewee.DatabaseError)
