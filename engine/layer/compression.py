"""Layer decompression: one readable stream over a compressed layer blob.

    open_layer_stream(raw, media_type) -> io.RawIOBase
    HashingReader(stream)        sha256 of what is read through it: the diff_id of the tar

The media type (from the manifest descriptor) says gzip, zstd or plain tar; the first bytes are
sniffed as a guard (protocol-notes.md §7: gzip 1f 8b, zstd 28 b5 2f fd, tar "ustar" at 257).
A declared type that the bytes contradict is an error, not a guess; a zero-byte blob is an empty
layer whatever its declared type (containerd and docker sniff it as an uncompressed empty tar).

The returned object is a raw reader (``read(n)`` / ``readinto(b)`` may return fewer bytes than asked,
``b""`` only at the end). It never reads ahead of what it returns by more than one input chunk, and
never holds more than a bounded amount of decompressed output in memory, whatever the ratio
(decompression bombs are bounded in bytes/entries by engine.layer.tar.Limits). A truncated or corrupt
stream raises LayerError; so does trailing garbage after the last gzip member / zstd frame.
"""

from __future__ import annotations

import hashlib
import io
import zlib

from container.engine.errors import LayerError, UnsupportedMediaType

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from types import ModuleType

    from _typeshed import SupportsRead

_inflate: ModuleType         # isal_zlib or zlib: the same API
try:  # ISA-L's inflate is 2-3x faster than zlib's, with zlib's API; zlib where it is not installed
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - depends on the platform's wheels
    _inflate = zlib
_INFLATE_ERRORS = (zlib.error, _inflate.error)

GZIP = "gzip"
ZSTD = "zstd"
TAR = "tar"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_MEDIA_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": TAR,
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": TAR,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": TAR,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar": TAR,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": GZIP,
    # zstd:chunked layers are plain zstd for a non-chunked reader (protocol-notes.md §7)
    "application/vnd.docker.image.rootfs.diff.tar.zstd": ZSTD,
}

IN_CHUNK = 256 * 1024          # compressed bytes per read from the source
GZIP_OUT_MAX = 1024 * 1024     # decompressed bytes per zlib call (bounds memory: deflate is ~1032:1)
ZSTD_PIECE = 1024              # compressed bytes per zstd call (zstd RLE reaches ~32k:1: <=32 MiB out,
                               # ~64 MiB peak while zstandard joins its output chunks; measured)


def compression_of(media_type: str) -> str:
    """gzip | zstd | tar for a layer media type; UnsupportedMediaType otherwise."""
    mt = (media_type or "").split(";", 1)[0].strip().lower()
    try:
        return _MEDIA_TYPES[mt]
    except KeyError:
        raise UnsupportedMediaType(f"unsupported layer media type: {media_type or '(none)'}") from None


def sniff(prefix: bytes) -> str | None:
    """gzip | zstd | tar | None from the first bytes of a layer."""
    if prefix[:2] == GZIP_MAGIC:
        return GZIP
    if prefix[:4] == ZSTD_MAGIC:
        return ZSTD
    if prefix[257:262] == b"ustar":
        return TAR
    return None


def _read_prefix(raw: SupportsRead[bytes], n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        b = raw.read(n - have)
        if not b:
            break
        parts.append(b)
        have += len(b)
    return b"".join(parts)


class _Reader(io.RawIOBase):
    """Common raw-reader plumbing: subclasses implement _fill() -> bytes (b"" at the end)."""

    def __init__(self, raw: SupportsRead[bytes], prefix: bytes):
        self._raw = raw
        self._prefix = prefix
        self._buf = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _src(self) -> bytes:
        if self._prefix:
            p, self._prefix = self._prefix, b""
            return p
        try:
            return self._raw.read(IN_CHUNK)
        except LayerError:
            raise
        except (OSError, ValueError) as e:
            raise LayerError(f"reading layer: {e}") from None

    def _fill(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def readinto(self, b) -> int:
        n = len(b)
        if n == 0:
            return 0
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            self._buf = self._fill()
            self._pos = 0
            if not self._buf and self._done:
                return 0
        take = min(n, len(self._buf) - self._pos)
        b[:take] = memoryview(self._buf)[self._pos:self._pos + take]
        self._pos += take
        return take

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        while self._pos >= len(self._buf):
            if self._done:
                return b""
            self._buf = self._fill()
            self._pos = 0
            if not self._buf and self._done:
                return b""
        if self._pos == 0 and n >= len(self._buf):
            out, self._buf = self._buf, b""
            return out
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            b = self.read(1 << 20)
            if not b:
                return b"".join(parts)
            parts.append(b)


class _Plain(_Reader):
    def _fill(self) -> bytes:
        b = self._src()
        if not b:
            self._done = True
        return b


def _only_zeros(b: bytes) -> bool:
    return not b.strip(b"\0")


class _Gzip(_Reader):
    """Multi-member gzip; trailing NUL padding tolerated (as gzip(1) does), other trailing bytes not."""

    def __init__(self, raw, prefix):
        super().__init__(raw, prefix)
        self._d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""        # input not yet given to self._d
        self._member_started = False
        self._trailer = False      # after a member ended, only zeros seen so far

    def _fill(self) -> bytes:
        d = self._d
        while True:
            if d.unconsumed_tail:
                data = d.unconsumed_tail
            elif self._pending:
                data, self._pending = self._pending, b""
            else:
                data = self._src()
                if not data:
                    self._done = True
                    if self._member_started and not d.eof:
                        raise LayerError("corrupt layer: gzip stream is truncated")
                    if not self._member_started and not self._trailer:
                        raise LayerError("corrupt layer: empty gzip stream")
                    return b""
            if self._trailer:
                if _only_zeros(data):
                    continue
                if data.lstrip(b"\0")[:2] != GZIP_MAGIC:
                    raise LayerError("corrupt layer: trailing garbage after gzip stream")
                raise LayerError("corrupt layer: gzip member after padding")
            if d.eof:
                # d finished a member earlier: data starts the next one (or padding)
                self._d = d = _inflate.decompressobj(16 + zlib.MAX_WBITS)
                self._member_started = False
                if data[:1] == b"\0" or (len(data) >= 1 and data[:1] != b"\x1f"):
                    if _only_zeros(data):
                        self._trailer = True
                        continue
                    raise LayerError("corrupt layer: trailing garbage after gzip stream")
            self._member_started = True
            try:
                out = d.decompress(data, GZIP_OUT_MAX)
            except _INFLATE_ERRORS as e:
                raise LayerError(f"corrupt layer: bad gzip data ({e})") from None
            if d.eof:
                self._pending = d.unused_data
            if out:
                return out


class _Zstd(_Reader):
    """zstd frames back to back (skippable frames included); a frame cut short is an error."""

    def __init__(self, raw, prefix):
        super().__init__(raw, prefix)
        import zstandard

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._in = memoryview(b"")
        self._in_frame = False
        self._any = False

    def _fill(self) -> bytes:
        while True:
            if not len(self._in):
                data = self._src()
                if not data:
                    self._done = True
                    if self._in_frame:
                        raise LayerError("corrupt layer: zstd stream is truncated")
                    if not self._any:
                        raise LayerError("corrupt layer: empty zstd stream")
                    return b""
                self._in = memoryview(data)
            piece, self._in = self._in[:ZSTD_PIECE], self._in[ZSTD_PIECE:]
            self._in_frame = self._any = True
            try:
                out = self._d.decompress(piece)
            except self._zstd.ZstdError as e:
                raise LayerError(f"corrupt layer: bad zstd data ({e})") from None
            if self._d.eof:
                rest = self._d.unused_data
                self._d = self._dctx.decompressobj()
                self._in_frame = False
                if rest:
                    self._in = memoryview(bytes(rest) + bytes(self._in))
            if out:
                return out


def open_layer_stream(raw: SupportsRead[bytes], media_type: str) -> io.RawIOBase:
    """A readable decompressing stream over `raw` for a layer of `media_type`.

    UnsupportedMediaType for an unknown media type; LayerError when the bytes contradict it
    (a gzip layer that is zstd, plain tar that is gzip, ...) and later, while reading, when
    the stream is truncated or corrupt."""
    kind = compression_of(media_type)
    prefix = _read_prefix(raw, 512)
    if not prefix:
        return _Plain(raw, prefix)      # a zero-byte blob is an empty layer, whatever its type (as docker)
    seen = sniff(prefix)
    if kind == TAR:
        if seen in (GZIP, ZSTD):
            raise LayerError(f"layer declared as {media_type} but its content is {seen}-compressed")
        return _Plain(raw, prefix)
    if seen != kind:
        what = f"{seen}" if seen else ("empty" if not prefix else "not recognised")
        raise LayerError(f"layer declared as {media_type} but its content is {what}")
    if kind == GZIP:
        return _Gzip(raw, prefix)
    return _Zstd(raw, prefix)


class HashingReader:
    """sha256 of everything read through it (the diff_id of the uncompressed tar); `n` bytes so far."""

    def __init__(self, stream):
        self.s = stream
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        data = self.s.read(n)
        self.h.update(data)
        self.n += len(data)
        return data

    def readinto(self, b) -> int:
        n = self.s.readinto(b)
        if n:
            self.h.update(memoryview(b)[:n])
            self.n += n
        return n

    def readable(self) -> bool:
        return True

    def diff_id(self) -> str:
        """The digest of what has been read: sha256:<hex>."""
        return "sha256:" + self.h.hexdigest()
