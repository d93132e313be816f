"""Blob store: ROOT/blobs/sha256/<hex>, written only through a verified Ingest.

Invariant 1 (design.md): every file under blobs/ hashes to its name. Bytes go
to ROOT/ingest/<hex>/data, are hashed as they stream, fsynced, and renamed into
place only when size and digest match. Until then they are invisible to
has()/open(). An ingest dir is held with flock, so a second writer of the same
digest (another thread or process) waits, then finds the blob present.
A partial ingest survives an interruption and is resumed by the next writer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from contextlib import AbstractContextManager
from types import TracebackType
from typing import BinaryIO, Iterator

from .digest import Digest
from .errors import BlobNotFound, DigestMismatch, IngestBusy, SizeMismatch
from .fsutil import fsync_dir, remove_tree
from .lock import flock

CHUNK = 1 << 20


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.dir = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    # -- reading -------------------------------------------------------
    def path(self, d: Digest) -> Path:
        d = Digest.parse(str(d))
        return self.dir / d.hex

    def has(self, d: Digest) -> bool:
        return self.path(d).is_file()

    def size(self, d: Digest) -> int:
        try:
            return self.path(d).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(str(d)) from None

    def open(self, d: Digest) -> BinaryIO:
        try:
            return open(self.path(d), "rb")
        except FileNotFoundError:
            raise BlobNotFound(str(d)) from None

    def read(self, d: Digest) -> bytes:
        with self.open(d) as f:
            return f.read()

    def walk(self) -> Iterator[tuple[Digest, int]]:
        """Every published blob as (digest, size); names that are not digests are skipped."""
        try:
            it = os.scandir(self.dir)
        except FileNotFoundError:
            return
        with it:
            for e in it:
                if Digest.is_valid("sha256:" + e.name):
                    try:
                        yield Digest("sha256", e.name), e.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue

    def verify(self, d: Digest) -> bool:
        """Rehash a stored blob (fsck)."""
        h = hashlib.sha256()
        with self.open(d) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest() == Digest.parse(str(d)).hex

    # -- writing -------------------------------------------------------
    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Store small content (manifests, configs) verified against `expected` if given."""
        got = Digest.of_bytes(data)
        if expected is not None and got != expected:
            raise DigestMismatch(expected, got)
        if self.has(got):
            return got
        with self.ingest(got, size=len(data)) as ing:
            if ing.done:
                return got
            ing.reset()
            ing.write(data)
            ing.commit()
        return got

    def ingest(self, expected: Digest, *, size: int | None = None, wait: bool = True) -> "Ingest":
        return Ingest(self, Digest.parse(str(expected)), size, wait)

    def delete(self, d: Digest) -> None:
        """Idempotent. Callers delete the DB row first (invariant 4)."""
        try:
            os.unlink(self.path(d))
        except FileNotFoundError:
            pass


class Ingest:
    """Resumable, verified write of one blob.

    with store.ingest(digest, size=n) as ing:
        if ing.done: ...                       # someone else published it meanwhile
        start = ing.offset                     # bytes already in the partial (resume)
        ing.write(chunk) ...                   # hashes as it goes
        ing.commit()                           # fsync, check size+digest, rename, fsync dir

    Leaving the block without commit keeps the partial for a later resume,
    except after a digest or size mismatch, when the partial is removed.
    """

    def __init__(self, store: BlobStore, expected: Digest, size: int | None, wait: bool):
        self.store, self.expected, self.size, self.wait = store, expected, size, wait
        self.dir = store.ingest_dir / expected.hex
        self.data_path = self.dir / "data"
        self.done = False
        self._f: BinaryIO | None = None
        self._h = hashlib.sha256()
        self._lock_cm: AbstractContextManager[int] | None = None
        self.offset = 0

    def __enter__(self) -> "Ingest":
        self.store.ensure()
        for _ in range(100):
            # The previous owner removes the dir once it published the blob: retry the mkdir.
            self.dir.mkdir(exist_ok=True)
            self._lock_cm = lock_cm = flock(self.dir / "lock", exclusive=True, timeout=None if self.wait else 0,
                                  what=f"ingest of {self.expected}")
            try:
                lock_cm.__enter__()
                break
            except FileNotFoundError:
                self._lock_cm = None
                continue
            except Exception as e:
                self._lock_cm = None
                raise IngestBusy(str(e)) from e
        if self.store.has(self.expected):
            self.done = True
            return self
        self._f = open(self.data_path, "a+b")
        self._f.seek(0)
        # Re-hash what a previous, interrupted writer left (hash state cannot be persisted).
        n = 0
        while chunk := self._f.read(CHUNK):
            self._h.update(chunk)
            n += len(chunk)
        self.offset = n
        if self.size is not None and n > self.size:
            self.reset()
        return self

    def reset(self) -> None:
        """Drop partial content (the server ignored Range, or the partial is bad)."""
        if self._f is None:
            return
        self._f.seek(0)
        self._f.truncate(0)
        self._h = hashlib.sha256()
        self.offset = 0

    def abandon(self) -> None:
        """Drop the partial content and, on exit, the ingest directory too (nothing to resume:
        the bytes came from a local archive)."""
        self.reset()
        self.done = True

    def write(self, chunk: bytes) -> None:
        assert self._f is not None, "ingest already committed or done"
        self._f.write(chunk)
        self._h.update(chunk)
        self.offset += len(chunk)
        if self.size is not None and self.offset > self.size:
            got = self.offset
            self._discard()
            raise SizeMismatch(self.size, got)

    @property
    def hasher(self) -> "hashlib._Hash":
        return self._h

    def commit(self) -> Digest:
        if self.done:
            return self.expected
        assert self._f is not None
        if self.size is not None and self.offset != self.size:
            got = self.offset
            if got > self.size:
                self._discard()
            raise SizeMismatch(self.size, got)
        got_d = Digest.from_hasher(self._h)
        if got_d != self.expected:
            self._discard()
            raise DigestMismatch(self.expected, got_d)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        final = self.store.path(self.expected)
        os.chmod(self.data_path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.rename(self.data_path, final)
        try:
            fsync_dir(final.parent)
        except OSError:
            pass  # published; nothing to roll back (containerd logs and goes on)
        self.done = True
        return self.expected

    def _discard(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        try:
            os.unlink(self.data_path)
        except FileNotFoundError:
            pass

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._f is not None:
                try:
                    self._f.flush()
                finally:
                    self._f.close()
                    self._f = None
            if self.done:
                remove_tree(self.dir)
        except OSError as e:  # pragma: no cover - best effort cleanup
            if e.errno != errno.ENOENT:
                raise
        finally:
            if self._lock_cm is not None:
                self._lock_cm.__exit__(et, ev, tb)
