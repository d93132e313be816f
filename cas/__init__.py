"""Content-addressed store: bytes by sha256 digest. Knows bytes, not images.

Stdlib only; imports neither `container.schema` nor `container.engine`. Names are loaded on
first use (PEP 562): `container.cas.lock` alone does not import hashlib.
"""

from __future__ import annotations


TYPE_CHECKING = False        # (typing's own costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

_FROM = {
    "Digest": "digest", "BlobStore": "blobs", "Ingest": "blobs", "store_lock": "lock",
    "CasError": "errors", "InvalidDigest": "errors", "BlobNotFound": "errors", "DigestMismatch": "errors",
    "SizeMismatch": "errors", "IngestBusy": "errors", "StoreLocked": "errors", "UnsafeDelete": "errors",
    "fsync_dir": "fsutil", "publish_dir": "fsutil", "remove_under": "fsutil",
}

__all__ = list(_FROM)


def __getattr__(name: str) -> Any:
    mod = _FROM.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{mod}", fromlist=[name]), name)   # (no importlib import)
    globals()[name] = value
    return value
