"""The contents index of one layer, as rows for the `file` table (engine/image/contents.py stores them).

    rec = EntryRecorder()
    unpack_layer(stream, dest, recorder=rec)    # the extractor calls rec.content() / rec.entry()
    rec.finish()                                # the hashes done, the package databases parsed
    rec.rows -> [(path, type, mode, uid, gid, size, mtime, link, xattrs, whiteout, sha256), ...]
    rec.packages -> [(db_path, manager, name, version, arch, source), ...]

    rows, packages = walk_tree(layers/<hex>/)   # the same from an unpacked tree (a store indexed late)

The extractor (engine/layer/unpack.py) feeds one entry at a time: the tar header's fields and, for
a regular file, the bytes it writes (content() returns the hasher that Source.copy updates), so
the content's sha256 costs no second read. A package database (dpkg status and status.d/, apk's
installed, rpmdb.sqlite, os-release) is also kept in memory while it passes, and parsed at
finish() by engine/image/packages.py. Paths are absolute and cleaned ("/etc/passwd"), text as
path_text() spells them; whiteout markers keep their own path (whiteout 1, opaque 2).
CONTAINER_INDEX=0 turns the recorder off for a pull (then the layer is indexed on first use).
"""

from __future__ import annotations

import hashlib
import os
import stat

from container.engine.image.packages import is_package_db, parse_db
from container.engine.layer.paths import clean_path
from container.engine.layer.tar import (BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, OPAQUE, REGULAR_TYPES,
                                        SYMTYPE, WHITEOUT_PREFIX, Entry)
from container.engine.layer.unpack import HARDLINK_XATTR, RESERVED_XATTRS
from container.engine.layer.walk import IMPLICIT_XATTR

Row = tuple[str, str, int, int, int, int, int, "str | None", "str | None", int, "str | None"]
_TYPES = {DIRTYPE: "d", SYMTYPE: "l", LNKTYPE: "h", CHRTYPE: "c", BLKTYPE: "b", FIFOTYPE: "p"}
MAX_DB_BYTES = 256 << 20     # a package database bigger than this is not parsed (none is)


def enabled() -> bool:
    """False when CONTAINER_INDEX=0 (pull without the index: for measuring what it costs)."""
    return os.environ.get("CONTAINER_INDEX", "1").strip() not in ("0", "no", "false", "off")


def path_text(comps: tuple[bytes, ...] | bytes) -> str:
    """The absolute path of cleaned components as the index stores it (UTF-8; other bytes escaped)."""
    b = b"/" + (b"/".join(comps) if isinstance(comps, tuple) else comps)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace")


def _names(keys) -> str | None:
    """xattr names, comma separated (undecodable bytes escaped: every backend stores valid text)."""
    out = sorted(k.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                 for k in keys if k not in RESERVED_XATTRS)
    return ",".join(out) or None


def _whiteout(leaf: bytes) -> int:
    if leaf == OPAQUE:
        return 2
    if leaf.startswith(WHITEOUT_PREFIX) and not leaf.startswith(b".wh..wh."):
        return 1
    return 0


class _Capture:
    """A hasher that also keeps the bytes (a package database passing through)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.parts: list[bytes] = []
        self.size = 0

    def update(self, b) -> None:
        self.h.update(b)
        if self.size <= MAX_DB_BYTES:
            self.parts.append(bytes(b))
            self.size += len(b)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class EntryRecorder:
    """Collects the rows of one layer while the extractor applies its entries (see the module doc)."""

    def __init__(self) -> None:
        self.by_path: dict[str, Row] = {}
        self.dbs: dict[str, _Capture] = {}
        self.packages: list[tuple[str, str, str, str, str, str]] = []
        self._pending: tuple[tuple[bytes, ...], object] | None = None

    def content(self, comps: tuple[bytes, ...], size: int = 0):
        """The hasher for the regular file at comps, whose `size` bytes are about to be written."""
        h: object = _Capture() if size <= MAX_DB_BYTES and is_package_db(path_text(comps)) else hashlib.sha256()
        self._pending = (comps, h)
        return h

    def entry(self, comps: tuple[bytes, ...], e: Entry) -> None:
        """Record an entry the extractor applied at comps (its parents' symlinks resolved)."""
        path = path_text(comps)
        wh = _whiteout(comps[-1])
        xattrs = _names(e.xattrs) if e.xattrs else None
        link: str | None = None
        size = 0
        sha: str | None = None
        if e.type in REGULAR_TYPES:
            typ = "f"
            size = e.real_size
            p = self._pending
            if p is not None and p[0] == comps and not wh and e.sparse is None:   # (sparse: data only, not the holes)
                h = p[1]
                sha = h.hexdigest()          # type: ignore[attr-defined]
                if isinstance(h, _Capture) and h.size <= MAX_DB_BYTES:
                    self.dbs[path] = h
            elif e.sparse is None and not wh:
                sha = hashlib.sha256(b"").hexdigest() if not e.size else None
        else:
            typ = _TYPES.get(e.type, "f")
            if e.type == SYMTYPE:
                link = e.linkname.decode("utf-8", "backslashreplace")
            elif e.type == LNKTYPE:
                link = path_text(clean_path(e.linkname))
                target = self.by_path.get(link)
                if target is not None:
                    size, sha = target[5], target[10]
        self._pending = None
        self.by_path.pop(path, None)          # a later entry replaces an earlier one: it goes last
        self.by_path[path] = (path, typ, e.mode & 0o7777, e.uid, e.gid, size, e.mtime_ns // 1_000_000_000,
                              link, xattrs, wh, sha)

    @property
    def rows(self) -> list[Row]:
        return list(self.by_path.values())

    def finish(self) -> None:
        """Parse the package databases this layer wrote (engine/image/packages.py)."""
        for path, cap in self.dbs.items():
            if self.by_path.get(path, ("",) * 11)[10] != cap.hexdigest():
                continue                      # replaced later in the same layer by something else
            for name, version, arch, source, manager in parse_db(path, b"".join(cap.parts)):
                self.packages.append((path, manager, name, version, arch, source))
        self.dbs.clear()


def walk_tree(root: str | os.PathLike) -> tuple[list[Row], list[tuple[str, str, str, str, str, str]]]:
    """The rows of an unpacked layer tree (layers/<hex>/, written by the extractor): what the
    recorder would have recorded, from the files (contents hashed, databases parsed). Directories
    the tar did not name (IMPLICIT_XATTR) and the root are left out, as the recorder leaves them."""
    rows: list[Row] = []
    packages: list[tuple[str, str, str, str, str, str]] = []
    top = os.fsencode(os.fspath(root))
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(top + rel if rel else top) as it:
            entries = sorted(it, key=lambda d: d.name)
        for d in entries:
            name = os.fsencode(d.name)
            sub = rel + b"/" + name
            full = top + sub
            st = os.lstat(full)
            try:
                names = os.listxattr(full, follow_symlinks=False)
            except OSError:
                names = []
            comps = tuple(sub[1:].split(b"/"))
            path = path_text(comps)
            wh = _whiteout(name)
            xattrs = _names(names)
            link: str | None = None
            size, sha = 0, None
            m = st.st_mode
            if stat.S_ISDIR(m):
                stack.append(sub)
                if IMPLICIT_XATTR in names:
                    continue
                typ = "d"
            elif stat.S_ISLNK(m):
                typ, link = "l", os.readlink(full).decode("utf-8", "backslashreplace")
            elif stat.S_ISREG(m):
                if HARDLINK_XATTR in names:
                    typ = "h"
                    link = path_text(os.getxattr(full, HARDLINK_XATTR, follow_symlinks=False))
                else:
                    typ, size = "f", st.st_size
                    if not wh:
                        sha, data = _hash_file(full, is_package_db(path))
                        if data is not None:
                            for pname, version, arch, source, manager in parse_db(path, data):
                                packages.append((path, manager, pname, version, arch, source))
            else:
                typ = "c" if stat.S_ISCHR(m) else "b" if stat.S_ISBLK(m) else "p"
            rows.append((path, typ, stat.S_IMODE(m), st.st_uid, st.st_gid, size, int(st.st_mtime), link,
                         xattrs, wh, sha))
    return rows, packages


def _hash_file(path: bytes, keep: bool) -> tuple[str, bytes | None]:
    h = hashlib.sha256()
    parts: list[bytes] = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
            if keep:
                parts.append(b)
    finally:
        os.close(fd)
    return h.hexdigest(), b"".join(parts) if keep else None
