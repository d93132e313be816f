"""The metadata database through the stdlib's sqlite3 alone: the few queries of `run`'s fast path
and of `files`' (engine/image/quickfiles.py).

Importing peewee (with uuid, platform, logging, decimal...) is about half of `container run`'s
CPU time, so the common run (an image found by its tag, its snapshot built) reads and writes
these rows without it. The tables and columns are the models' (schema/models.py): TABLES lists
every one used here, and tests/test_run.py checks it against the models, so a migration that
renames, adds or drops one of them fails there until this file follows. The rows written are the
ones the models write (same columns, datetimes as the same text).
"""

from __future__ import annotations

import os

from .base import SCHEMA_VERSION, utcnow_text

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Callable


def _statement_cache(maxsize: int) -> Callable[[Any], Any]:
    """functools.lru_cache(maxsize) as _sqlite3 uses it, its connections' statement cache:
    cache(connection) -> get(sql) -> a prepared statement (made by connection(sql) when not cached).
    Kept whole until maxsize statements, then started afresh (the few statements of a run never get there)."""
    def cache(make: Callable[[str], Any]) -> Callable[[str], Any]:
        if maxsize <= 0:
            return make
        made: dict[str, Any] = {}

        def get(sql: str) -> Any:
            st = made.get(sql)
            if st is None:
                if len(made) >= maxsize:
                    made.clear()
                st = made[sql] = make(sql)
            return st
        return get
    return cache


def _import_sqlite() -> Any:
    """The _sqlite3 C module, without the sqlite3 package's dbapi2 (which imports datetime: 2-3 ms
    of `run`) nor functools: _sqlite3's init imports functools for lru_cache alone, and functools
    imports collections, operator, reprlib, types... (3 ms of `run`). While it initialises, a
    stand-in functools lends it _statement_cache, then leaves sys.modules (a later `import
    functools` gets the real one; connections then made, peewee's included, cache with the
    stand-in, to the same effect). Where that fails, or functools is loaded already, the plain import."""
    import sys

    if "functools" not in sys.modules and "_sqlite3" not in sys.modules:
        stub = type(sys)("functools")
        stub.lru_cache = _statement_cache  # type: ignore[attr-defined]
        sys.modules["functools"] = stub
        try:
            import _sqlite3
            return _sqlite3
        except Exception:      # pragma: no cover (another CPython's init wanting more of functools)
            pass
        finally:
            if sys.modules.get("functools") is stub:
                del sys.modules["functools"]
    try:
        import _sqlite3
        return _sqlite3
    except ImportError:        # pragma: no cover
        import sqlite3 as m
        return m


if not TYPE_CHECKING:
    sqlite3 = _import_sqlite()

Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError

# table -> the columns this module uses; the container row is written whole (every column).
CONTAINER_COLUMNS = ("id", "name", "image_id", "image_ref", "chain_id", "command", "config", "isolation",
                     "rootfs_mode", "status", "exit_code", "pid", "created", "started", "finished")
TABLES = {
    "meta": ("key", "value"),
    "tag": ("repository", "tag", "image_id"),
    "image": ("id", "config_digest", "chain_id"),
    "snapshot": ("chain_id",),
    "container": CONTAINER_COLUMNS,
    "image_layer": ("image_id", "diff_id", "position"),
    "layer_index": ("diff_id",),
    "file": ("diff_id", "path", "type", "whiteout", "link", "mode", "uid", "gid", "size", "mtime", "xattrs",
             "sha256"),
}


def _text(v):
    """A datetime as the models store it (str(): 'YYYY-MM-DD HH:MM:SS.ffffff')."""
    return str(v) if hasattr(v, "isoformat") else v


class _Reading:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN")

    def __exit__(self, et, *exc):
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK" if et is not None else "COMMIT")


class LiteDB:
    """One sqlite3 connection to a store's metadata.db, in autocommit mode; writes are one
    statement each in a BEGIN IMMEDIATE transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @classmethod
    def open(cls, path: str) -> LiteDB | None:
        """The database at `path`, or None when this module cannot serve it: missing, unreadable,
        another schema version, or a container table without the columns written here."""
        if not os.path.isfile(path):
            return None
        try:
            c = sqlite3.connect(path, timeout=30, isolation_level=None)     # (busy_timeout = 30000)
            c.execute("PRAGMA foreign_keys = 1")
            c.execute("PRAGMA synchronous = normal")
            # `run` leaves with os._exit() and never closes (closing the last connection
            # checkpoints: ~10-30 ms). The next opener then rebuilds the WAL index by reading the
            # whole WAL (2 MB: ~7 ms), so keep the WAL short: checkpoint after 64 pages (every ~20 runs).
            c.execute("PRAGMA wal_autocheckpoint = 64")
            v = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            cols = {r[1] for r in c.execute("PRAGMA table_info(container)")}
        except sqlite3.Error:
            return None
        if not v or v[0] != str(SCHEMA_VERSION) or not set(CONTAINER_COLUMNS) <= cols:
            return None
        return cls(c)

    def close(self) -> None:
        self.conn.close()

    # -- reads -------------------------------------------------------------------------------
    def images_by_tag(self, repository: str, tag: str) -> list[tuple[str, str, str]]:
        """(image id, config digest, chain id) of the images tagged repository:tag (at most 2)."""
        return self.conn.execute(
            "SELECT i.id, i.config_digest, i.chain_id FROM tag t JOIN image i ON i.id = t.image_id "
            "WHERE t.repository = ? AND t.tag = ? LIMIT 2", (repository, tag)).fetchall()

    def has_snapshot(self, chain_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM snapshot WHERE chain_id = ?", (chain_id,)).fetchone() is not None

    def image_layers(self, image_id: str) -> list[tuple[str, bool]]:
        """(diff_id, whether the contents index has it) of the image's layers, base first."""
        return self.conn.execute(
            "SELECT il.diff_id, li.diff_id IS NOT NULL FROM image_layer il LEFT JOIN layer_index li "
            "ON li.diff_id = il.diff_id WHERE il.image_id = ? ORDER BY il.position", (image_id,)).fetchall()

    def select(self, sql: str, args) -> list[tuple]:
        return self.conn.execute(sql, args).fetchall()

    def reading(self):
        """A read transaction: what is read inside `with db.reading():` is one snapshot of the DB."""
        return _Reading(self.conn)

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM container WHERE name = ?", (name,)).fetchone() is not None

    # -- container rows ----------------------------------------------------------------------
    def _write(self, sql: str, args) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(sql, args)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def insert_container(self, row: dict) -> None:
        """A new container row (status, created... as the model's defaults); sqlite3.IntegrityError
        when the name is taken."""
        row = dict(row, exit_code=None, pid=None, created=utcnow_text(), started=None, finished=None)
        keys = list(row)
        self._write(f"INSERT INTO container ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                    [row[k] for k in keys])

    def update_container(self, cid: str, **fields) -> None:
        keys = list(fields)
        vals = [_text(v) for v in fields.values()]
        self._write(f"UPDATE container SET {', '.join(k + ' = ?' for k in keys)} WHERE id = ?", vals + [cid])

    def delete_container(self, cid: str) -> None:
        self._write("DELETE FROM container WHERE id = ?", (cid,))
