"""Schema version and migrations.

Each step is a function `up(db)` registered in STEPS under the version it
produces; it runs in a transaction with foreign keys off (SqliteMigrator's
migration_context). Version 1 is the initial schema: no steps yet.
"""

from __future__ import annotations

from typing import Callable

import peewee

STEPS: dict[int, Callable[[peewee.Database], None]] = {}


def up_usage(db: peewee.Database) -> None:
    """Version 2: the usage records (disk, inodes, inode) on blob, layer and snapshot, and
    blob.verified, all NULL: a store written before them is measured once, lazily
    (engine/maint/usage.py) or by fsck --repair, and its blobs rehashed by the next fsck."""
    from playhouse.migrate import SchemaMigrator, migrate as run

    m = SchemaMigrator.from_database(db)
    big = peewee.BigIntegerField(null=True)
    cols = {"blob": ("disk", "inode", "verified"), "layer": ("disk", "inodes", "inode"), "snapshot": ("disk", "inodes", "inode")}
    have = {t: {c.name for c in db.get_columns(t)} for t in cols}
    run(*[m.add_column(t, c, peewee.IntegerField(null=True) if c == "inodes" else big)
          for t, cs in cols.items() for c in cs if c not in have[t]])


STEPS[2] = up_usage


def current_version(db: peewee.Database) -> int | None:
    if not db.table_exists("meta"):
        return None
    row = db.execute_sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def migrate(db: peewee.Database, have: int, want: int) -> None:
    from playhouse.migrate import SchemaMigrator

    migrator = SchemaMigrator.from_database(db)
    for v in range(have + 1, want + 1):
        step = STEPS[v]
        with migrator.migration_context() if hasattr(migrator, "migration_context") else db.atomic():
            step(db)
            db.execute_sql(f"UPDATE meta SET value = {db.param} WHERE key = 'schema_version'", (str(v),))
