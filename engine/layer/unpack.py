"""Our own layer extractor: the entries engine/layer/tar.py reads, created with *at() syscalls
relative to directory fds opened without following symlinks.

    unpack_layer(stream, dest, *, limits=None, policy=None, recorder=None, sharer=None) -> LayerStats
        (recorder: engine/layer/index.py, the contents index; sharer: engine/layer/dedupe.py)

`stream` is an uncompressed tar stream (engine.layer.compression.open_layer_stream); `dest` an existing
empty directory. The layer is extracted as data: whiteout markers (`.wh.<name>`, `.wh..wh..opq`)
are written as plain empty files; engine/layer/merge.py applies them when it merges layers.

Why not tarfile: its stream parser costs ~1.5 CPU-s per 12.7k members, this one ~0.2 s
(design.md, performance facts); and its extraction filters have the wrong semantics for a rootfs
(style.md §9.7). This module is a security boundary (docs/security.md):

* Names are cleaned like umoci's CleanPath: a leading "/" is dropped, "." and empty components
  vanish, ".." cannot climb above the layer root. The result is always inside `dest`.
* Every parent directory is opened component by component with O_NOFOLLOW|O_DIRECTORY relative to
  its parent's fd. A parent that is a symlink (one this layer created earlier: `dir -> target`,
  then `dir/etc/file`) is resolved inside the tree as umoci and docker do (engine/layer/paths.py:
  absolute targets re-rooted, ".." clamped at the root, a loop an error), and the entry is written
  at the resolved path, again opened without following anything; nothing lands outside `dest`.
  A parent that is a file is an error. The directory fds: engine/layer/walk.py (DirTree).
* Leaves are created with mkdirat/openat(O_EXCL|O_NOFOLLOW)/symlinkat/linkat/mknodat; attributes
  are set on the opened fd or with AT_SYMLINK_NOFOLLOW. Symlink targets are stored verbatim.
* Hardlink targets are cleaned the same way and must be an earlier non-directory entry of this
  layer (dest starts empty, so "exists in dest" means exactly that).
* Owners, setuid/setgid bits and device nodes: as the OwnerPolicy says (engine/layer/owners.py:
  root, a user namespace with subordinate ranges, or a single id; what cannot be represented is
  recorded or dropped, never a failure).
* Directories are created 0700 and get their real mode/owner/xattrs/mtime at the end, deepest
  first (a mode 0000 directory holding files works; tar --delay-directory-restore).
* GNU sparse files are written region by region (engine/layer/sparse.py): the holes stay holes.
* Anything else odd (bad checksum, truncation, bad sparse maps, unknown types, limits) is a
  LayerError naming the entry. No other exception type escapes.
"""

from __future__ import annotations

import errno
import os
import stat

from container.engine import lazylog
from container.engine.errors import LayerError
from container.engine.layer.tar import (AUFS_META_PREFIX, BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, OPAQUE,
                                        REGULAR_TYPES, SYMTYPE, WHITEOUT_PREFIX, Entry, Limits, Source,
                                        iter_entries, show_name)
from container.engine.layer.paths import clean_path, resolve_links
from container.engine.layer.owners import ROOTLESS_XATTR, OwnerPolicy
from container.engine.layer.walk import (DIR_FLAGS, IMPLICIT_XATTR, DirTree, Missing, chmod_dir_at, remove_xattr_fd,
                                         rmtree_at, set_xattr_fd)
from container.engine.layer.sparse import write_sparse
from container.engine.layer.tally import Tally

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from pathlib import Path

    from _typeshed import SupportsRead

    from container.engine.layer.dedupe import Result, Sharer
    from container.engine.layer.index import EntryRecorder

log = lazylog.get("container.unpack")

# A hardlink whose target is not in this layer (it is in a lower one): an empty placeholder file
# carrying the cleaned target path; its directory and every one above it, the layer's root included,
# carry HARDLINKS_XATTR. engine/layer/merge.py links it to what the snapshot held at that path before
# the layer (tar order: the layer's own change to the target comes after the link).
HARDLINK_XATTR = "user.container.hardlink"
HARDLINKS_XATTR = "user.container.hardlinks"
RESERVED_XATTRS = frozenset((IMPLICIT_XATTR, HARDLINK_XATTR, HARDLINKS_XATTR, ROOTLESS_XATTR))

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerStats:
    """What unpack_layer did: counts, bytes, and warnings (entries it could not create as root would).
    (A plain class: a layer worker process imports this module, and dataclasses cost it ~5 ms.)"""

    def __init__(self) -> None:
        self.entries = 0          # tar entries applied (files, dirs, links, nodes, markers)
        self.size = 0             # bytes of regular-file content
        self.skipped = 0          # entries skipped (device nodes / fifos we were not permitted to create)
        self.links_to_lower = 0   # hardlinks whose target is in a lower layer (resolved by the merge)
        self.warnings: list[str] = []
        self.index: EntryRecorder | None = None     # the entries recorded for the contents index, if any
        self.usage: tuple[int, int, int] | None = None   # the tree's usage record (engine/layer/tally.py), if exact
        self.dedupe: Result | None = None           # what sharing the files with the store's objects did, if done

def check_base_layer(diff_id: str, stats: LayerStats | None, tree: str | Path | None = None) -> None:
    """An image's first layer has no lower layer for a hardlink to name: refuse it (docker and
    podman fail its unpack) before the image is recorded, rather than every `run` failing on it.
    From this unpack's `stats`, or for a layer already stored, from its `tree` (whose root is
    marked since placeholders mark every directory above them; older trees pass)."""
    if stats is not None:
        found = stats.links_to_lower > 0
    else:
        try:
            found = tree is not None and HARDLINKS_XATTR in os.listxattr(tree)
        except OSError:
            found = False
    if found:
        raise LayerError(f"layer {diff_id[7:19]}: hardlinks to a file the layer does not hold, and it is the "
                         f"image's base layer (there is no lower layer to hold it)")


class _Extractor(DirTree):
    def __init__(self, dest: str | Path, limits: Limits, policy: OwnerPolicy, recorder: EntryRecorder | None = None,
                 sharer: Sharer | None = None):
        super().__init__(os.fsencode(os.fspath(dest)), limits)
        self.policy = policy
        self.recorder = recorder       # the contents index (engine/layer/index.py), fed every entry
        self.sharer = sharer           # file-level dedupe (engine/layer/dedupe.py), needs the recorder's hashes
        self.dirs: dict[tuple[bytes, ...], Entry] = {}       # final attributes, applied at the end
        self.unmark: set[tuple[bytes, ...]] = set()       # implicit dirs the tar named later
        self.marked: set[tuple[bytes, ...]] = set()       # dirs holding HARDLINKS_XATTR
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.umask = _umask()
        if os.fstat(self.root_fd).st_mode & stat.S_ISGID:
            self.egid = -1           # new files inherit the directory's group: always fchown
        self.stats = LayerStats()
        self.tally = Tally()
        self.total = 0
        self.root_seen = False

    # -- removal ----------------------------------------------------------------------------
    def _forget(self, prefix: tuple[bytes, ...]) -> None:
        """Drop cached fds and pending dir attributes at or under prefix (after a removal)."""
        n = len(prefix)
        self.forget_fds(prefix)
        for k in [k for k in self.dirs if k[:n] == prefix and k != ()]:
            del self.dirs[k]
        self.unmark = {k for k in self.unmark if k[:n] != prefix}
        self.marked = {k for k in self.marked if k[:n] != prefix}

    def _remove_existing(self, pfd: int, comps: tuple[bytes, ...], st: os.stat_result) -> None:
        leaf = comps[-1]
        self.tally.exact = False
        if stat.S_ISDIR(st.st_mode):
            self._forget(comps)
            rmtree_at(pfd, leaf)
            if self.recorder is not None:
                self.recorder.removed(comps)
        else:
            os.unlink(leaf, dir_fd=pfd)

    # -- entries ----------------------------------------------------------------------------
    def apply(self, e: Entry, src: Source) -> None:
        comps = clean_path(e.name)
        if len(comps) > self.limits.max_depth:
            raise LayerError(f"layer entry {show_name(e.name)}: deeper than {self.limits.max_depth} directories")
        for c in comps[:-1]:
            if c.startswith(WHITEOUT_PREFIX) and (c == OPAQUE or not c.startswith(AUFS_META_PREFIX)):
                raise LayerError(f"layer entry {show_name(e.name)}: a whiteout name cannot be a directory")
        if not comps:
            self._apply_root(e, src)
            return
        leaf = comps[-1]
        is_reg = e.type in REGULAR_TYPES
        pfd, parent = self.dir_fd(comps[:-1], create=True, show=e.name)
        comps = parent + (leaf,)
        if leaf.startswith(WHITEOUT_PREFIX):
            if leaf == WHITEOUT_PREFIX or leaf in (b".wh..", b".wh..."):
                raise LayerError(f"layer entry {show_name(e.name)}: invalid whiteout name")
            if not leaf.startswith(AUFS_META_PREFIX) or leaf == OPAQUE:
                if not (is_reg or e.type == LNKTYPE):
                    raise LayerError(f"layer entry {show_name(e.name)}: whiteout marker is not a regular file")
                self._clear(pfd, comps)
                fd = os.open(leaf, _FILE_FLAGS, 0o600, dir_fd=pfd)
                self.tally.add(os.fstat(fd))
                os.close(fd)
                if is_reg:
                    src.copy(None, e.size)
                    src.skip_padding(e.size)
                if self.recorder is not None:
                    self.recorder.entry(comps, e)
                return
        if is_reg:
            self._regular(pfd, comps, e, src)
        elif e.type == DIRTYPE:
            self._dir(pfd, comps, e)
        elif e.type == SYMTYPE:
            try:
                os.symlink(e.linkname, leaf, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, comps)
                os.symlink(e.linkname, leaf, dir_fd=pfd)
            self._attrs_at(pfd, leaf, e, chmod=False)
            self.tally.at(pfd, leaf)
        elif e.type == LNKTYPE:
            self._hardlink(pfd, comps, e)
        elif e.type in (CHRTYPE, BLKTYPE, FIFOTYPE):
            self._node(pfd, comps, e)
        else:  # pragma: no cover - filtered by the reader
            raise LayerError(f"layer entry {show_name(e.name)}: unsupported type {e.type!r}")
        if self.recorder is not None:
            self.recorder.entry(comps, e)

    def _apply_root(self, e: Entry, src: Source) -> None:
        if e.type != DIRTYPE:
            raise LayerError(f"layer entry {show_name(e.name)}: refusing to change the type of the root "
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

    def _regular(self, pfd: int, comps, e: Entry, src: Source) -> None:
        leaf = comps[-1]
        self.total += e.real_size
        if self.total > self.limits.max_bytes:
            raise LayerError(f"layer too large: more than {self.limits.max_bytes} bytes of file content "
                             f"(at {show_name(e.name)})")
        mode = self.policy.file_mode(e.mode & 0o7777, False)
        # the usual 0644/0755 under umask 022: create with the final mode and skip fchmod
        # (O_CREAT gives a writable fd whatever the mode); special bits always go after fchown
        direct = self.umask is not None and not (mode & 0o7000) and not (mode & self.umask)
        try:
            fd = os.open(leaf, _FILE_FLAGS, mode if direct else 0o600, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, comps)
            fd = os.open(leaf, _FILE_FLAGS, mode if direct else 0o600, dir_fd=pfd)
        h = None
        try:
            if e.sparse is None:
                h = self.recorder.content(comps, e.size) if self.recorder is not None else None
                src.copy_padded(fd, e.size, h)
            else:
                write_sparse(src, fd, e.sparse, e.real_size, e.size)
            self.stats.size += e.real_size
            marked = self._owner(e, fd)
            if not direct:
                os.fchmod(fd, mode)
            for k, v in e.xattrs.items():
                self._xattr(fd, k, v, e)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
            st = os.fstat(fd)
            if self.sharer is not None and h is not None:
                # bare: we set no xattr on it (the sharer then need not list them)
                st = self.sharer.file(pfd, leaf, fd, h, e.size, st, comps, bare=not e.xattrs and not marked)
            self.tally.add(st)
        finally:
            os.close(fd)

    def _dir(self, pfd: int, comps, e: Entry) -> None:
        leaf = comps[-1]
        try:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.dirs[comps] = e
            return
        except FileExistsError:
            pass
        st: os.stat_result | None = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self._remove_existing(pfd, comps, st)
            st = None
        if st is None:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        else:
            # dir over dir keeps contents; make sure we can still write into it
            if st.st_mode & 0o700 != 0o700:
                chmod_dir_at(pfd, leaf, stat.S_IMODE(st.st_mode) | 0o700)
        if comps in self.implicit:
            self.implicit.discard(comps)
            self.unmark.add(comps)
        self.dirs[comps] = e

    def _hardlink(self, pfd: int, comps, e: Entry) -> None:
        tcomps = clean_path(e.linkname)
        if not tcomps:
            raise LayerError(f"layer entry {show_name(e.name)}: hardlink to the root directory")
        tcomps = resolve_links(tcomps[:-1], self.link_at, e.name) + tcomps[-1:]
        if tcomps == comps:
            raise LayerError(f"layer entry {show_name(e.name)}: hardlink to itself")
        try:
            tpfd = self.parent_fd(tcomps[:-1], create=False, show=e.name)
            tst = os.stat(tcomps[-1], dir_fd=tpfd, follow_symlinks=False)
        except (Missing, FileNotFoundError):
            self._placeholder(comps, tcomps, e)
            return
        if stat.S_ISDIR(tst.st_mode):
            raise LayerError(f"layer entry {show_name(e.name)}: hardlink target {show_name(e.linkname)} is a "
                             f"directory")
        if self.stats.links_to_lower and stat.S_ISREG(tst.st_mode) and tst.st_size == 0:
            try:            # a link to this layer's placeholder: a placeholder for the same lower file
                lower = os.getxattr(f"/proc/self/fd/{tpfd}/{os.fsdecode(tcomps[-1])}", HARDLINK_XATTR,
                                    follow_symlinks=False)
            except OSError:
                lower = None
            if lower is not None:
                self._placeholder(comps, tuple(lower.split(b"/")), e)
                return
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

    def _placeholder(self, comps, tcomps, e: Entry) -> None:
        """The target is not in this layer: record the link for the snapshot merge to resolve."""
        pfd = self.parent_fd(comps[:-1], create=True, show=e.name)
        self._clear(pfd, comps)
        fd = os.open(comps[-1], _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            os.setxattr(fd, HARDLINK_XATTR, b"/".join(tcomps))
            self.tally.add(os.fstat(fd))
            for i in range(len(comps) - 1, -1, -1):        # the parent, then up to the root
                if comps[:i] in self.marked:
                    break
                os.setxattr(self.parent_fd(comps[:i], create=False, show=e.name), HARDLINKS_XATTR, b"1")
                self.marked.add(comps[:i])
        except OSError as ex:
            raise LayerError(f"layer entry {show_name(e.name)}: hardlink target {show_name(e.linkname)} is not in "
                             f"this layer, and it cannot be recorded for a lower one ({ex.strerror})") from None
        finally:
            os.close(fd)
        self.stats.links_to_lower += 1

    def _node(self, pfd: int, comps, e: Entry) -> None:
        leaf = comps[-1]
        self._clear(pfd, comps)
        kind = {CHRTYPE: "character device", BLKTYPE: "block device", FIFOTYPE: "fifo"}[e.type]
        try:
            if e.type == FIFOTYPE:
                os.mkfifo(leaf, 0o600, dir_fd=pfd)
            else:
                if not self.policy.devices:
                    raise PermissionError(errno.EPERM, "not permitted")
                fmt = stat.S_IFCHR if e.type == CHRTYPE else stat.S_IFBLK
                os.mknod(leaf, fmt | 0o600, os.makedev(e.devmajor, e.devminor), dir_fd=pfd)
        except PermissionError:
            self.stats.skipped += 1
            msg = f"skipped {kind} {show_name(e.name)}: not permitted"
            self.stats.warnings.append(msg)
            (log.warning if self.policy.devices else log.info)(msg)    # (expected without root)
            return
        self._attrs_at(pfd, leaf, e, chmod=True)
        self.tally.at(pfd, leaf)

    def _owner(self, e: Entry, target, pfd: int | None = None) -> bool:
        """The owner the policy gives e (target: an fd, or a leaf of pfd), and the record of the
        layer's owner where it cannot be represented (files and directories: user.* xattrs are
        refused on symlinks and nodes). True when that record was written (an xattr of ours)."""
        ids, record = self.policy.owner(e.uid, e.gid)
        if ids is not None and ids != (self.euid, self.egid):
            self._chown(e, ids, target, pfd)
        if record is not None and pfd is None:
            try:
                os.setxattr(target, ROOTLESS_XATTR, record)
                return True
            except OSError as ex:
                log.debug("%s on %s not set: %s", ROOTLESS_XATTR, show_name(e.name), ex)
        return False

    def _chown(self, e: Entry, ids: tuple[int, int], target, pfd: int | None = None) -> None:
        """chown; uid 0 without CAP_CHOWN (some rootless setups) degrades to not chowning."""
        try:
            if pfd is None:
                os.fchown(target, *ids)
            else:
                os.chown(target, *ids, dir_fd=pfd, follow_symlinks=False)
        except (PermissionError, OSError) as ex:
            if not isinstance(ex, PermissionError) and ex.errno != errno.EINVAL:
                raise
            self.policy.chown = False
            msg = f"cannot change owners (no CAP_CHOWN?): files keep uid {self.euid}, from {show_name(e.name)} on"
            self.stats.warnings.append(msg)
            log.warning(msg)

    def _attrs_at(self, pfd: int, leaf: bytes, e: Entry, *, chmod: bool) -> None:
        """Owner, mode, xattrs, mtime of a leaf we just created that we must not open."""
        self._owner(e, leaf, pfd)
        if chmod:
            # the leaf is a node we created this instant (never a symlink): fchmodat is safe
            os.chmod(leaf, self.policy.file_mode(e.mode & 0o7777, False), dir_fd=pfd)
        if e.xattrs:
            p = b"/proc/self/fd/%d/%s" % (pfd, leaf)
            for k, v in e.xattrs.items():
                self._xattr(p, k, v, e)
        os.utime(leaf, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _xattr(self, target, key: str, value: bytes, e: Entry) -> None:
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
            log.debug("xattr %s on %s not set: %s", key, show_name(e.name), ex)

    def finish(self) -> None:
        """Directory attributes, deepest first; the root last."""
        for comps in sorted(self.dirs, key=len, reverse=True):
            e = self.dirs[comps]
            if comps:
                try:
                    pfd = self.parent_fd(comps[:-1], create=False, show=e.name)
                    fd = os.open(comps[-1], DIR_FLAGS, dir_fd=pfd)
                except (LayerError, FileNotFoundError, NotADirectoryError):
                    continue
                close = True
            else:
                fd, close = self.root_fd, False
            try:
                if comps in self.implicit:
                    continue
                if comps in self.unmark:
                    remove_xattr_fd(fd, IMPLICIT_XATTR)
                self._owner(e, fd)
                os.fchmod(fd, self.policy.file_mode(e.mode & 0o7777, True))
                for k, v in e.xattrs.items():
                    self._xattr(fd, k, v, e)
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
                if close:
                    self.tally.add(os.fstat(fd))
            finally:
                if close:
                    os.close(fd)
        if not self.root_seen:
            # the layer did not describe its root: a plain 0755 directory, marked implicit
            os.fchmod(self.root_fd, 0o755)
            set_xattr_fd(self.root_fd, IMPLICIT_XATTR, b"1")
        for comps in self.implicit:
            try:
                self.tally.add(os.fstat(self.parent_fd(comps, create=False, show=b"/".join(comps))))
            except (LayerError, OSError):
                self.tally.exact = False
        self.stats.usage = self.tally.record(os.fstat(self.root_fd))


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


def unpack_layer(stream: SupportsRead[bytes], dest: str | Path, *, limits: Limits | None = None,
                 policy: OwnerPolicy | None = None, recorder: EntryRecorder | None = None,
                 sharer: Sharer | None = None) -> LayerStats:
    """Extract one uncompressed tar stream into the existing empty directory `dest`; owners, special
    bits and device nodes as `policy` says (default: this process's, OwnerPolicy.current());
    `recorder` (engine/layer/index.py) is told every entry and sees regular files' bytes as they
    are written; `sharer` (engine/layer/dedupe.py) shares each file the recorder hashed.

    Reads up to the end-of-archive marker (the caller drains the rest for hashing; reads are
    buffered, so the stream may have been read past the marker). Raises LayerError, or the
    OSError itself for a full disk (ENOSPC, EDQUOT): the store's condition, not the layer's."""
    limits = limits or Limits.from_env()
    src = Source(stream)
    try:
        ex = _Extractor(dest, limits, policy or OwnerPolicy.current(), recorder, sharer)
    except OSError as e:
        raise LayerError(f"cannot unpack into {dest}: {e.strerror or e}") from None
    name = b""
    try:
        for entry in iter_entries(src, limits):
            name = entry.name
            ex.stats.entries += 1
            if ex.stats.entries > limits.max_entries:
                raise LayerError(f"layer has too many entries: more than {limits.max_entries}")
            ex.apply(entry, src)
        name = b""
        ex.finish()
        note = ex.policy.summary()
        if note:
            ex.stats.warnings.append(note)
            (log.warning if ex.policy.recorded else log.info)(note)
        return ex.stats
    except LayerError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        what = f"layer entry {show_name(name)}" if name else "unpacking layer"
        raise LayerError(f"{what}: {e.strerror or e}") from None
    except Exception as e:  # never anything but LayerError out of here
        what = f"layer entry {show_name(name)}" if name else "unpacking layer"
        raise LayerError(f"{what}: {type(e).__name__}: {e}") from None
    finally:
        try:
            ex.close()
        except OSError:
            pass
