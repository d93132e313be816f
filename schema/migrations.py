"""Schema version and migrations.

Each step is a function `up(db)` registered in STEPS under the version it
produces; it runs in a transaction with foreign keys off (SqliteMigrator's
migration_context). Version 1 is the initial schema.

    2  up_volumes: the volume and volume_use tables
    3  up_index: the contents index (layer_index, file, layer_package, package)
    4  up_shared_store: the host table and lease.host
    5  up_usage: the usage records (disk, inodes, inode) on blob, layer, snapshot; blob.verified
    6  up_index_versions: PostgreSQL's version functions again (rpm's and apk's orderings added)
"""

from __future__ import annotations

from typing import Callable

import peewee


def up_volumes(db: peewee.Database) -> None:
    """Version 2: named volumes and which containers use them (schema/models.py Volume, VolumeUse)."""
    from .models import Volume, VolumeUse

    with db.bind_ctx([Volume, VolumeUse]):
        db.create_tables([Volume, VolumeUse], safe=True)


STEPS: dict[int, Callable[[peewee.Database], None]] = {2: up_volumes}


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


def up_index(db: peewee.Database) -> None:
    """The contents index (file, package and their bookkeeping): tables only; a store's existing
    layers are indexed by `container fsck --repair` or on first use (engine/maint/reindex.py)."""
    from .models import INDEX_MODELS

    db.create_tables(INDEX_MODELS, safe=True)
    if isinstance(db, peewee.PostgresqlDatabase):
        from .pgversion import create_functions

        create_functions(db)


STEPS[3] = up_index


def up_shared_store(db: peewee.Database) -> None:
    """4: the host table (heartbeats) and lease.host (docs/shared-store.md)."""
    from playhouse.migrate import SchemaMigrator, migrate as run_ops

    from .models import Host, Lease

    db.create_tables([Host])
    if "host" not in {c.name for c in db.get_columns("lease")}:
        run_ops(SchemaMigrator.from_database(db).add_column("lease", "host", Lease.host))


STEPS[4] = up_shared_store


def up_usage(db: peewee.Database) -> None:
    """Version 5: the usage records (disk, inodes, inode) on blob, layer and snapshot, and
    blob.verified, all NULL: a store written before them is measured once, lazily
    (engine/maint/usage.py) or by fsck --repair, and its blobs rehashed by the next fsck."""
    from playhouse.migrate import SchemaMigrator, migrate as run

    m = SchemaMigrator.from_database(db)
    big = peewee.BigIntegerField(null=True)
    cols = {"blob": ("disk", "inode", "verified"), "layer": ("disk", "inodes", "inode"), "snapshot": ("disk", "inodes", "inode")}
    have = {t: {c.name for c in db.get_columns(t)} for t in cols}
    run(*[m.add_column(t, c, peewee.IntegerField(null=True) if c == "inodes" else big)
          for t, cs in cols.items() for c in cs if c not in have[t]])


STEPS[5] = up_usage


def up_index_versions(db: peewee.Database) -> None:
    """Version 6: version_cmp / version_lt with a manager argument (rpm's and apk's orderings) on
    PostgreSQL, where they live in the database (schema/pgversion.py; CREATE OR REPLACE, so the
    dpkg ones are refreshed too). SQLite registers them per connection: nothing to do."""
    if isinstance(db, peewee.PostgresqlDatabase):
        from .pgversion import create_functions

        create_functions(db)


STEPS[6] = up_index_versions
