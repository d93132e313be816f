"""File-level dedupe: identical regular files of layer trees share one inode (docs/contents.md).

    sharer = Sharer(store.objects_dir)            # unpack_layer(..., sharer=sharer) calls sharer.file()
    record(store.objects_dir, diff_id, sharer.res.held, sharer.res.within)   # once the tree is verified
    sweep(store.objects_dir, store.layers_dir)    # objects no tree links (all of them)
    sweep_objects(store.objects_dir, only=inodes) # gc: among the files it unlinked

ROOT/objects/<2 hex>/<62 hex> holds one link of every shared file, named by the sha256 of
everything a hardlink shares: the content's sha256 (the contents index computed it while the
extractor wrote the file), mode, uid, gid, mtime (ns), size and every xattr with its value. A file
of a fresh tree whose key names an existing object is replaced by a link to it (link() to a temp
name in the same directory, then rename() over the file: the tree never lacks the name); a file
whose key is new is linked into the store as the object. This happens in the extractor, file by
file, right after the file got its final attributes (its fd still open: no second walk, no path
lookup that a later entry could redirect); the tree is still a temp directory no container uses,
and nothing writes to a file after that, so nothing shared is written after it is shared. Only
regular files the recorder hashed, with one link, more than 0 bytes, are considered; an object
whose attributes differ from the file's (a tampered store) is left alone. A failure for one file
(EMLINK, a full disk) keeps that file as it is. A file the same layer replaces or removes later
leaves its object with no other link: gc sweeps it (and the tree's record counts it: a layer
that writes a path twice is rare).

`ROOT/objects/trees/<diff hex>`: the bytes of a tree's files that are objects (each inode once),
and the bytes saved by files sharing an inode inside the tree, for df: the trees' usage records
count a shared inode once per tree; df subtracts the excess from Layers, and reports it plus the
savings inside trees as "Deduplicated" (their sums are kept by engine/maint/objects.py's ledger).
gc removes an object when its only link is the object itself (st_nlink 1).
"""

from __future__ import annotations

import hashlib
import os
import stat

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from collections.abc import Callable

TREES = "trees"
_RO = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Result:
    """What sharing one tree's files did. (A plain class: a layer worker process imports this module.)"""

    def __init__(self) -> None:
        self.created = 0      # new objects
        self.linked = 0       # files replaced by a link to an existing object
        self.saved = 0        # bytes those files no longer take
        self.held = 0         # bytes of the tree's object inodes, each once (its share of the objects)
        self.within = 0       # of `saved`, the files that share an inode with another file of this tree
        self.dups: list[str] = []    # those files' paths (index.path_text): not hardlinks
        self.new: list[str] = []     # the keys of the objects it created


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


class Sharer:
    """Dedupe while a layer is unpacked (engine/layer/unpack.py calls file() for each regular file
    it has written, its attributes final, its fd still open): the file becomes an object, or a link
    to the identical object already stored. A file the extractor replaces later in the same layer
    leaves its object unlinked (st_nlink 1): gc's sweep removes it."""

    def __init__(self, objects_dir) -> None:
        self.objs = _Objects(os.fspath(objects_dir))
        self.res = Result()
        self.seen: set[str] = set()
        self.fs_adds: bool | None = None   # whether this filesystem gives new files xattrs of its own

    def file(self, pfd: int, name: bytes, fd: int, hasher, size: int, st: os.stat_result,
             comps: tuple[bytes, ...] = (), bare: bool = False) -> os.stat_result:
        """Share the file `name` (at comps in the tree) of the directory pfd, open as fd, whose fstat is
        st; `hasher` saw its `size` bytes. `bare`: the extractor set no xattr on it, so it has none
        unless the filesystem adds its own (a label: the first bare file is listed to find out, and
        then every file is). Returns the lstat of what the tree holds at name now (st, or the object's)."""
        if not size or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != size:
            return st
        try:
            if bare and self.fs_adds is False:
                xattrs: list[tuple[str, bytes]] = []
            else:
                xattrs = _xattrs(fd)
                if bare and self.fs_adds is None:
                    self.fs_adds = bool(xattrs)
            return _place(self.objs, pfd, name, st, object_key(hasher.hexdigest(), st, xattrs), self.res,
                          self.seen, comps)
        except OSError:
            return st       # (EMLINK, a full objects dir: the file stays as it is)

    def close(self) -> None:
        self.objs.close()


def _place(objs: _Objects, dfd: int, name: bytes, st: os.stat_result, key: str, res: Result,
           seen: set[str], comps: tuple[bytes, ...] = ()) -> os.stat_result:
    sfd = objs.sub(key[:2])
    leaf = key[2:]
    try:
        os.link(name, leaf, src_dir_fd=dfd, dst_dir_fd=sfd, follow_symlinks=False)
        res.created += 1
        res.new.append(key)
        if key not in seen:
            seen.add(key)
            res.held += st.st_blocks * 512
        return st
    except FileExistsError:
        pass
    ost = os.stat(leaf, dir_fd=sfd, follow_symlinks=False)
    if not stat.S_ISREG(ost.st_mode) or (ost.st_mode, ost.st_uid, ost.st_gid, ost.st_mtime_ns, ost.st_size) != \
            (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size):
        return st
    tmp = b".dd-" + os.urandom(6).hex().encode()
    os.link(leaf, tmp, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        os.unlink(tmp, dir_fd=dfd)
        raise
    res.linked += 1
    res.saved += st.st_blocks * 512
    if key in seen:
        from container.engine.layer.index import path_text

        res.within += st.st_blocks * 512
        res.dups.append(path_text(comps))
    else:
        seen.add(key)
        res.held += ost.st_blocks * 512
    return ost


def record(objects_dir, diff_id: str, held: int, within: int = 0, dups: list[str] | None = None) -> None:
    """Note the bytes of the tree's object inodes, and what sharing inside the tree saved (df's
    "Deduplicated" is computed from them); second line: the paths of the tree's files that share
    an inode with another of its files because of the dedupe (a JSON list: tree_dups())."""
    import json

    d = os.path.join(os.fspath(objects_dir), TREES)
    os.makedirs(d, exist_ok=True)
    hexd = diff_id.split(":", 1)[-1]
    tmp = os.path.join(d, f".tmp-{hexd}-{os.urandom(4).hex()}")
    with open(tmp, "w") as f:
        f.write(f"{held} {within}\n{json.dumps(dups or [])}\n")
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
                parts = f.readline().split()
            held += int(parts[0])
            within += int(parts[1]) if len(parts) > 1 else 0
        except (OSError, ValueError, IndexError):
            continue
    return held, within


def tree_dups(objects_dir, diff_id: str) -> set[str] | None:
    """The paths record() noted for a tree: files that share an inode with another file of the tree
    because the dedupe linked them (not hardlinks of the layer). None: no such note (a tree shared
    before the note existed, or not shared): which names are hardlinks is not known."""
    import json

    try:
        with open(os.path.join(os.fspath(objects_dir), TREES, diff_id.split(":", 1)[-1])) as f:
            f.readline()
            second = f.readline()
        return set(json.loads(second)) if second else None
    except (OSError, ValueError, TypeError):
        return None


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


def forget_new(objects_dir, res: Result | None, links: int = 1) -> None:
    """A tree that will not be published (its pull failed): unlink the objects its unpack created
    that nothing else links (st_nlink <= `links`: 1 once the tree is removed, 2 while it is still
    there), so the failed pull leaves the objects as they were."""
    if res is None:
        return
    root = os.fspath(objects_dir)
    for key in res.new:
        p = os.path.join(root, key[:2], key[2:])
        try:
            if os.lstat(p).st_nlink <= links:
                os.unlink(p)
        except OSError:
            continue
    res.new.clear()


def record_tree(store, stats, diff_id: str) -> None:
    """After a fresh tree was verified: record what sharing its files did (stats.dedupe, set by
    engine/layer/stream.py's unpack_blob). A failure here never fails the pull."""
    res = getattr(stats, "dedupe", None)
    if res is None:
        return
    try:
        record(store.objects_dir, diff_id, res.held, res.within, res.dups)
    except OSError:
        pass


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
