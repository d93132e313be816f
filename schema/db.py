"""Database setup: SQLite (WAL, busy timeout, foreign keys) by default, PostgreSQL for a
postgresql:// URL (schema/pg.py), any other peewee URL through playhouse.db_url.

The models bind to `database`, a proxy, because `--db URL` may pick another
database class at run time (peewee docs). `open_database` initialises it,
creates or migrates the tables and checks the schema version: a store written
by a newer version of this program is refused, never silently downgraded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import peewee

from .errors import DatabaseCorrupt, SchemaTooNew
from .base import SCHEMA_VERSION

database = peewee.DatabaseProxy()


def _connect(url_or_path: str) -> peewee.Database:
    if "://" in url_or_path:
        from . import pg

        if pg.is_postgres_url(url_or_path):
            return pg.connect(url_or_path)
        from playhouse.db_url import connect

        return connect(url_or_path)
    return peewee.SqliteDatabase(
        url_or_path,
        timeout=30,
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "cache_size": -16000,
        },
    )


def _connect_retrying(db: peewee.Database, timeout: float = 30.0) -> None:
    """Connect, retrying while the file is locked: switching a new database to WAL needs an
    exclusive lock, and SQLite answers "database is locked" at once (no busy wait) when another
    process is creating the same store."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except peewee.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            if not db.is_closed():
                db.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def open_database(url_or_path: str, *, readonly: bool = False) -> peewee.Database:
    """Open, create or migrate. With readonly=True (container sql) nothing is written."""
    from .models import ALL_MODELS, Meta
    from . import migrations

    from .pg import redact

    name = redact(url_or_path)
    db: peewee.Database
    if readonly and "://" not in url_or_path:
        db = peewee.SqliteDatabase(f"file:{url_or_path}?mode=ro", uri=True, timeout=30,
                                   pragmas={"busy_timeout": 30000, "query_only": 1})
    else:
        db = _connect(url_or_path)
    database.initialize(db)
    try:
        _connect_retrying(db)
        if readonly:
            return db
        try:
            version = migrations.current_version(db)
        except ValueError:
            raise DatabaseCorrupt(f"cannot open metadata database {name}: its schema version "
                                  "is not a number") from None
        if version is None:
            # A new store: two processes may create it at once. Check again under the write lock
            # (IMMEDIATE: a deferred transaction that read first could not upgrade, SQLITE_BUSY).
            with write_txn():
                version = migrations.current_version(db)
                if version is None:
                    if db.get_tables():
                        raise DatabaseCorrupt(f"cannot open metadata database {name}: it has "
                                              "tables but no schema version (not written by container?)")
                    db.create_tables(ALL_MODELS)
                    if isinstance(db, peewee.PostgresqlDatabase):
                        from .pgversion import create_functions

                        create_functions(db)      # version_cmp / version_lt (SQLite: engine/maint/sql.py)
                    Meta.insert(key="schema_version", value=str(SCHEMA_VERSION)).execute()
                    version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the store's database has schema version {version}, newer than this container "
                f"(supports {SCHEMA_VERSION}): upgrade container"
            )
        elif version < SCHEMA_VERSION and isinstance(db, peewee.PostgresqlDatabase):
            with write_txn():          # two hosts may open an old store at once: migrate it once
                version = migrations.current_version(db) or 0
                if version < SCHEMA_VERSION:
                    migrations.migrate(db, version, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION:
            migrations.migrate(db, version, SCHEMA_VERSION)
    except peewee.DatabaseError as e:
        if isinstance(e, peewee.OperationalError) and "locked" in str(e):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseCorrupt(f"cannot open metadata database {name}: {msg}") from e
    return db


@contextmanager
def write_txn() -> Iterator[None]:
    """A write transaction, one writer at a time: IMMEDIATE on SQLite (so read-then-write never hits
    SQLITE_BUSY on upgrade), the writers' advisory lock on PostgreSQL (schema/pg.py)."""
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase) and not db.in_transaction():
        with db.atomic("IMMEDIATE"):
            yield
    elif isinstance(db, peewee.PostgresqlDatabase) and not db.in_transaction():
        from .pg import lock_writers

        with db.atomic():
            lock_writers(db)
            yield
    else:
        with db.atomic():
            yield


# -- bulk statements without peewee's per-value work (gc, fsck and df touch tens of thousands of rows)

def delete_in(field: peewee.Field, keys: Iterable[object], chunk: int = 500, *,
              set_null: tuple[peewee.Field, ...] = ()) -> None:
    """DELETE FROM field's table WHERE field IN keys (with set_null: UPDATE ... SET those columns to
    NULL instead), `chunk` keys per statement, plain parameters: building a 500-value IN through
    peewee's expression tree costs ~20 µs a value."""
    db = database.obj
    ks = list(keys)
    table = field.model._meta.table_name
    nulls = ", ".join(f'"{c.column_name}" = NULL' for c in set_null)
    head = f'UPDATE "{table}" SET {nulls}' if set_null else f'DELETE FROM "{table}"'
    for i in range(0, len(ks), chunk):
        part = ks[i:i + chunk]
        marks = ", ".join([db.param] * len(part))
        db.execute_sql(f'{head} WHERE "{field.column_name}" IN ({marks})', part)


def update_many(key: peewee.Field, columns: Iterable[peewee.Field], rows: Iterable[tuple]) -> None:
    """UPDATE key's table SET columns WHERE key = ... for each row (its column values, then the key):
    one prepared statement run for every row (executemany), inside the caller's transaction."""
    db = database.obj
    cols = list(columns)
    p = db.param
    sets = ", ".join(f'"{c.column_name}" = {p}' for c in cols)
    sql = f'UPDATE "{key.model._meta.table_name}" SET {sets} WHERE "{key.column_name}" = {p}'
    data = [tuple(r) for r in rows]
    if data:
        db.cursor().executemany(sql, data)


def bump_in(key: peewee.Field, column: peewee.Field, counts: dict[object, int], chunk: int = 500) -> None:
    """column += n for the rows whose key is in `counts` ({key: n}): one statement per distinct n
    and chunk, where one UPDATE per row cost rmi ~120 statements an image."""
    db = database.obj
    by_n: dict[int, list[object]] = {}
    for k, n in counts.items():
        if n:
            by_n.setdefault(n, []).append(k)
    table, col = key.model._meta.table_name, column.column_name
    for n, ks in by_n.items():
        for i in range(0, len(ks), chunk):
            part = ks[i:i + chunk]
            marks = ", ".join([db.param] * len(part))
            db.execute_sql(f'UPDATE "{table}" SET "{col}" = "{col}" + {db.param} WHERE "{key.column_name}" IN ({marks})',
                           [n, *part])
