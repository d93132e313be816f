"""The content store's errors: one base, CasError, so the engine translates them in one place.

Each also derives from the builtin it always was (ValueError, KeyError, RuntimeError), so code
that caught those keeps working.
"""

from __future__ import annotations


class CasError(Exception):
    """Base of every error cas/ raises on purpose."""


class InvalidDigest(CasError, ValueError):
    """A digest string that is not sha256:<64 lowercase hex>."""


class BlobNotFound(CasError, KeyError):
    """A blob the caller expected is not in blobs/."""

    def __str__(self) -> str:
        return f"blob not found: {self.args[0]}"


class DigestMismatch(CasError, ValueError):
    """Bytes whose sha256 is not the digest they were written under."""

    def __init__(self, expected: object, got: object):
        super().__init__(f"digest mismatch: expected {expected}, got {got}")
        self.expected, self.got = expected, got


class SizeMismatch(CasError, ValueError):
    """Bytes whose length is not the size they were written under."""

    def __init__(self, expected: int, got: int):
        super().__init__(f"size mismatch: expected {expected} bytes, got {got}")
        self.expected, self.got = expected, got


class IngestBusy(CasError, RuntimeError):
    """Another writer holds this digest's ingest and wait=False was asked."""


class StoreLocked(CasError, RuntimeError):
    """The store lock could not be taken in time."""


class UnsafeDelete(CasError, RuntimeError):
    """A delete aimed outside the store root: refused."""
