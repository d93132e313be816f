"""File-level dedupe: identical regular files of layer trees share one inode (docs/contents.md).

    res = link_tree(tree, store.objects_dir, recorder.by_path)   # after the unpack, before the publish
    record(store.objects_dir, diff_id, res.held)                  # what the tree's record counts twice
    sweep(store.objects_dir, store.layers_dir)                    # objects no tree links (all of them)
    sweep_objects(store.objects_dir, only=inodes)                 # gc: among the files it unlinked

ROOT/objects/<2 hex>/<62 hex> holds one link of every shared file, named by the sha256 of
everything a hardlink shares: the content's sha256 (the contents index computed it while the
extractor wrote the file), mode, uid, gid, mtime (ns), size and every xattr with its value. A file
of a fresh tree whose key names an existing object is replaced by a link to it (link() to a temp
name in the same directory, then rename() over the file: the tree never lacks the name); a file
whose key is new is linked into the store as the object. The tree is still a temp directory no
container uses, and its files have their final attributes, so nothing shared is written after it
is shared. Only files the recorder hashed, with one link, more than 0 bytes, whose size is the
row's, are considered; an object whose attributes differ from the file's (a tampered store) is
left alone. A failure for one file (EMLINK, a directory we cannot open) keeps that file as it is.

`ROOT/objects/trees/<diff hex>`: the bytes of a tree's files that are objects (each inode once),
and the bytes saved by files sharing an inode inside the tree, for df: the trees' usage records
count a shared inode once per tree; df subtracts the excess from Layers, and reports it plus the
savings inside trees as "Deduplicated" (their sums are kept by engine/maint/objects.py's ledger).
gc removes an object when its only link is the object itself (st_nlink 1).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass

TREES = "trees"
_RO = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Result:
    created: int = 0      # new objects
    linked: int = 0       # files replaced by a link to an existing object
    saved: int = 0        # bytes those files no longer take
    held: int = 0         # bytes of the tree's object inodes, each once (its share of the objects)
    within: int = 0       # of `saved`, the files that share an inode with another file of this tree


def object_key(sha: str, st: os.stat_result, xattrs: list[tuple[str, bytes]]) -> str:
    """The object name: sha256 of the content's hash and the inode's shared metadata."""
    h = hashlib.sha256(b"v1 %s %o %d %d %d %d\n" % (sha.encode(), st.st_mode, st.st_uid, st.st_gid,
                                                      st.st_mtime_ns, st.st_size))
    for k, v in sorted(xattrs):
        h.update(os.fsencode(k) + b"\0" + v + b"\n")
    return h.hexdigest()


def _xattrs(fd: int) -> list[tuple[str, bytes]]:
    try:
        return [(k, os.getxattr(fd, k)) for k in os.listxattr(fd)]
    except OSError:
        return []


class _Objects:
    """The objects dir's fds (its 256 subdirectories made as needed)."""

    def __init__(self, objects_dir: str):
        os.makedirs(objects_dir, mode=0o700, exist_ok=True)
        self.fd = os.open(objects_dir, _DIR)
        self.subs: dict[str, int] = {}

    def sub(self, name: str) -> int:
        fd = self.subs.get(name)
        if fd is None:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
            except FileExistsError:
                pass
            fd = self.subs[name] = os.open(name, _DIR, dir_fd=self.fd)
        return fd

    def close(self) -> None:
        for fd in self.subs.values():
            os.close(fd)
        os.close(self.fd)


def link_tree(tree, objects_dir, rows: dict) -> Result:
    """Share the tree's files with identical objects (see the module doc). `rows`: path -> the
    contents index row (engine/layer/index.py's EntryRecorder.by_path)."""
    from container.engine.layer.index import path_text

    res = Result()
    if not rows:
        return res
    top = os.fsencode(os.fspath(tree))
    objs = _Objects(os.fspath(objects_dir))
    seen: set[str] = set()
    try:
        for dirpath, _dirs, files, dfd in os.fwalk(top, follow_symlinks=False):
            rel = tuple(c for c in dirpath[len(top):].split(b"/") if c)
            for name in files:
                row = rows.get(path_text(rel + (name,)))
                if row is None or row[1] != "f" or row[9] or not row[10] or not row[5]:
                    continue
                try:
                    _one(objs, dfd, name, row, res, seen)
                except OSError:
                    continue
    finally:
        objs.close()
    return res


def _one(objs: _Objects, dfd: int, name: bytes, row, res: Result, seen: set[str]) -> None:
    fd = os.open(name, _RO, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != row[5]:
            return
        key = object_key(row[10], st, _xattrs(fd))
    finally:
        os.close(fd)
    sfd = objs.sub(key[:2])
    leaf = key[2:]
    try:
        os.link(name, leaf, src_dir_fd=dfd, dst_dir_fd=sfd, follow_symlinks=False)
        res.created += 1
        if key not in seen:
            seen.add(key)
            res.held += st.st_blocks * 512
        return
    except FileExistsError:
        pass
    ost = os.stat(leaf, dir_fd=sfd, follow_symlinks=False)
    if not stat.S_ISREG(ost.st_mode) or (ost.st_mode, ost.st_uid, ost.st_gid, ost.st_mtime_ns, ost.st_size) != \
            (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size):
        return
    tmp = b".dd-" + secrets.token_hex(6).encode()
    os.link(leaf, tmp, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        os.unlink(tmp, dir_fd=dfd)
        raise
    res.linked += 1
    res.saved += st.st_blocks * 512
    if key in seen:
        res.within += st.st_blocks * 512
    else:
        seen.add(key)
        res.held += ost.st_blocks * 512


def record(objects_dir, diff_id: str, held: int, within: int = 0) -> None:
    """Note the bytes of the tree's object inodes, and what sharing inside the tree saved (df's
    "Deduplicated" is computed from them)."""
    d = os.path.join(os.fspath(objects_dir), TREES)
    os.makedirs(d, exist_ok=True)
    hexd = diff_id.split(":", 1)[-1]
    tmp = os.path.join(d, f".tmp-{hexd}-{secrets.token_hex(4)}")
    with open(tmp, "w") as f:
        f.write(f"{held} {within}\n")
    os.replace(tmp, os.path.join(d, hexd))


def forget(objects_dir, diff_id: str) -> None:
    """Drop a tree's record (a tree rewritten without dedupe: fsck --repair's re-unpack)."""
    try:
        os.unlink(os.path.join(os.fspath(objects_dir), TREES, diff_id.split(":", 1)[-1]))
    except OSError:
        pass


def held_by_trees(objects_dir, names: set[str]) -> tuple[int, int]:
    """Sums of record()'s numbers (held, within) for the trees `names` (diff hexes)."""
    d = os.path.join(os.fspath(objects_dir), TREES)
    held = within = 0
    for n in names:
        try:
            with open(os.path.join(d, n)) as f:
                parts = f.read().split()
            held += int(parts[0])
            within += int(parts[1]) if len(parts) > 1 else 0
        except (OSError, ValueError, IndexError):
            continue
    return held, within


def objects(objects_dir, only: set[int] | None = None) -> list[tuple[str, os.stat_result]]:
    """Every object: (path, lstat). `only`: the objects whose st_ino is in it (from the listing: the
    others are not stat'ed)."""
    out: list[tuple[str, os.stat_result]] = []
    for sub in _subdirs(objects_dir):
        try:
            with os.scandir(sub) as it:
                for e in it:
                    if not e.name.startswith(".") and (only is None or e.inode() in only):
                        try:
                            out.append((e.path, e.stat(follow_symlinks=False)))
                        except OSError:
                            pass
        except OSError:
            continue
    return out


def sweep(objects_dir, layers_dir, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove the objects nothing else links (st_nlink 1) and the records of trees that are gone:
    (objects removed, bytes freed)."""
    got = sweep_objects(objects_dir, dry_run=dry_run)
    if not dry_run:
        drop_records(objects_dir, layers_dir)
    return got


def serial(fn: Callable, items) -> list:
    """The mapper the sweeps take by default: in this thread (gc passes its thread pool's)."""
    return [fn(x) for x in items]


def sweep_objects(objects_dir, *, dry_run: bool = False, only: set[int] | None = None,
                  mapper: Callable = serial) -> tuple[int, int]:
    """Remove the objects nothing else links (st_nlink 1): (objects removed, bytes freed). `only`:
    look at the objects with these st_ino only (the files a sweep just unlinked, from the listing:
    the others are not stat'ed). `mapper`: serial() or a thread pool's map (the unlinks wait on the disk)."""
    found = objects(objects_dir, only)
    loose = [(p, st.st_blocks * 512) for p, st in found if st.st_nlink == 1 and stat.S_ISREG(st.st_mode)]
    if dry_run:
        return len(loose), sum(b for _, b in loose)
    recheck = only is None     # a whole listing is old by the time its last object goes: look again

    def rm(item: tuple[str, int]) -> int:
        try:
            if recheck and os.lstat(item[0]).st_nlink != 1:      # linked since it was listed
                return -1
            os.unlink(item[0])
        except OSError:
            return -1
        return item[1]

    got = [b for b in mapper(rm, loose) if b >= 0]
    return len(got), sum(got)


def _subdirs(objects_dir) -> list[str]:
    try:
        with os.scandir(objects_dir) as it:
            return [e.path for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def drop_records(objects_dir, layers_dir, mapper: Callable = serial) -> int:
    """Remove the records of trees that are gone; the bytes those files took."""
    d = os.path.join(os.fspath(objects_dir), TREES)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return 0
    try:
        present = set(os.listdir(layers_dir))
    except FileNotFoundError:
        present = set()

    def rm(name: str) -> int:
        try:
            p = os.path.join(d, name)
            b = os.lstat(p).st_blocks * 512
            os.unlink(p)
            return b
        except OSError:
            return 0

    return sum(mapper(rm, [n for n in names if n not in present]))


def object_inodes(objects_dir) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every object, from the listings alone (no stat per object)."""
    try:
        dev = os.stat(objects_dir).st_dev
    except FileNotFoundError:
        return set()
    out: set[tuple[int, int]] = set()
    for sub in _subdirs(objects_dir):
        try:
            with os.scandir(sub) as it:
                out.update((dev, e.inode()) for e in it if not e.name.startswith("."))
        except OSError:
            continue
    return out


def dir_bytes(objects_dir) -> int:
    """The blocks of the objects dir itself, its <2 hex> dirs and trees/ (not the files in them)."""
    n = 0
    root = os.fspath(objects_dir)
    for p in [root, os.path.join(root, TREES), *_subdirs(root)]:
        try:
            n += os.lstat(p).st_blocks * 512
        except OSError:
            pass
    return n


def share(store, tree, stats, diff_id: str) -> Result | None:
    """A fresh tree's files shared with the store's objects, when dedupe is on and the tree was
    indexed at unpack (None otherwise). A failure here never fails the pull: the tree stays as is."""
    from container.engine.locate import dedupe_enabled

    rec = getattr(stats, "index", None)
    if tree is None or rec is None or not dedupe_enabled():
        return None
    try:
        res = link_tree(tree, store.objects_dir, rec.by_path)
        record(store.objects_dir, diff_id, res.held, res.within)
    except OSError:
        return None
    return res


def usage(objects_dir) -> tuple[int, int, int, int, int]:
    """The walk: (the bytes of the objects dir's directories; of the trees' records; the linked
    objects' bytes; the bytes of objects nothing links, and how many they are)."""
    dirs = dir_bytes(objects_dir)
    records = live = loose = n_loose = 0
    d = os.path.join(os.fspath(objects_dir), TREES)
    try:
        with os.scandir(d) as it:
            for e in it:
                try:
                    records += e.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    pass
    except FileNotFoundError:
        pass
    for _, st in objects(objects_dir):
        if st.st_nlink > 1:
            live += st.st_blocks * 512
        else:
            loose += st.st_blocks * 512
            n_loose += 1
    return dirs, records, live, loose, n_loose
