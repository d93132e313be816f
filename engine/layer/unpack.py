"""Our own layer extractor: a minimal ustar/GNU/PAX header parser over bytes, and entries created
with *at() syscalls relative to directory fds opened without following symlinks.

    unpack_layer(stream, dest, *, limits=None) -> LayerStats

`stream` is an uncompressed tar stream (engine.layer.compression.open_layer_stream); `dest` an existing
empty directory. The layer is extracted as data: whiteout markers (`.wh.<name>`, `.wh..wh..opq`)
are written as plain empty files; engine.layer.snapshot applies them when it merges layers.

Why not tarfile: its stream parser costs ~1.5 CPU-s per 12.7k members, this one ~0.2 s
(design.md, performance facts); and its extraction filters have the wrong semantics for a rootfs
(style.md §9.7). This module is a security boundary (docs/security.md):

* Names are cleaned like umoci's CleanPath: a leading "/" is dropped, "." and empty components
  vanish, ".." cannot climb above the layer root. The result is always inside `dest`.
* Every parent directory is opened component by component with O_NOFOLLOW|O_DIRECTORY relative to
  its parent's fd. A parent that is a symlink (or not a directory) is an error: the extractor never
  writes through a symlink, not even one that points inside the layer.
* Leaves are created with mkdirat/openat(O_EXCL|O_NOFOLLOW)/symlinkat/linkat/mknodat; attributes
  are set on the opened fd or with AT_SYMLINK_NOFOLLOW. Symlink targets are stored verbatim.
* Hardlink targets are cleaned the same way and must be an earlier non-directory entry of this
  layer (dest starts empty, so "exists in dest" means exactly that).
* Directories are created 0700 and get their real mode/owner/xattrs/mtime at the end, deepest
  first (a mode 0000 directory holding files works; tar --delay-directory-restore).
* Anything else odd (bad checksum, truncation, sparse files, unknown types, limits) is a
  LayerError naming the entry. No other exception type escapes.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from container.engine.errors import LayerError

log = logging.getLogger("container.unpack")

BLOCK = 512
READ_CHUNK = 1 << 20
WHITEOUT_PREFIX = b".wh."
OPAQUE = b".wh..wh..opq"
AUFS_META_PREFIX = b".wh..wh."            # .wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph (never materialised)
IMPLICIT_XATTR = "user.container.implicit"   # set on directories the tar did not name (see snapshot.py)
# A hardlink whose target is not in this layer (it is in a lower one): an empty placeholder file
# carrying the cleaned target path; its directory carries HARDLINKS_XATTR. engine.layer.snapshot links it
# to whatever the snapshot holds at that path when it merges the layer.
HARDLINK_XATTR = "user.container.hardlink"
HARDLINKS_XATTR = "user.container.hardlinks"
RESERVED_XATTRS = frozenset((IMPLICIT_XATTR, HARDLINK_XATTR, HARDLINKS_XATTR))

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_REG, _LNK, _SYM, _CHR, _BLK, _DIR, _FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_REGULAR_TYPES = (b"0", b"\0", b"7")
_ZERO_BLOCK = bytes(BLOCK)
_ENTRY_TYPES = frozenset((b"0", b"\0", b"7", b"1", b"2", b"3", b"4", b"5", b"6"))


@dataclass
class Limits:
    """Resource bounds for one layer (docs/security.md). Defaults are far above any real image."""

    max_bytes: int = 64 << 30            # total regular-file bytes
    max_entries: int = 10_000_000        # tar entries (headers that create something)
    max_name: int = 4096                 # bytes in a full path name or link target (PATH_MAX)
    max_pax: int = 16 << 20              # bytes in one PAX / GNU long-name header body
    max_depth: int = 256                 # path components: deeper trees break recursive tree walkers

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


@dataclass
class LayerStats:
    entries: int = 0          # tar entries applied (files, dirs, links, nodes, markers)
    size: int = 0             # bytes of regular-file content
    skipped: int = 0          # entries skipped (device nodes / fifos we were not permitted to create)
    links_to_lower: int = 0   # hardlinks whose target is in a lower layer (resolved by the merge)
    warnings: list[str] = field(default_factory=list)


def _show(name: bytes) -> str:
    s = name.decode("utf-8", "backslashreplace")
    if len(s) > 200:
        s = s[:100] + "..." + s[-60:]
    return repr(s)[1:-1]


# -- header parsing ------------------------------------------------------------------------------

def _cstr(b: bytes) -> bytes:
    i = b.find(b"\0")
    return b if i < 0 else b[:i]


def _num(b: bytes, what: str) -> int:
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
    if sum(b) - sum(b[148:156]) + 256 == want:     # the checksum field counts as 8 spaces
        return True
    s = sum((x - 256 if x > 127 else x) for x in b[:148]) + 256 + sum(
        (x - 256 if x > 127 else x) for x in b[156:])
    return s == want


def _parse_pax(data: bytes, where: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:          # NUL padding after the last record
            if data[pos:].strip(b"\0"):
                break
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise LayerError(f"corrupt layer: bad PAX header near {_show(where)}")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError(f"corrupt layer: bad PAX record length near {_show(where)}") from None
        end = pos + length
        if length <= sp - pos + 1 or end > n or data[end - 1:end] != b"\n":
            raise LayerError(f"corrupt layer: bad PAX record near {_show(where)}")
        rec = data[sp + 1:end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise LayerError(f"corrupt layer: bad PAX record near {_show(where)}")
        out[rec[:eq]] = rec[eq + 1:]
        pos = end
    return out


class _Source:
    """Big buffered reads over any readable binary stream; exact reads raise on truncation."""

    def __init__(self, stream: BinaryIO):
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

    def copy(self, fd: int | None, n: int) -> None:
        """Write the next n bytes to fd (or drop them when fd is None)."""
        left = n
        while left:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise LayerError("corrupt layer: tar stream is truncated")
                continue
            take = min(left, avail)
            if fd is not None:
                mv = self._buf[self._pos:self._pos + take]
                while len(mv):
                    w = os.write(fd, mv)
                    mv = mv[w:]
            self._pos += take
            left -= take

    def copy_padded(self, fd: int | None, n: int) -> None:
        """copy(fd, n), then skip the padding to the next 512-byte block."""
        self.copy(fd, n)
        pad = (-n) % BLOCK
        if pad:
            avail = len(self._buf) - self._pos
            if avail >= pad:
                self._pos += pad
            else:
                self.copy(None, pad)

    def skip_padding(self, size: int) -> None:
        pad = (-size) % BLOCK
        if pad:
            self.copy(None, pad)


@dataclass(slots=True)
class _Entry:
    name: bytes
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict


def _clean(unsafe: bytes) -> tuple[bytes, ...]:
    """umoci CleanPath: contained inside the root, never above it."""
    out: list[bytes] = []
    for c in unsafe.split(b"/"):
        if not c or c == b".":
            continue
        if c == b"..":
            if out:
                out.pop()
            continue
        out.append(c)
    return tuple(out)


class _Missing(LayerError):
    """A path component that does not exist (where creating it is not wanted)."""


class _Extractor:
    def __init__(self, dest: Path, limits: Limits):
        self.limits = limits
        self.dest = os.fsencode(os.fspath(dest))
        self.root_fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds: dict[tuple[bytes, ...], int] = {(): self.root_fd}
        self.dirs: dict[tuple[bytes, ...], _Entry] = {}       # final attributes, applied at the end
        self.implicit: set[tuple[bytes, ...]] = set()
        self.unmark: set[tuple[bytes, ...]] = set()       # implicit dirs the tar named later
        self.root = os.geteuid() == 0
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.umask = _umask()
        if os.fstat(self.root_fd).st_mode & stat.S_ISGID:
            self.egid = -1           # new files inherit the directory's group: always fchown
        self.stats = LayerStats()
        self.total = 0
        self.root_seen = False

    # -- secure parent resolution -----------------------------------------------------------
    def close(self) -> None:
        for k, fd in self.fds.items():
            if k != ():
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = {(): self.root_fd}
        os.close(self.root_fd)

    def _forget(self, prefix: tuple[bytes, ...]) -> None:
        """Drop cached fds and pending dir attributes at or under prefix (after a removal)."""
        n = len(prefix)
        for k in [k for k in self.fds if k[:n] == prefix and k != ()]:
            os.close(self.fds.pop(k))
        for k in [k for k in self.dirs if k[:n] == prefix and k != ()]:
            del self.dirs[k]
        self.implicit = {k for k in self.implicit if k[:n] != prefix}
        self.unmark = {k for k in self.unmark if k[:n] != prefix}

    def parent_fd(self, comps: tuple[bytes, ...], *, create: bool, show: bytes) -> int:
        """fd of the directory comps (inside dest), opened without following any symlink."""
        fd = self.fds.get(comps)
        if fd is not None:
            return fd
        if len(self.fds) > 256:
            for k in list(self.fds)[:128]:
                if k != ():
                    os.close(self.fds.pop(k))
        i = len(comps)
        while i > 0 and comps[:i] not in self.fds:
            i -= 1
        fd = self.fds[comps[:i]]
        for j in range(i, len(comps)):
            c = comps[j]
            try:
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise _Missing(f"layer entry {_show(show)}: {_show(b'/'.join(comps[:j + 1]))} "
                                     f"does not exist") from None
                os.mkdir(c, 0o755, dir_fd=fd)
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                self.implicit.add(comps[:j + 1])
                _set_xattr_fd(nfd, IMPLICIT_XATTR, b"1")
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise LayerError(f"layer entry {_show(show)}: parent {_show(b'/'.join(comps[:j + 1]))} "
                                     f"is not a directory (a symlink or file); refusing to write "
                                     f"through it") from None
                raise
            self.fds[comps[:j + 1]] = nfd
            fd = nfd
        return fd

    def _remove_existing(self, pfd: int, comps: tuple[bytes, ...], st: os.stat_result) -> None:
        leaf = comps[-1]
        if stat.S_ISDIR(st.st_mode):
            self._forget(comps)
            _rmtree_at(pfd, leaf)
        else:
            os.unlink(leaf, dir_fd=pfd)

    # -- entries ----------------------------------------------------------------------------
    def apply(self, e: _Entry, src: _Source) -> None:
        comps = _clean(e.name)
        if len(comps) > self.limits.max_depth:
            raise LayerError(f"layer entry {_show(e.name)}: deeper than {self.limits.max_depth} directories")
        for c in comps[:-1]:
            if c.startswith(WHITEOUT_PREFIX) and (c == OPAQUE or not c.startswith(AUFS_META_PREFIX)):
                raise LayerError(f"layer entry {_show(e.name)}: a whiteout name cannot be a directory")
        if not comps:
            self._apply_root(e, src)
            return
        leaf = comps[-1]
        is_reg = e.type in _REGULAR_TYPES
        if leaf.startswith(WHITEOUT_PREFIX):
            if leaf == WHITEOUT_PREFIX or leaf in (b".wh..", b".wh..."):
                raise LayerError(f"layer entry {_show(e.name)}: invalid whiteout name")
            if not leaf.startswith(AUFS_META_PREFIX) or leaf == OPAQUE:
                if not (is_reg or e.type == _LNK):
                    raise LayerError(f"layer entry {_show(e.name)}: whiteout marker is not a regular file")
                pfd = self.parent_fd(comps[:-1], create=True, show=e.name)
                self._clear(pfd, comps)
                fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd)
                os.close(fd)
                if is_reg:
                    src.copy(None, e.size)
                    src.skip_padding(e.size)
                return
        pfd = self.parent_fd(comps[:-1], create=True, show=e.name)
        if is_reg:
            self._regular(pfd, comps, e, src)
        elif e.type == _DIR:
            self._dir(pfd, comps, e)
        elif e.type == _SYM:
            try:
                os.symlink(e.linkname, leaf, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, comps)
                os.symlink(e.linkname, leaf, dir_fd=pfd)
            self._attrs_at(pfd, leaf, e, chmod=False)
        elif e.type == _LNK:
            self._hardlink(pfd, comps, e)
        elif e.type in (_CHR, _BLK, _FIFO):
            self._node(pfd, comps, e)
        else:  # pragma: no cover - filtered by the reader
            raise LayerError(f"layer entry {_show(e.name)}: unsupported type {e.type!r}")

    def _apply_root(self, e: _Entry, src: _Source) -> None:
        if e.type != _DIR:
            raise LayerError(f"layer entry {_show(e.name)}: refusing to change the type of the root "
                             f"directory")
        self.root_seen = True
        self.dirs[()] = e

    def _clear(self, pfd: int, comps: tuple[bytes, ...]) -> None:
        """Make room for a new non-directory entry: later entries replace earlier ones."""
        try:
            st = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        self._remove_existing(pfd, comps, st)

    def _regular(self, pfd: int, comps, e: _Entry, src: _Source) -> None:
        leaf = comps[-1]
        self.total += e.size
        if self.total > self.limits.max_bytes:
            raise LayerError(f"layer too large: more than {self.limits.max_bytes} bytes of file content "
                             f"(at {_show(e.name)})")
        mode = e.mode & 0o7777
        # the usual 0644/0755 under umask 022: create with the final mode and skip fchmod
        # (O_CREAT gives a writable fd whatever the mode); special bits always go after fchown
        direct = self.umask is not None and not (mode & 0o7000) and not (mode & self.umask)
        try:
            fd = os.open(leaf, _FILE_FLAGS, mode if direct else 0o600, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, comps)
            fd = os.open(leaf, _FILE_FLAGS, mode if direct else 0o600, dir_fd=pfd)
        try:
            src.copy_padded(fd, e.size)
            self.stats.size += e.size
            if self.root and (e.uid != self.euid or e.gid != self.egid):
                self._chown(e, fd)
            if not direct:
                os.fchmod(fd, mode)
            for k, v in e.xattrs.items():
                self._xattr(fd, k, v, e)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def _dir(self, pfd: int, comps, e: _Entry) -> None:
        leaf = comps[-1]
        try:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.dirs[comps] = e
            return
        except FileExistsError:
            pass
        st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self._remove_existing(pfd, comps, st)
            st = None
        if st is None:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        else:
            # dir over dir keeps contents; make sure we can still write into it
            if st.st_mode & 0o700 != 0o700:
                _chmod_dir_at(pfd, leaf, stat.S_IMODE(st.st_mode) | 0o700)
        if comps in self.implicit:
            self.implicit.discard(comps)
            self.unmark.add(comps)
        self.dirs[comps] = e

    def _hardlink(self, pfd: int, comps, e: _Entry) -> None:
        tcomps = _clean(e.linkname)
        if not tcomps:
            raise LayerError(f"layer entry {_show(e.name)}: hardlink to the root directory")
        if tcomps == comps:
            raise LayerError(f"layer entry {_show(e.name)}: hardlink to itself")
        try:
            tpfd = self.parent_fd(tcomps[:-1], create=False, show=e.name)
            tst = os.stat(tcomps[-1], dir_fd=tpfd, follow_symlinks=False)
        except (_Missing, FileNotFoundError):
            self._placeholder(comps, tcomps, e)
            return
        if stat.S_ISDIR(tst.st_mode):
            raise LayerError(f"layer entry {_show(e.name)}: hardlink target {_show(e.linkname)} is a "
                             f"directory")
        # the parent fd cache may have been trimmed while resolving the target: re-resolve
        pfd = self.parent_fd(comps[:-1], create=True, show=e.name)
        try:
            st = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_ino == tst.st_ino and st.st_dev == tst.st_dev:
                return
            self._remove_existing(pfd, comps, st)
            tpfd = self.parent_fd(tcomps[:-1], create=False, show=e.name)
        os.link(tcomps[-1], comps[-1], src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _placeholder(self, comps, tcomps, e: _Entry) -> None:
        """The target is not in this layer: record the link for the snapshot merge to resolve."""
        pfd = self.parent_fd(comps[:-1], create=True, show=e.name)
        self._clear(pfd, comps)
        fd = os.open(comps[-1], _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            os.setxattr(fd, HARDLINK_XATTR, b"/".join(tcomps))
            os.setxattr(pfd, HARDLINKS_XATTR, b"1")
        except OSError as ex:
            raise LayerError(f"layer entry {_show(e.name)}: hardlink target {_show(e.linkname)} is not in "
                             f"this layer, and it cannot be recorded for a lower one ({ex.strerror})") from None
        finally:
            os.close(fd)
        self.stats.links_to_lower += 1

    def _node(self, pfd: int, comps, e: _Entry) -> None:
        leaf = comps[-1]
        self._clear(pfd, comps)
        kind = {_CHR: "character device", _BLK: "block device", _FIFO: "fifo"}[e.type]
        try:
            if e.type == _FIFO:
                os.mkfifo(leaf, 0o600, dir_fd=pfd)
            else:
                if not self.root:
                    raise PermissionError(errno.EPERM, "not permitted")
                fmt = stat.S_IFCHR if e.type == _CHR else stat.S_IFBLK
                os.mknod(leaf, fmt | 0o600, os.makedev(e.devmajor, e.devminor), dir_fd=pfd)
        except PermissionError:
            self.stats.skipped += 1
            msg = f"skipped {kind} {_show(e.name)}: not permitted"
            self.stats.warnings.append(msg)
            log.warning(msg)
            return
        self._attrs_at(pfd, leaf, e, chmod=True)

    def _chown(self, e: _Entry, target, pfd: int | None = None) -> None:
        """chown as root; uid 0 without CAP_CHOWN (some rootless setups) degrades to not chowning."""
        try:
            if pfd is None:
                os.fchown(target, e.uid, e.gid)
            else:
                os.chown(target, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        except PermissionError:
            self.root = False
            msg = f"cannot change owners (no CAP_CHOWN?): files keep uid {self.euid}, from {_show(e.name)} on"
            self.stats.warnings.append(msg)
            log.warning(msg)

    def _attrs_at(self, pfd: int, leaf: bytes, e: _Entry, *, chmod: bool) -> None:
        """Owner, mode, xattrs, mtime of a leaf we just created that we must not open."""
        if self.root:
            self._chown(e, leaf, pfd)
        if chmod:
            # the leaf is a node we created this instant (never a symlink): fchmodat is safe
            os.chmod(leaf, e.mode & 0o7777, dir_fd=pfd)
        if e.xattrs:
            p = b"/proc/self/fd/%d/%s" % (pfd, leaf)
            for k, v in e.xattrs.items():
                self._xattr(p, k, v, e)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _xattr(self, target, key: str, value: bytes, e: _Entry) -> None:
        if key in RESERVED_XATTRS:
            return
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except (OSError, ValueError) as ex:
            # security.* / trusted.* need privileges; user.* is refused on symlinks and nodes;
            # some filesystems have no xattrs at all. None of that makes the layer unsafe.
            log.debug("xattr %s on %s not set: %s", key, _show(e.name), ex)

    def finish(self) -> None:
        """Directory attributes, deepest first; the root last."""
        for comps in sorted(self.dirs, key=len, reverse=True):
            e = self.dirs[comps]
            if comps:
                try:
                    pfd = self.parent_fd(comps[:-1], create=False, show=e.name)
                    fd = os.open(comps[-1], _DIR_FLAGS, dir_fd=pfd)
                except (LayerError, FileNotFoundError, NotADirectoryError):
                    continue
                close = True
            else:
                fd, close = self.root_fd, False
            try:
                if comps in self.implicit:
                    continue
                if comps in self.unmark:
                    _remove_xattr_fd(fd, IMPLICIT_XATTR)
                if self.root:
                    self._chown(e, fd)
                os.fchmod(fd, e.mode & 0o7777)
                for k, v in e.xattrs.items():
                    self._xattr(fd, k, v, e)
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            finally:
                if close:
                    os.close(fd)
        if not self.root_seen:
            # the layer did not describe its root: a plain 0755 directory, marked implicit
            os.fchmod(self.root_fd, 0o755)
            _set_xattr_fd(self.root_fd, IMPLICIT_XATTR, b"1")


def _umask() -> int | None:
    """The process umask without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _set_xattr_fd(fd: int, key: str, value: bytes) -> None:
    try:
        os.setxattr(fd, key, value)
    except OSError:
        pass


def _remove_xattr_fd(fd: int, key: str) -> None:
    try:
        os.removexattr(fd, key)
    except OSError:
        pass


def _chmod_dir_at(pfd: int, leaf: bytes, mode: int) -> None:
    fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _rmtree_at(pfd: int, leaf: bytes) -> None:
    """Remove the directory leaf (relative to pfd) and everything under it, following no symlink."""
    fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        with os.scandir(fd) as it:
            names = [(os.fsencode(d.name), d.is_dir(follow_symlinks=False)) for d in it]
        for name, is_dir in names:
            if is_dir:
                _rmtree_at(fd, name)
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(leaf, dir_fd=pfd)


# -- the header loop --------------------------------------------------------------------------

def _entries(src: _Source, limits: Limits):
    """Yield _Entry for each tar member that creates something; consumes GNU/PAX extension headers.
    Regular file data is left in `src` for the consumer (who must read e.size bytes + padding)."""
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    pending_ext = False
    while True:
        hv = src.block(at_boundary=not pending_ext)
        if hv is None:
            raise LayerError("corrupt layer: tar stream ends without an end-of-archive marker")
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
                             + (f" after {_show(long_name or b'')}" if long_name else ""))
        typ = h[156:157]
        size = _num(h[124:136], "size")
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
                global_pax.update(_parse_pax(data, where))
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
        if long_name is not None:
            name, long_name = long_name, None
        if long_link is not None:
            linkname, long_link = long_link, None
        if b"path" in rec:
            name = rec[b"path"]
        if b"linkpath" in rec:
            linkname = rec[b"linkpath"]
        if typ == b"S" or (rec and any(k.startswith(b"GNU.sparse.") for k in rec)):
            raise LayerError(f"layer entry {_show(name)}: sparse files are not supported")
        if typ in (b"V",):          # volume label: not an entry
            src.copy(None, size)
            src.skip_padding(size)
            continue
        if typ == b"D":             # GNU dumpdir: a directory, the listing is data to skip
            src.copy(None, size)
            src.skip_padding(size)
            typ = _DIR
            size = 0
        if typ not in _ENTRY_TYPES:
            raise LayerError(f"layer entry {_show(name)}: unsupported tar entry type {typ!r}")
        if b"\0" in name or b"\0" in linkname:
            raise LayerError(f"layer entry {_show(name)}: NUL byte in name")
        if not name:
            raise LayerError("layer entry with an empty name")
        if len(name) > limits.max_name or len(linkname) > limits.max_name:
            raise LayerError(f"layer entry {_show(name)}: name longer than {limits.max_name} bytes")
        try:
            if b"size" in rec:
                size = int(rec[b"size"])
            uid = int(rec[b"uid"]) if b"uid" in rec else _num(h[108:116], "uid")
            gid = int(rec[b"gid"]) if b"gid" in rec else _num(h[116:124], "gid")
            if b"mtime" in rec:
                mtime_ns = _pax_time_ns(rec[b"mtime"])
            else:
                mtime_ns = _num(h[136:148], "mtime") * 1_000_000_000
        except ValueError:
            raise LayerError(f"layer entry {_show(name)}: bad numeric PAX value") from None
        if size < 0 or uid < 0 or gid < 0 or uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
            raise LayerError(f"layer entry {_show(name)}: size/uid/gid out of range")
        mode = _num(h[100:108], "mode")
        xattrs = {}
        for k, v in (rec.items() if rec else ()):
            if k.startswith(b"SCHILY.xattr."):
                xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
            elif k.startswith(b"LIBARCHIVE.xattr."):
                try:
                    key = urllib.parse.unquote_to_bytes(k[17:]).decode("utf-8", "surrogateescape")
                    xattrs[key] = base64.b64decode(v + b"=" * (-len(v) % 4), validate=False)
                except (ValueError, UnicodeError):
                    raise LayerError(f"layer entry {_show(name)}: bad LIBARCHIVE.xattr value") from None
        if typ not in _REGULAR_TYPES:
            size_data = 0          # tarfile's rule: only regular files carry data
        else:
            size_data = size
        yield _Entry(name=name, type=typ, mode=mode, uid=uid, gid=gid, size=size_data,
                     mtime_ns=mtime_ns, linkname=linkname,
                     devmajor=_num(h[329:337], "devmajor") if typ in (_CHR, _BLK) else 0,
                     devminor=_num(h[337:345], "devminor") if typ in (_CHR, _BLK) else 0,
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


def unpack_layer(stream: BinaryIO, dest: Path, *, limits: Limits | None = None) -> LayerStats:
    """Extract one uncompressed tar stream into the existing empty directory `dest`.

    Reads up to the end-of-archive marker (the caller drains the rest for hashing; reads are
    buffered, so the stream may have been read past the marker). Raises LayerError only."""
    limits = limits or Limits.from_env()
    src = _Source(stream)
    try:
        ex = _Extractor(Path(dest), limits)
    except OSError as e:
        raise LayerError(f"cannot unpack into {dest}: {e.strerror or e}") from None
    name = b""
    try:
        for e in _entries(src, limits):
            name = e.name
            ex.stats.entries += 1
            if ex.stats.entries > limits.max_entries:
                raise LayerError(f"layer has too many entries: more than {limits.max_entries}")
            ex.apply(e, src)
        name = b""
        ex.finish()
        return ex.stats
    except LayerError:
        raise
    except OSError as e:
        what = f"layer entry {_show(name)}" if name else "unpacking layer"
        raise LayerError(f"{what}: {e.strerror or e}") from None
    except Exception as e:  # never anything but LayerError out of here
        what = f"layer entry {_show(name)}" if name else "unpacking layer"
        raise LayerError(f"{what}: {type(e).__name__}: {e}") from None
    finally:
        try:
            ex.close()
        except OSError:
            pass
