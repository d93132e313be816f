"""Schema version and migrations.

Each step is a function `up(db)` registered in STEPS under the version it
produces; it runs in a transaction with foreign keys off (SqliteMigrator's
migration_context). Version 1 is the initial schema.
"""

from __future__ import annotations

from typing import Callable

import peewee

STEPS: dict[int, Callable[[peewee.Database], None]] = {}


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


def up_shared_store(db: peewee.Database) -> None:
    """2: the host table (heartbeats) and lease.host (docs/shared-store.md)."""
    from playhouse.migrate import SchemaMigrator, migrate as run_ops

    from .models import Host, Lease

    db.create_tables([Host])
    if "host" not in {c.name for c in db.get_columns("lease")}:
        run_ops(SchemaMigrator.from_database(db).add_column("lease", "host", Lease.host))


STEPS[2] = up_shared_store
