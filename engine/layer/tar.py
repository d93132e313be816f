"""The layer tar format, read: a minimal ustar/GNU/PAX header parser over bytes.

    iter_entries(Source(stream), Limits()) -> Entry, ...   (regular-file data left in the Source)

Used by the extractor (engine/layer/unpack.py) and by fsck --deep's replay
(engine/layer/verify.py), so both read a layer exactly alike. This module is part of the
security boundary (docs/security.md): bad checksums, truncation, bad sparse maps, unknown types
and anything over `Limits` are a LayerError naming the entry (names: engine/layer/paths.py).
Also the OCI whiteout names (`.wh.<name>`, `.wh..wh..opq`) a layer tar carries.
"""

from __future__ import annotations

import os
import zlib

from container.engine.errors import LayerError

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Iterator

    from _typeshed import SupportsRead

# (plain classes, no dataclasses/typing/urllib at import: a layer worker process starts with
# this module, and those imports were a third of its start; engine/layer/worker.py)

BLOCK = 512
READ_CHUNK = 1 << 20
WHITEOUT_PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"
AUFS_META_PREFIX = b".wh..wh."            # .wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph (never materialised)

# entry types (the typeflag byte); REGULAR_TYPES carry data: "0", NUL (old tar) and "7" (contiguous)
REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
REGULAR_TYPES = (b"0", b"\0", b"7")
_ZERO_BLOCK = bytes(BLOCK)
_ENTRY_TYPES = frozenset((b"0", b"\0", b"7", b"1", b"2", b"3", b"4", b"5", b"6"))


class Limits:
    """Resource bounds for one layer (docs/security.md). Defaults are far above any real image."""

    __slots__ = ("max_bytes", "max_entries", "max_name", "max_pax", "max_depth")

    def __init__(self, max_bytes: int = 64 << 30, max_entries: int = 10_000_000, max_name: int = 4096,
                 max_pax: int = 16 << 20, max_depth: int = 256) -> None:
        self.max_bytes = max_bytes          # total regular-file bytes
        self.max_entries = max_entries      # tar entries (headers that create something)
        self.max_name = max_name            # bytes in a full path name or link target (PATH_MAX)
        self.max_pax = max_pax              # bytes in one PAX / GNU long-name header body
        self.max_depth = max_depth          # path components: deeper trees break recursive tree walkers

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self._values() == other._values()

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__) + ")"

    ENV = {"max_bytes": "CONTAINER_LAYER_MAX_BYTES", "max_entries": "CONTAINER_LAYER_MAX_ENTRIES",
           "max_name": "CONTAINER_LAYER_MAX_NAME", "max_pax": "CONTAINER_LAYER_MAX_HEADER",
           "max_depth": "CONTAINER_LAYER_MAX_DEPTH"}

    @classmethod
    def from_env(cls, environ=None) -> "Limits":
        """Defaults, overridden by CONTAINER_LAYER_MAX_* variables (sizes take K/M/G/T suffixes)."""
        environ = os.environ if environ is None else environ
        kw = {}
        for attr, var in cls.ENV.items():
            v = environ.get(var, "").strip()
            if not v:
                continue
            mult = 1
            if v[-1:].upper() in "KMGT" and v[-1:].isalpha():
                mult = 1024 ** ("KMGT".index(v[-1].upper()) + 1)
                v = v[:-1]
            try:
                n = int(v) * mult
                if n <= 0:
                    raise ValueError
            except ValueError:
                raise LayerError(f"{var}: not a positive number: {environ.get(var)!r}") from None
            kw[attr] = n
        return cls(**kw)


def show_name(name: bytes) -> str:
    """An entry name for an error message: decoded, shortened, quotes and control bytes escaped."""
    s = name.decode("utf-8", "backslashreplace")
    if len(s) > 200:
        s = s[:100] + "..." + s[-60:]
    return repr(s)[1:-1]


# -- header parsing ------------------------------------------------------------------------------

def _cstr(b: bytes) -> bytes:
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def parse_number(b: bytes, what: str) -> int:
    """A numeric header field: octal (NUL/space terminated) or GNU base-256."""
    if b[:1] >= b"\x80":
        # base-256 (GNU): two's complement big-endian; 0x80 positive, 0xff negative
        v = int.from_bytes(b, "big", signed=False)
        if b[0] == 0xFF:
            v -= 1 << (8 * len(b))
        else:
            v -= 0x80 << (8 * (len(b) - 1))
        return v
    try:
        return int(b.partition(b"\0")[0], 8)      # int() allows surrounding spaces
    except ValueError:
        s = b.split(b"\0", 1)[0].strip(b" ")
        if not s:
            return 0
        raise LayerError(f"corrupt layer: bad tar header ({what} field {s[:20]!r})") from None


def _checksum_ok(b: bytes) -> bool:
    try:
        want = int(b[148:156].partition(b"\0")[0], 8)
    except ValueError:
        return False
    # the unsigned sum of the bytes, the checksum field counted as 8 spaces; each half's sum is
    # below Adler-32's modulus, so its low 16 bits are 1 + the exact sum (in C, not a Python loop)
    if (zlib.adler32(b[:256]) & 0xFFFF) + (zlib.adler32(b[256:]) & 0xFFFF) - 2 - sum(b[148:156]) + 256 == want:
        return True
    s = sum((x - 256 if x > 127 else x) for x in b[:148]) + 256 + sum(
        (x - 256 if x > 127 else x) for x in b[156:])
    return s == want


def _parse_pax(data: bytes, where: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    sparse: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:          # NUL padding after the last record
            if data[pos:].strip(b"\0"):
                break
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise LayerError(f"corrupt layer: bad PAX header near {show_name(where)}")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError(f"corrupt layer: bad PAX record length near {show_name(where)}") from None
        end = pos + length
        if length <= sp - pos + 1 or end > n or data[end - 1:end] != b"\n":
            raise LayerError(f"corrupt layer: bad PAX record near {show_name(where)}")
        rec = data[sp + 1:end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise LayerError(f"corrupt layer: bad PAX record near {show_name(where)}")
        k, v = rec[:eq], rec[eq + 1:]
        if k in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            # PAX 0.0 sparse maps repeat these two keys: joined into GNU.sparse.map, as Go does
            if (k == b"GNU.sparse.offset") != (len(sparse) % 2 == 0) or b"," in v:
                raise LayerError(f"corrupt layer: bad GNU sparse records near {show_name(where)}")
            sparse.append(v)
        else:
            out[k] = v
        pos = end
    if sparse:
        out[b"GNU.sparse.map"] = b",".join(sparse)
    return out


class Source:
    """Big buffered reads over any readable binary stream; exact reads raise on truncation."""

    def __init__(self, stream: SupportsRead[bytes]):
        self._s = stream
        self._buf = memoryview(b"")
        self._pos = 0

    def _refill(self) -> bool:
        try:
            b = self._s.read(READ_CHUNK)
        except LayerError:
            raise
        except Exception as e:      # a stream's own error (zlib.error, OSError, ...)
            raise LayerError(f"reading layer: {e}") from None
        if not b:
            return False
        self._buf = memoryview(b)
        self._pos = 0
        return True

    def block(self, at_boundary: bool = False) -> memoryview | None:
        """The next 512-byte block, None at a clean end of stream (only where allowed)."""
        avail = len(self._buf) - self._pos
        if avail >= BLOCK:
            b = self._buf[self._pos:self._pos + BLOCK]
            self._pos += BLOCK
            return b
        got = bytearray(self._buf[self._pos:])
        self._pos = len(self._buf)
        while len(got) < BLOCK:
            if not self._refill():
                if not got and at_boundary:
                    return None
                raise LayerError("corrupt layer: tar stream is truncated")
            take = min(BLOCK - len(got), len(self._buf))
            got += self._buf[:take]
            self._pos = take
        return memoryview(bytes(got))

    def read(self, n: int) -> bytes:
        """Exactly n bytes; LayerError when the stream ends first."""
        parts, left = [], n
        while left:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise LayerError("corrupt layer: tar stream is truncated")
                continue
            take = min(left, avail)
            parts.append(self._buf[self._pos:self._pos + take])
            self._pos += take
            left -= take
        return b"".join(parts)

    def copy(self, fd: int | None, n: int, hasher=None) -> None:
        """Write the next n bytes to fd (or drop them when fd is None); hasher.update() sees them too."""
        left = n
        while left:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise LayerError("corrupt layer: tar stream is truncated")
                continue
            take = min(left, avail)
            if hasher is not None:
                hasher.update(self._buf[self._pos:self._pos + take])
            if fd is not None:
                mv = self._buf[self._pos:self._pos + take]
                while len(mv):
                    w = os.write(fd, mv)
                    mv = mv[w:]
            self._pos += take
            left -= take

    def copy_padded(self, fd: int | None, n: int, hasher=None) -> None:
        """copy(fd, n, hasher), then skip the padding to the next 512-byte block."""
        self.copy(fd, n, hasher)
        pad = (-n) % BLOCK
        if pad:
            avail = len(self._buf) - self._pos
            if avail >= pad:
                self._pos += pad
            else:
                self.copy(None, pad)

    def skip_padding(self, size: int) -> None:
        """Skip the padding after `size` bytes of data, to the next 512-byte block."""
        pad = (-size) % BLOCK
        if pad:
            self.copy(None, pad)


class Entry:
    """One tar member that creates something (extension headers already applied). `size` is the
    data that follows it in the Source: 0 for anything but a regular file. A GNU sparse member
    (engine/layer/sparse.py) is a regular file with `sparse` regions (offset, length) and its
    `real_size` (the file's apparent size: `size` unless sparse)."""

    __slots__ = ("name", "type", "mode", "uid", "gid", "size", "mtime_ns", "linkname", "devmajor", "devminor",
                 "xattrs", "real_size", "sparse")

    def __init__(self, name: bytes, type: bytes, mode: int, uid: int, gid: int, size: int, mtime_ns: int,
                 linkname: bytes, devmajor: int, devminor: int, xattrs: dict, real_size: int = 0,
                 sparse: tuple[tuple[int, int], ...] | None = None) -> None:
        self.name, self.type, self.mode, self.uid, self.gid, self.size = name, type, mode, uid, gid, size
        self.mtime_ns, self.linkname, self.devmajor, self.devminor = mtime_ns, linkname, devmajor, devminor
        self.xattrs, self.real_size, self.sparse = xattrs, real_size, sparse

    def __repr__(self) -> str:
        return "Entry(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


# -- the header loop --------------------------------------------------------------------------

def iter_entries(src: Source, limits: Limits) -> Iterator[Entry]:
    """Yield Entry for each tar member that creates something; consumes GNU/PAX extension headers.
    Regular file data is left in `src` for the consumer (who must read e.size bytes + padding)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    pending_ext = False
    while True:
        hv = src.block(at_boundary=True)
        if hv is None:
            # the end of the stream at a header boundary, without the two zero blocks: complete
            # (Go's archive/tar, GNU tar and umoci read it so; an empty stream is an empty layer)
            if pending_ext:
                raise LayerError("corrupt layer: extended header without an entry")
            return
        h = bytes(hv)
        if h == _ZERO_BLOCK:            # end-of-archive marker: two zero blocks (one at EOF, like GNU tar)
            if pending_ext:
                raise LayerError("corrupt layer: extended header without an entry")
            nxt = src.block(at_boundary=True)
            if nxt is not None and bytes(nxt) != _ZERO_BLOCK:
                # other readers (Go's archive/tar) would see entries here that we would not
                raise LayerError("corrupt layer: a lone zero block in the middle of the archive")
            return
        if not _checksum_ok(h):
            raise LayerError("corrupt layer: bad tar header checksum"
                             + (f" after {show_name(long_name or b'')}" if long_name else ""))
        typ = h[156:157]
        size = parse_number(h[124:136], "size")
        if size < 0:
            raise LayerError("corrupt layer: negative size in tar header")
        if typ in (b"x", b"g", b"L", b"K"):
            if size > limits.max_pax:
                raise LayerError(f"layer header too large: {size} bytes (limit {limits.max_pax})")
            data = src.read(size)
            src.skip_padding(size)
            where = _cstr(h[0:100])
            if typ == b"x":
                pax.update(_parse_pax(data, where))
            elif typ == b"g":
                # global records apply to every later member; an empty value removes one (POSIX)
                for k, v in _parse_pax(data, where).items():
                    if v:
                        global_pax[k] = v
                    else:
                        global_pax.pop(k, None)
            elif typ == b"L":
                long_name = _cstr(data)
            else:
                long_link = _cstr(data)
            pending_ext = True
            continue
        pending_ext = False
        name = h[0:100].partition(b"\0")[0]
        if h[257:263] == b"ustar\x00":
            prefix = h[345:500].partition(b"\0")[0]
            if prefix:
                name = prefix + b"/" + name
        linkname = h[157:257].partition(b"\0")[0]
        rec = {**global_pax, **pax} if global_pax else pax
        pax = {}
        if rec and not all(rec.values()):
            # POSIX: a record with an empty value removes the field (the header's value is used,
            # an xattr is not set), a global one included
            rec = {k: v for k, v in rec.items() if v}
        if long_name is not None:
            name, long_name = long_name, None
        if long_link is not None:
            linkname, long_link = long_link, None
        if b"path" in rec:
            name = rec[b"path"]
        if b"linkpath" in rec:
            linkname = rec[b"linkpath"]
        sparse: tuple[tuple[int, int], ...] | None = None
        real_size = -1
        if typ == b"S" or (rec and any(k.startswith(b"GNU.sparse.") for k in rec)):
            from container.engine.layer.sparse import sparse_map

            if b"size" in rec:
                try:
                    size = int(rec.pop(b"size"))
                except ValueError:
                    raise LayerError(f"layer entry {show_name(name)}: bad numeric PAX value") from None
            if size > limits.max_bytes:
                raise LayerError(f"layer too large: more than {limits.max_bytes} bytes of file content "
                                 f"(at {show_name(name)})")
            got = sparse_map(h, rec, src, size, name, limits)
            if got is not None:
                sparse, real_size, size, name = got
                typ = REGTYPE
        if typ in (b"V",):          # volume label: not an entry
            src.copy(None, size)
            src.skip_padding(size)
            continue
        if typ == b"D":             # GNU dumpdir: a directory, the listing is data to skip
            src.copy(None, size)
            src.skip_padding(size)
            typ = DIRTYPE
            size = 0
        if typ not in _ENTRY_TYPES:
            raise LayerError(f"layer entry {show_name(name)}: unsupported tar entry type {typ!r}")
        if b"\0" in name or b"\0" in linkname:
            raise LayerError(f"layer entry {show_name(name)}: NUL byte in name")
        if not name:
            raise LayerError("layer entry with an empty name")
        if len(name) > limits.max_name or len(linkname) > limits.max_name:
            raise LayerError(f"layer entry {show_name(name)}: name longer than {limits.max_name} bytes")
        try:
            if b"size" in rec:
                size = int(rec[b"size"])
            uid = int(rec[b"uid"]) if b"uid" in rec else parse_number(h[108:116], "uid")
            gid = int(rec[b"gid"]) if b"gid" in rec else parse_number(h[116:124], "gid")
            if b"mtime" in rec:
                mtime_ns = _pax_time_ns(rec[b"mtime"])
            else:
                mtime_ns = parse_number(h[136:148], "mtime") * 1_000_000_000
        except ValueError:
            raise LayerError(f"layer entry {show_name(name)}: bad numeric PAX value") from None
        if size < 0 or uid < 0 or gid < 0 or uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
            raise LayerError(f"layer entry {show_name(name)}: size/uid/gid out of range")
        mode = parse_number(h[100:108], "mode")
        xattrs = {}
        for k, v in (rec.items() if rec else ()):
            if k.startswith(b"SCHILY.xattr."):
                xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
            elif k.startswith(b"LIBARCHIVE.xattr."):
                import base64
                import urllib.parse

                try:
                    key = urllib.parse.unquote_to_bytes(k[17:]).decode("utf-8", "surrogateescape")
                    xattrs[key] = base64.b64decode(v + b"=" * (-len(v) % 4), validate=False)
                except (ValueError, UnicodeError):
                    raise LayerError(f"layer entry {show_name(name)}: bad LIBARCHIVE.xattr value") from None
        if typ not in REGULAR_TYPES:
            size_data = 0          # tarfile's rule: only regular files carry data
        else:
            size_data = size
        yield Entry(name=name, type=typ, mode=mode, uid=uid, gid=gid, size=size_data,
                    real_size=real_size if sparse is not None else size_data, sparse=sparse,
                     mtime_ns=mtime_ns, linkname=linkname,
                     devmajor=parse_number(h[329:337], "devmajor") if typ in (CHRTYPE, BLKTYPE) else 0,
                     devminor=parse_number(h[337:345], "devminor") if typ in (CHRTYPE, BLKTYPE) else 0,
                     xattrs=xattrs)


def _pax_time_ns(v: bytes) -> int:
    s = v.decode("ascii").strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not whole.isdigit() and whole != "":
        raise ValueError(v)
    if frac and not frac.isdigit():
        raise ValueError(v)
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    return -ns if neg else ns
