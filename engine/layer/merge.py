"""Merging layer trees into one rootfs by hardlinks, whiteouts applied: the reference bottom-up merge.

    merge_layers_bottom_up(layers, dest) -> (entries, bytes)
    merge_onto(layers, dest, entries) -> (entries, bytes)    # onto the merge of the layers below

Each layer tree (engine/layer/unpack.py) holds its whiteout markers as plain files. Merging layer N
onto the snapshot under construction, per directory: first its opaque marker (`.wh..wh..opq`: every
child from lower layers goes) and whiteouts (`.wh.<name>`: `<name>` goes, subtree included), then
its own entries (style.md §9.6: "whiteouts only apply to lower layers", so no per-path bookkeeping
is needed). Markers never reach the snapshot; AUFS metadata names (`.wh..wh.*`) neither.

* Directories are created (never linked) with the layer directory's mode, owner, mtime and xattrs;
  dir over dir replaces the attributes and keeps the contents; a directory the layer only holds
  because its tar did not name it (engine/layer/unpack.py marks those with the user.container.implicit
  xattr) keeps the lower layer's attributes.
* Every non-directory (file, symlink, device, fifo) is a hardlink to the layer's inode (Linux links
  symlinks themselves with linkat(2) without AT_SYMLINK_FOLLOW); on EXDEV it is copied.
* Anything else at a path is removed first (file <-> dir replacement across layers).
* Every operation is relative to a directory fd opened with O_NOFOLLOW: a symlink from a lower layer
  is replaced or removed, never followed, so no layer can make the merge write outside the snapshot.

This merge (Merger, one layer after the other) is the reference semantics, and the only one that
resolves layers holding hardlinks into lower layers (placeholders). The faster top-down merge
(engine/layer/topdown.py) reuses its filesystem steps; tests hold the two to the same result.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from container.engine.errors import LayerError
from container.engine.layer.tar import AUFS_META_PREFIX, OPAQUE, WHITEOUT_PREFIX
from container.engine.layer.unpack import HARDLINK_XATTR, HARDLINKS_XATTR, IMPLICIT_XATTR, RESERVED_XATTRS

# A snapshot-root directory holding, while a layer merges, the lower inodes its placeholders link
# to: no layer entry reaches the snapshot under a whiteout name, and no whiteout can name it.
HOLD = ".wh..container-hold"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# the whiteout names as the str that os.scandir gives
WHITEOUT = os.fsdecode(WHITEOUT_PREFIX)
OPAQUE_MARKER = os.fsdecode(OPAQUE)
AUFS_META = os.fsdecode(AUFS_META_PREFIX)


class Merger:
    """Merges layer directories onto a target directory one layer at a time (merge_layer); its
    steps (copy_entry, set_dir_attrs, clear_dir) serve the top-down merge too. Counts entries and,
    with count_bytes, regular-file bytes."""

    def __init__(self, count_bytes: bool = False) -> None:
        self.count_bytes = count_bytes   # a stat per file (~40% of the merge's CPU): off by default
        self.root = os.geteuid() == 0
        self.entries = 0
        self.size = 0
        self.copied = 0          # EXDEV fallbacks
        self.links: list[tuple[tuple[str, ...], str, bytes]] = []   # (dir, name, target) to lower layers
        self.held: dict[bytes, str] = {}   # placeholder target -> its pre-layer inode's name in HOLD
        self.root_mode: int | None = None  # the mode the last layer that set the root's gave it
        self.root_fd = -1

    # -- removal -------------------------------------------------------------------------------
    def _remove(self, tfd: int, name: str) -> None:
        """Remove name (any type, subtree included) from target dir tfd, following nothing."""
        try:
            st = os.stat(name, dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            fd, _ = open_readable(tfd, name, 0o700)     # mode 0000 without CAP_DAC_OVERRIDE too
            try:
                if st.st_mode & 0o700 != 0o700:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)   # our own dir inode, not shared
                self.clear_dir(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=tfd)
        else:
            os.unlink(name, dir_fd=tfd)
            if self.count_bytes and stat.S_ISREG(st.st_mode):
                self.size -= st.st_size
        self.entries -= 1

    def clear_dir(self, fd: int, keep: str | None = None) -> None:
        """Remove everything inside directory fd (but `keep`), following nothing."""
        with os.scandir(fd) as it:
            names = [e.name for e in it if e.name != keep]
        for n in names:
            self._remove(fd, n)

    # -- attributes ----------------------------------------------------------------------------
    def set_dir_attrs(self, lfd: int, tfd: int, lst: os.stat_result, keys: list[str],
                      real_mode: int | None = None) -> None:
        """Give target dir tfd the xattrs (keys), owner, mode (or real_mode) and times of layer dir lfd."""
        for k in keys:
            if k in RESERVED_XATTRS:
                continue
            try:
                os.setxattr(tfd, k, os.getxattr(lfd, k))
            except OSError:
                pass
        if self.root:
            try:
                os.fchown(tfd, lst.st_uid, lst.st_gid)
            except PermissionError:
                self.root = False          # uid 0 without CAP_CHOWN
        os.fchmod(tfd, stat.S_IMODE(lst.st_mode) if real_mode is None else real_mode)
        os.utime(tfd, ns=(lst.st_atime_ns, lst.st_mtime_ns))

    @staticmethod
    def list_xattrs(lfd: int) -> list[str]:
        """The xattr names of fd lfd; [] where the filesystem has none."""
        try:
            return os.listxattr(lfd)
        except OSError:
            return []

    # -- copy fallback (EXDEV) -----------------------------------------------------------------
    def copy_entry(self, lfd: int, tfd: int, name: str, dst_name: str | None = None) -> None:
        """Copy non-directory name from layer dir lfd into tfd (as dst_name): the EXDEV fallback of a link."""
        dname = dst_name or name
        st = os.stat(name, dir_fd=lfd, follow_symlinks=False)
        self.copied += 1
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=lfd), dname, dir_fd=tfd)
        elif stat.S_ISREG(st.st_mode):
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=lfd)
            try:
                dst = os.open(dname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=tfd)
                try:
                    left = st.st_size
                    while left > 0:
                        n = os.copy_file_range(src, dst, min(left, 1 << 30)) \
                            if hasattr(os, "copy_file_range") else 0
                        if n <= 0:
                            os.write(dst, os.read(src, 1 << 20))
                            n = os.lseek(dst, 0, os.SEEK_CUR) - (st.st_size - left)
                        left -= n
                    if self.root:
                        os.fchown(dst, st.st_uid, st.st_gid)
                    os.fchmod(dst, stat.S_IMODE(st.st_mode))
                    for k in os.listxattr(src):
                        if k in RESERVED_XATTRS:
                            continue
                        try:
                            os.setxattr(dst, k, os.getxattr(src, k))
                        except OSError:
                            pass
                    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            return
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dname, 0o600, dir_fd=tfd)
        else:
            os.mknod(dname, st.st_mode, st.st_rdev, dir_fd=tfd)
        if self.root:
            os.chown(dname, st.st_uid, st.st_gid, dir_fd=tfd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dname, stat.S_IMODE(st.st_mode), dir_fd=tfd)
        os.utime(dname, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=tfd, follow_symlinks=False)

    def _link(self, lfd: int, tfd: int, name: str) -> None:
        try:
            os.link(name, name, src_dir_fd=lfd, dst_dir_fd=tfd, follow_symlinks=False)
        except FileExistsError:
            self._remove(tfd, name)
            self._link(lfd, tfd, name)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            self.copy_entry(lfd, tfd, name)

    # -- the merge -----------------------------------------------------------------------------
    def merge_dir(self, lfd: int, tfd: int, rel: tuple[str, ...], keys: list[str]) -> None:
        """Apply layer directory lfd onto target directory tfd (both opened O_NOFOLLOW)."""
        with os.scandir(lfd) as it:
            ents = list(it)
        rest = []
        opaque = False
        for e in ents:
            n = e.name
            if n.startswith(WHITEOUT):
                if n == OPAQUE_MARKER:
                    opaque = True
                continue
            rest.append(e)
        if opaque:
            self.clear_dir(tfd, keep=None if rel else HOLD)
        for e in ents:
            n = e.name
            if n.startswith(WHITEOUT) and not n.startswith(AUFS_META):
                victim = n[len(WHITEOUT):]
                if victim and victim not in (".", "..") and "/" not in victim:
                    self._remove(tfd, victim)
        placeholders = HARDLINKS_XATTR in keys
        for e in rest:
            n = e.name
            if e.is_dir(follow_symlinks=False):
                self._merge_subdir(lfd, tfd, n, rel)
                continue
            if placeholders and e.is_file(follow_symlinks=False):
                try:
                    target = os.getxattr(f"/proc/self/fd/{lfd}/{n}", HARDLINK_XATTR, follow_symlinks=False)
                except OSError:
                    target = None
                if target is not None:
                    self.links.append((rel, n, target))
                    continue
            self._link(lfd, tfd, n)
            self.entries += 1
            if self.count_bytes and e.is_file(follow_symlinks=False):
                self.size += e.stat(follow_symlinks=False).st_size

    def _merge_subdir(self, lfd: int, tfd: int, n: str, rel: tuple[str, ...]) -> None:
        existed = False
        try:
            os.mkdir(n, 0o700, dir_fd=tfd)
        except FileExistsError:
            st = os.stat(n, dir_fd=tfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                existed = True
            else:
                self._remove(tfd, n)
                os.mkdir(n, 0o700, dir_fd=tfd)
        if not existed:
            self.entries += 1
        clfd, restore = open_readable(lfd, n, 0o500)
        try:
            ctfd, old_mode = open_readable(tfd, n, 0o700)
            try:
                if existed and old_mode is None:
                    tst = os.fstat(ctfd)
                    if tst.st_mode & 0o700 != 0o700:      # root: readable anyway, but keep it writable
                        old_mode = stat.S_IMODE(tst.st_mode)
                        os.fchmod(ctfd, old_mode | 0o700)
                keys = self.list_xattrs(clfd)
                self.merge_dir(clfd, ctfd, rel + (n,), keys)
                if existed and IMPLICIT_XATTR in keys:
                    if old_mode is not None:
                        os.fchmod(ctfd, old_mode)
                    # keep the lower layer's attributes; its mtime changed with the new children
                    # (umoci/tar leave an existing directory's attributes alone too)
                else:
                    self.set_dir_attrs(clfd, ctfd, os.fstat(clfd), keys, restore)
            finally:
                os.close(ctfd)
        finally:
            if restore is not None:
                os.fchmod(clfd, restore)
            os.close(clfd)

    def _open_dir(self, rel: tuple[str, ...]) -> int:
        """fd of rel inside the snapshot, no symlink followed (O_NOFOLLOW at every component)."""
        fd = os.dup(self.root_fd)
        for c in rel:
            try:
                nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nfd
        return fd

    def _hold_targets(self, lfd: int) -> int | None:
        """Before a layer holding placeholders merges (its root marked): link each placeholder's
        target, as the snapshot holds it now, into HOLD. Tar order: a link names the file as it was
        when the tar came to it, before the layer's own later change or removal of that path
        (umoci, containerd). -> HOLD's fd; None when nothing is held (then targets resolve after
        the layer, as they do for a target the layer itself adds)."""
        targets: set[bytes] = set()
        self._find_targets(lfd, targets)
        hfd = None
        for t in sorted(targets):
            src = self._lower_target(t)
            if isinstance(src, str):
                continue
            sfd, leaf = src
            try:
                if hfd is None:
                    os.mkdir(HOLD, 0o700, dir_fd=self.root_fd)
                    hfd = os.open(HOLD, DIR_FLAGS, dir_fd=self.root_fd)
                name = str(len(self.held))
                try:
                    os.link(leaf, name, src_dir_fd=sfd, dst_dir_fd=hfd, follow_symlinks=False)
                except OSError:
                    continue                # (EMLINK, ...): resolved after the layer instead
                self.held[t] = name
            finally:
                os.close(sfd)
        return hfd

    def _find_targets(self, lfd: int, out: set[bytes]) -> None:
        """The placeholder targets under layer dir lfd, through the directories marked as holding some."""
        with os.scandir(lfd) as it:
            ents = list(it)
        for e in ents:
            if e.name.startswith(WHITEOUT):
                continue
            if e.is_dir(follow_symlinks=False):
                cfd, restore = open_readable(lfd, e.name, 0o500)
                try:
                    if HARDLINKS_XATTR in self.list_xattrs(cfd):
                        self._find_targets(cfd, out)
                finally:
                    if restore is not None:
                        os.fchmod(cfd, restore)
                    os.close(cfd)
            elif e.is_file(follow_symlinks=False):
                try:
                    out.add(os.getxattr(f"/proc/self/fd/{lfd}/{e.name}", HARDLINK_XATTR, follow_symlinks=False))
                except OSError:
                    pass

    def _lower_target(self, target: bytes) -> tuple[int, str] | str:
        """(fd of its directory, name) of a placeholder's target in the snapshot as it stands, when
        that is a non-directory; else why not."""
        tcomps = [c for c in os.fsdecode(target).split("/") if c not in ("", ".", "..")]
        if not tcomps:
            return "target is the root directory"
        if any(c.startswith(WHITEOUT) for c in tcomps):
            return "target not found in lower layers"   # (no snapshot path has such a name; HOLD has)
        try:
            tfd = self._open_dir(tuple(tcomps[:-1]))
        except OSError:
            return "target not found in lower layers"
        try:
            st = os.stat(tcomps[-1], dir_fd=tfd, follow_symlinks=False)
        except OSError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            os.close(tfd)
            return "target is a directory" if st is not None else "target not found in lower layers"
        return tfd, tcomps[-1]

    def _drop_hold(self, hfd: int) -> None:
        """Remove HOLD and what is left in it (links only; not snapshot entries: nothing counted)."""
        with os.scandir(hfd) as it:
            for e in list(it):
                os.unlink(e.name, dir_fd=hfd)
        os.close(hfd)
        os.rmdir(HOLD, dir_fd=self.root_fd)
        self.held = {}

    def _resolve_links(self, layer: Path, hfd: int | None) -> None:
        """Hardlinks of this layer whose targets are in lower layers: link to the inode held for the
        target before the layer merged, else to what the snapshot holds there now."""
        links, self.links = self.links, []
        for rel, name, target in links:
            where = "/".join(rel + (name,))
            held = self.held.get(target)
            src = (os.dup(hfd), held) if held is not None and hfd is not None else self._lower_target(target)
            if isinstance(src, str):
                raise LayerError(f"layer {layer.name[:12]}: hardlink {where} -> {os.fsdecode(target)}: {src}")
            tfd, leaf = src
            try:
                tst = os.stat(leaf, dir_fd=tfd, follow_symlinks=False)
                dfd = self._open_dir(rel)
                try:
                    if os.path.lexists(f"/proc/self/fd/{dfd}/{name}"):
                        self._remove(dfd, name)
                    try:
                        os.link(leaf, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except OSError as e:
                        if e.errno != errno.EXDEV:
                            raise
                        self.copy_entry(tfd, dfd, leaf, dst_name=name)
                    self.entries += 1
                    if stat.S_ISREG(tst.st_mode):
                        self.size += tst.st_size
                finally:
                    os.close(dfd)
            finally:
                os.close(tfd)

    def merge_layer(self, layer: Path, tfd: int) -> bool:
        """Merge one layer onto target dir tfd; True when it gave tfd its root's attributes."""
        lfd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root_fd = tfd
        hfd = None
        try:
            keys = self.list_xattrs(lfd)
            if HARDLINKS_XATTR in keys:
                hfd = self._hold_targets(lfd)
            self.merge_dir(lfd, tfd, (), keys)
            if self.links:
                self._resolve_links(layer, hfd)
            if hfd is not None:
                fd, hfd = hfd, None
                self._drop_hold(fd)
            if IMPLICIT_XATTR in keys:
                return False
            lst = os.fstat(lfd)
            # the root stays writable until the last layer has merged (without CAP_DAC_OVERRIDE
            # a 0555 root would refuse the next layer's entries): the caller gives it root_mode
            self.root_mode = stat.S_IMODE(lst.st_mode)
            self.set_dir_attrs(lfd, tfd, lst, keys, real_mode=self.root_mode | 0o700)
            return True
        finally:
            if hfd is not None:
                os.close(hfd)
            os.close(lfd)


def open_readable(pfd: int, name: str, need: int) -> tuple[int, int | None]:
    """Open directory name (no symlink followed). Without CAP_DAC_OVERRIDE a directory of mode 0000
    cannot be read: add `need` (u+rx for a layer dir, u+rwx for a snapshot dir) and return the mode
    to restore. Directories are never shared between layers and snapshots, only files are."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=pfd), None
    except PermissionError:
        pass
    path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    try:
        mode = stat.S_IMODE(os.fstat(path_fd).st_mode)
        os.chmod(f"/proc/self/fd/{path_fd}", mode | need)     # the magic link is the dir itself
        try:
            return os.open(f"/proc/self/fd/{path_fd}", DIR_FLAGS & ~os.O_NOFOLLOW), mode
        except BaseException:
            os.chmod(f"/proc/self/fd/{path_fd}", mode)
            raise
    finally:
        os.close(path_fd)


def merge_layers_bottom_up(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Merge layer trees (base first) into the existing empty directory dest, one layer after
    the other (removals, replacements and hardlink placeholders resolved as each layer lands).

    -> (entries, bytes of regular files; 0 unless count_bytes)."""
    m = Merger(count_bytes)
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchmod(tfd, 0o755)
        for layer in layers:
            m.merge_layer(Path(layer), tfd)
        if m.root_mode is not None:
            os.fchmod(tfd, m.root_mode)
    finally:
        os.close(tfd)
    return m.entries, m.size


def merge_onto(layers: list[Path], dest: Path, entries: int) -> tuple[int, int]:
    """Merge layer trees (base first) bottom-up onto dest, which holds the merge of the layers below
    them with `entries` entries (as merge_layers counted them): a pull merges the layers it has
    while it downloads the others, then these. The result is the merge of the whole stack.

    -> (entries, 0): file bytes are not counted (merge_layers' default)."""
    m = Merger()
    m.entries = entries
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(tfd).st_mode)
        if mode & 0o700 != 0o700:            # (without CAP_DAC_OVERRIDE: writable while we merge)
            os.fchmod(tfd, mode | 0o700)
        for layer in layers:
            m.merge_layer(Path(layer), tfd)
        if m.root_mode is not None:
            os.fchmod(tfd, m.root_mode)
        elif mode & 0o700 != 0o700:
            os.fchmod(tfd, mode)
    finally:
        os.close(tfd)
    return m.entries, m.size
