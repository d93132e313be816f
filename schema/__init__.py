"""peewee models and database setup. Imports neither `container.cas` nor `container.engine`."""

from .db import SCHEMA_VERSION, SchemaTooNew, database, open_database, write_txn
from .models import (
    ALL_MODELS, Blob, Container, Image, ImageLayer, Layer, Lease, LeaseItem, Meta, Snapshot, Tag,
)

__all__ = [
    "SCHEMA_VERSION", "SchemaTooNew", "database", "open_database", "write_txn", "ALL_MODELS",
    "Blob", "Container", "Image", "ImageLayer", "Layer", "Lease", "LeaseItem", "Meta", "Snapshot", "Tag",
]
