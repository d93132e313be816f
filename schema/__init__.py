"""peewee models and database setup. Imports neither `container.cas` nor `container.engine`.

Names are loaded on first use (PEP 562), so `container.schema.base` and friends cost no peewee
import: run's fast path uses them.
"""

from __future__ import annotations


import sys

# peewee imports psycopg (~100 ms) or psycopg2 when it is itself imported, if installed: a None in
# sys.modules makes that import fail at once, so a store on SQLite never pays for it. schema/pg.py
# takes the entries it finds in HIDDEN out again and imports psycopg, for a postgresql:// URL (its
# adapter never reads peewee's module-level psycopg). Only names not imported yet are hidden.
HIDDEN = tuple(m for m in ("psycopg", "psycopg2") if m not in sys.modules and "peewee" not in sys.modules)
for _m in HIDDEN:
    sys.modules[_m] = None       # type: ignore[assignment]

TYPE_CHECKING = False        # (typing's own costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

_FROM = {
    "SCHEMA_VERSION": "base", "SchemaTooNew": "errors", "SchemaError": "errors", "DatabaseCorrupt": "errors",
    "is_database_error": "errors", "database": "db", "open_database": "db", "write_txn": "db",
    "delete_in": "db", "update_many": "db", "bump_in": "db",
    "ALL_MODELS": "models", "Blob": "models", "Container": "models", "Image": "models", "ImageLayer": "models",
    "Layer": "models", "Lease": "models", "LeaseItem": "models", "Meta": "models", "Snapshot": "models",
    "Tag": "models", "Volume": "models", "VolumeUse": "models",
    "LayerIndex": "models", "File": "models", "LayerPackage": "models", "Package": "models", "Host": "models",
}

__all__ = list(_FROM)


def __getattr__(name: str) -> Any:
    mod = _FROM.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{mod}", fromlist=[name]), name)   # (no importlib import)
    globals()[name] = value
    return value
