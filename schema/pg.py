"""PostgreSQL as the metadata backend: the connection (psycopg 3, imported only here) and the
writer lock.

The URL goes to libpq as it is (`postgresql://user[:password]@host[:port]/dbname?sslmode=...`):
a password absent from the URL is looked up by libpq itself, in PGPASSWORD, then ~/.pgpass
(or PGPASSFILE); PGHOST, PGUSER, PGSSLMODE... fill in what the URL leaves out.

peewee looks for psycopg when it is first imported, and importing psycopg costs ~100 ms, so
schema/__init__.py hides it from peewee (every command on SQLite would pay that otherwise); the
adapter here imports it when a postgresql:// URL is opened and never reads peewee's global.

Writers: SQLite's BEGIN IMMEDIATE makes every write transaction run alone, and the engine's
read-then-write steps (refcounts, "is this image still tagged?", a new store's tables) rely on
that. On PostgreSQL, write_txn() takes one transaction-scoped advisory lock first
(pg_advisory_xact_lock(WRITER_LOCK)): writers queue exactly as on SQLite, readers never wait, and
under READ COMMITTED each statement after the lock sees every earlier writer's commit.
"""

from __future__ import annotations

from typing import Any

import peewee

from .errors import DatabaseCorrupt

SCHEMES = ("postgresql", "postgres")

# pg_advisory_xact_lock's key for "one writer at a time" ('cntr' 'meta' as a 64-bit int)
WRITER_LOCK = 0x636E74726D657461


def is_postgres_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def import_psycopg() -> Any:
    import sys

    from . import HIDDEN

    for m in HIDDEN:
        if m in sys.modules and sys.modules[m] is None:
            del sys.modules[m]
    try:
        import psycopg
    except ImportError:
        raise DatabaseCorrupt("a postgresql:// database needs psycopg: pip install 'container[postgres]' "
                              "(or psycopg[binary])") from None
    return psycopg


class Psycopg3(peewee.Psycopg3Adapter):
    """peewee's psycopg 3 adapter, with psycopg imported on first use instead of with peewee."""

    def __init__(self) -> None:
        super().__init__()
        pg = import_psycopg()
        from psycopg.types.json import Json, Jsonb

        status = pg.pq.TransactionStatus
        self.txn_idle, self.txn_inerror, self.txn_unknown = status.IDLE, status.INERROR, status.UNKNOWN
        self.txn_intrans = status.INTRANS
        self.json_type, self.jsonb_type = Json, Jsonb
        self.pg = pg

    def check_driver(self) -> None:
        pass

    def get_binary_type(self) -> Any:
        return self.pg.Binary

    def connect(self, db: Any, **params: Any) -> Any:
        params.setdefault("conninfo", db.database)      # libpq parses the URL, finds the password
        return self.pg.connect(**params)

    def server_side_cursor(self, conn: Any) -> Any:
        import uuid

        return conn.cursor(name=str(uuid.uuid1()), withhold=self.txn_status(conn) != self.txn_intrans)


class PostgresDatabase(peewee.PostgresqlDatabase):
    """peewee's PostgresqlDatabase on the adapter above, whatever peewee found at import (init()
    picks one of these two attributes)."""

    psycopg2_adapter = Psycopg3
    psycopg3_adapter = Psycopg3


def connect(url: str) -> PostgresDatabase:
    if url.split("://", 1)[0].lower() == "postgres":     # libpq takes both; one spelling here
        url = "postgresql" + url[len("postgres"):]
    return PostgresDatabase(url)


def lock_writers(db: peewee.Database) -> None:
    """Inside a transaction: wait until no other writer holds the store, until commit/rollback."""
    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))


def redact(url: str) -> str:
    """The URL for messages: a password in it replaced by ***."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth.split("/", 1)[0]:
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"


def read_only_query(db: peewee.Database, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """`container sql` on PostgreSQL: (column names, rows) of one statement run in a READ ONLY
    transaction that is rolled back. Prepared (the extended protocol), so it is one statement:
    `COMMIT; DELETE ...` cannot end the transaction first. psycopg's errors come out as peewee's."""
    pg = import_psycopg()
    conn = db.connection()
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT 1")            # the snapshot: READ WRITE cannot come back now
            cur = conn.cursor()
            cur.execute(sql, prepare=True)
            cols = [d.name for d in cur.description or []]
            return cols, [tuple(r) for r in cur.fetchall()] if cur.description else []
    except pg.Error as e:
        raise peewee.DatabaseError(str(e).strip() or type(e).__name__) from None
