"""One spelling of "sha256:<hex>" everywhere, validated once before it becomes a path."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import InvalidDigest

_SHA256_RE = re.compile(r"^sha256:([a-f0-9]{64})$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, s: str) -> "Digest":
        if isinstance(s, Digest):
            return s
        m = _SHA256_RE.match(s or "")
        if not m:
            raise InvalidDigest(f"invalid digest {s!r}: only sha256:<64 hex> is supported")
        return cls("sha256", m.group(1))

    @classmethod
    def of_bytes(cls, data: bytes) -> "Digest":
        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hasher(cls, h: "hashlib._Hash") -> "Digest":
        return cls("sha256", h.hexdigest())

    @staticmethod
    def is_valid(s: str) -> bool:
        return bool(_SHA256_RE.match(s or ""))

    @property
    def short(self) -> str:
        """The 12-hex form docker shows in IMAGE ID columns."""
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
