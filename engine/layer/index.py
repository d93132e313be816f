"""The contents index of one layer, as rows for the `file` table (engine/image/contents.py stores them).

    rec = EntryRecorder()
    unpack_layer(stream, dest, recorder=rec)    # the extractor calls rec.content() / rec.entry()
    rec.finish(dest)                            # package databases parsed, sparse files hashed from the tree
    rec.rows -> [(path, type, mode, uid, gid, size, mtime, link, xattrs, whiteout, sha256), ...]
    rec.packages -> [(db_path, manager, name, version, arch, source), ...]

    rows, packages = walk_tree(layers/<hex>/, store.objects_dir)   # the same from a tree (indexed late)

The extractor (engine/layer/unpack.py) feeds one entry at a time: the tar header's fields and, for
a regular file, the bytes it writes (content() returns the hasher that Source.copy updates), so
the content's sha256 costs no second read. A package database (dpkg status and status.d/, apk's
installed, rpmdb.sqlite, os-release) is also kept in memory while it passes, and parsed at
finish() by engine/image/packages.py. A GNU sparse file's bytes are not fed (the extractor writes
its data regions, the holes stay holes): its content hash (the full content, holes as zeros, what
walk_tree and fsck --deep compute) is read back from the tree by hash_sparse(tree) (from
finish(tree)) once the layer is written; until then its row's sha256 is NULL. Sparse files are
rare, so that second read costs nothing in practice. Paths are absolute and cleaned
("/etc/passwd"), text as path_text() spells them; whiteout markers keep their own path
(whiteout 1, opaque 2).
CONTAINER_INDEX=0 turns the recorder off for a pull (then the layer is indexed on first use).
"""

from __future__ import annotations

import hashlib
import os
import stat

from container.engine.image.packages import is_package_db, parse_db
from container.engine.layer.owners import ROOTLESS_XATTR, decode_resource
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
        self.sparse: dict[str, tuple[bytes, ...]] = {}     # path -> comps of the GNU sparse files, to hash

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
            elif e.sparse is not None and not wh:
                self.sparse[path] = comps        # (hashed from the tree: hash_sparse)
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

    def removed(self, comps: tuple[bytes, ...]) -> None:
        """The extractor removed the directory at comps (a later entry of the layer replaces it): the
        rows under it go (the directory's own row goes as its replacement is recorded)."""
        prefix = path_text(comps) + "/"
        for path in [p for p in self.by_path if p.startswith(prefix)]:
            del self.by_path[path]

    @property
    def rows(self) -> list[Row]:
        return list(self.by_path.values())

    def finish(self, tree: str | os.PathLike | None = None) -> None:
        """Parse the package databases this layer wrote (engine/image/packages.py); with the tree
        the layer was unpacked into, hash its sparse files too (hash_sparse)."""
        if tree is not None:
            self.hash_sparse(tree)
        for path, cap in self.dbs.items():
            if self.by_path.get(path, ("",) * 11)[10] != cap.hexdigest():
                continue                      # replaced later in the same layer by something else
            for name, version, arch, source, manager in parse_db(path, b"".join(cap.parts)):
                self.packages.append((path, manager, name, version, arch, source))
        self.dbs.clear()

    def hash_sparse(self, tree: str | os.PathLike) -> int:
        """Fill the sha256 of the GNU sparse files this layer wrote (and of its hardlinks to them) from
        the unpacked tree: the full content, holes read as zeros. Call it after the unpack, before
        the rows are stored or shared (engine/layer/dedupe.py skips rows without a hash). A file that
        is gone, replaced, or not the size its row says keeps NULL. Returns how many it hashed."""
        done: dict[str, str] = {}
        top = os.fsencode(os.fspath(tree))
        for path, comps in self.sparse.items():
            r = self.by_path.get(path)
            if r is None or r[1] != "f" or r[10] is not None:
                continue                          # replaced by a later entry of the layer
            sha = hash_under(top, comps, r[5])
            if sha is not None:
                self.by_path[path] = r[:10] + (sha,)
                done[path] = sha
        if done:
            for k, r in self.by_path.items():
                if r[1] == "h" and r[10] is None and r[7] in done:
                    self.by_path[k] = r[:10] + (done[r[7]],)
        self.sparse.clear()
        return len(done)


def hash_under(top: bytes, comps: tuple[bytes, ...], size: int) -> str | None:
    """sha256 hex of the regular file at comps under the directory top, opened component by
    component without following a symlink (a later entry cannot point it outside the tree); None
    when it is not a regular file of `size` bytes."""
    fds: list[int] = []
    try:
        fds.append(os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for c in comps[:-1]:
            fds.append(os.open(c, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fds[-1]))
        fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fds[-1])
    except OSError:
        return None
    finally:
        for f in fds:
            os.close(f)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None
        return _hash_fd(fd)[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def walk_tree(root: str | os.PathLike, objects_dir: str | os.PathLike | None = None, *,
              links: bool = True, dups: set[str] | None = None
              ) -> tuple[list[Row], list[tuple[str, str, str, str, str, str]]]:
    """The rows of an unpacked layer tree (layers/<hex>/, written by the extractor): what the
    recorder would have recorded, from the files (contents hashed, databases parsed). Directories
    the tar did not name (IMPLICIT_XATTR) and the root are left out, as the recorder leaves them.

    Hardlinks inside the layer (links=True): names of one inode in this tree are one file and its
    hardlinks, as the recorder records them: the first name a regular file ("f"), the others "h"
    rows linking to it, with its size and hash. The tar's order is not known any more, so the
    first is the first path of a depth-first walk by name (a tar written in that order, as Go's
    filepath.Walk and tar --sort=name write them, gives the recorder's rows exactly). Not hardlinks: names that share an
    inode because file-level dedupe linked them (the inode is an object under objects_dir, the
    store's ROOT/objects: engine/layer/dedupe.py); the recorder saw two files there, and they stay
    two "f" rows. The dedupe shares a file as it is written, so an object may have hardlinks of
    the layer too: `dups` (dedupe.tree_dups: the tree's names the dedupe linked) are then the "f"
    rows and the object's other names follow the hardlink rule; without it (a tree shared before
    that note was kept, when no shared file had hardlinks) every name of an object is an "f" row.
    A placeholder for a lower layer's file (HARDLINK_XATTR) is an "h" row in any case.
    links=False keeps every name of a regular file an "f" row (fsck --deep compares contents).
    Owners are the layer's: where a rootless unpack could not chown a file to them, its
    ROOTLESS_XATTR record's (what the recorder took from the tar header)."""
    rows: list[Row] = []
    packages: list[tuple[str, str, str, str, str, str]] = []
    inodes: dict[tuple[int, int], list[tuple[int, bytes]]] = {}   # (dev, ino), st_nlink > 1 -> (row, file)
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
                    same = inodes.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
                    if same is not None and not wh:
                        sha = rows[same[0][0]][10]            # (another name of a file hashed already)
                    elif not wh:
                        sha, data = _hash_file(full, is_package_db(path))
                        if data is not None:
                            for pname, version, arch, source, manager in parse_db(path, data):
                                packages.append((path, manager, pname, version, arch, source))
                    if st.st_nlink > 1 and not wh:
                        inodes.setdefault((st.st_dev, st.st_ino), []).append((len(rows), full))
            else:
                typ = "c" if stat.S_ISCHR(m) else "b" if stat.S_ISBLK(m) else "p"
            uid, gid = st.st_uid, st.st_gid
            if ROOTLESS_XATTR in names:
                uid, gid = _layer_owner(full, uid, gid)
            rows.append((path, typ, stat.S_IMODE(m), uid, gid, size, int(st.st_mtime), link, xattrs, wh, sha))
    if links:
        for same in inodes.values():
            if len(same) < 2:
                continue
            if not _is_object(same[0][1], rows[same[0][0]][10], objects_dir):
                _as_hardlinks(rows, [i for i, _ in same])
            elif dups is not None:
                linked = [i for i, _ in same if rows[i][0] not in dups]
                if len(linked) > 1:
                    _as_hardlinks(rows, linked)
    return rows, packages


def _layer_owner(full: bytes, uid: int, gid: int) -> tuple[int, int]:
    """The layer's owner of a file a rootless unpack could not chown to it (engine/layer/owners.py):
    the ROOTLESS_XATTR record's ids where it has them (a 0 field: the file's own id)."""
    try:
        ru, rg = decode_resource(os.getxattr(full, ROOTLESS_XATTR, follow_symlinks=False))
    except (OSError, ValueError):
        return uid, gid
    return ru or uid, rg or gid


def _is_object(full: bytes, sha: str | None, objects_dir) -> bool:
    """Is this file (content hash sha) a dedupe object (ROOT/objects/<key> is the same inode)?"""
    if objects_dir is None or sha is None:
        return False
    from container.engine.layer.dedupe import object_key

    try:
        st = os.lstat(full)
        xattrs = [(k, os.getxattr(full, k, follow_symlinks=False))
                  for k in os.listxattr(full, follow_symlinks=False)]
        key = object_key(sha, st, xattrs)
        ost = os.lstat(os.path.join(os.fspath(objects_dir), key[:2], key[2:]))
    except OSError:
        return False
    return (ost.st_dev, ost.st_ino) == (st.st_dev, st.st_ino)


def _as_hardlinks(rows: list[Row], same: list[int]) -> None:
    """The names of one inode: the first path stays the file, the others become its hardlinks."""
    order = sorted(same, key=lambda i: rows[i][0].split("/"))     # (depth first, by name: /a/b before /a.txt)
    first = rows[order[0]]
    for i in order[1:]:
        r = rows[i]
        rows[i] = (r[0], "h", r[2], r[3], r[4], first[5], r[6], first[0], r[8], r[9], first[10])


def _hash_file(path: bytes, keep: bool) -> tuple[str, bytes | None]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _hash_fd(fd, keep)
    finally:
        os.close(fd)


def _hash_fd(fd: int, keep: bool = False) -> tuple[str, bytes | None]:
    h = hashlib.sha256()
    parts: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        h.update(b)
        if keep:
            parts.append(b)
    return h.hexdigest(), b"".join(parts) if keep else None
