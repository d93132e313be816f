"""Content-addressed store: bytes by sha256 digest. Knows bytes, not images.

Stdlib only; imports neither `container.schema` nor `container.engine`.
"""

from .digest import Digest, InvalidDigest
from .blobs import BlobNotFound, BlobStore, DigestMismatch, Ingest, IngestBusy, SizeMismatch
from .lock import store_lock, StoreLocked
from .fsutil import fsync_dir, publish_dir, remove_under

__all__ = [
    "Digest", "InvalidDigest", "BlobStore", "Ingest", "BlobNotFound", "DigestMismatch", "SizeMismatch",
    "IngestBusy", "store_lock", "StoreLocked", "fsync_dir", "publish_dir", "remove_under",
]
