"""Snapshots: the merged rootfs of a layer chain, built by hardlinking from layers/<diffid>/.

    ensure_snapshot(store, diff_ids) -> (chain_id, path)

Each layer tree (engine.layer.unpack) holds its whiteout markers as plain files. Merging layer N onto the
snapshot under construction, per directory: first its opaque marker (`.wh..wh..opq`: every child
from lower layers goes) and whiteouts (`.wh.<name>`: `<name>` goes, subtree included), then its own
entries (style.md §9.6: "whiteouts only apply to lower layers", so no per-path bookkeeping is
needed). Markers never reach the snapshot; AUFS metadata names (`.wh..wh.*`) neither.

* Directories are created (never linked) with the layer directory's mode, owner, mtime and xattrs;
  dir over dir replaces the attributes and keeps the contents; a directory the layer only holds
  because its tar did not name it (engine.layer.unpack marks those with the user.container.implicit
  xattr) keeps the lower layer's attributes.
* Every non-directory (file, symlink, device, fifo) is a hardlink to the layer's inode (Linux links
  symlinks themselves with linkat(2) without AT_SYMLINK_FOLLOW); on EXDEV it is copied.
* Anything else at a path is removed first (file <-> dir replacement across layers).
* Every operation is relative to a directory fd opened with O_NOFOLLOW: a symlink from a lower layer
  is replaced or removed, never followed, so no layer can make the merge write outside the snapshot.

The merge runs top-down (_TopDown, "upper wins"): per directory the contributing layers are read
from the top, a name claimed by an upper layer hides it below, whiteouts hide names in the layers
below theirs, an opaque marker stops the walk; so each final entry is created exactly once and
nothing is removed (on images whose upper layers delete or replace much, several times fewer
filesystem operations). The bottom-up merge described above (_Merger, one layer after the other)
is the reference semantics and still builds snapshots whose layers hold hardlinks into lower
layers (placeholders): merge_layers falls back to it; tests hold the two to the same result.

Built in snapshots/.tmp-XXXX, renamed into place, recorded as a Snapshot row; a snapshot that
exists is returned at once (last_used updated). Call under store.lock(exclusive=False).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from container.engine.errors import LayerError, StoreError
from container.engine.image.identity import chain_ids
from container.engine.layer.unpack import (AUFS_META_PREFIX, HARDLINK_XATTR, HARDLINKS_XATTR, IMPLICIT_XATTR, OPAQUE,
                     RESERVED_XATTRS, WHITEOUT_PREFIX)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WH = os.fsdecode(WHITEOUT_PREFIX)
_OPQ = os.fsdecode(OPAQUE)
_AUFS = os.fsdecode(AUFS_META_PREFIX)


class _Merger:
    def __init__(self, count_bytes: bool = False) -> None:
        self.count_bytes = count_bytes   # a stat per file (~40% of the merge's CPU): off by default
        self.root = os.geteuid() == 0
        self.entries = 0
        self.size = 0
        self.copied = 0          # EXDEV fallbacks
        self.links: list[tuple[tuple[str, ...], str, bytes]] = []   # (dir, name, target) to lower layers
        self.root_fd = -1

    # -- removal -------------------------------------------------------------------------------
    def _remove(self, tfd: int, name: str) -> None:
        """Remove name (any type, subtree included) from target dir tfd, following nothing."""
        try:
            st = os.stat(name, dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            fd, _ = _open_readable(tfd, name, 0o700)     # mode 0000 without CAP_DAC_OVERRIDE too
            try:
                if st.st_mode & 0o700 != 0o700:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)   # our own dir inode, not shared
                self._clear_dir(fd)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=tfd)
        else:
            os.unlink(name, dir_fd=tfd)
            if self.count_bytes and stat.S_ISREG(st.st_mode):
                self.size -= st.st_size
        self.entries -= 1

    def _clear_dir(self, fd: int) -> None:
        with os.scandir(fd) as it:
            names = [e.name for e in it]
        for n in names:
            self._remove(fd, n)

    # -- attributes ----------------------------------------------------------------------------
    def _dir_attrs(self, lfd: int, tfd: int, lst: os.stat_result, keys: list[str],
                   real_mode: int | None = None) -> None:
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
    def _xattrs(lfd: int) -> list[str]:
        try:
            return os.listxattr(lfd)
        except OSError:
            return []

    # -- copy fallback (EXDEV) -----------------------------------------------------------------
    def _copy(self, lfd: int, tfd: int, name: str, dst_name: str | None = None) -> None:
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
            self._copy(lfd, tfd, name)

    # -- the merge -----------------------------------------------------------------------------
    def merge_dir(self, lfd: int, tfd: int, rel: tuple[str, ...], keys: list[str]) -> None:
        """Apply layer directory lfd onto target directory tfd (both opened O_NOFOLLOW)."""
        with os.scandir(lfd) as it:
            ents = list(it)
        rest = []
        opaque = False
        for e in ents:
            n = e.name
            if n.startswith(_WH):
                if n == _OPQ:
                    opaque = True
                continue
            rest.append(e)
        if opaque:
            self._clear_dir(tfd)
        for e in ents:
            n = e.name
            if n.startswith(_WH) and not n.startswith(_AUFS):
                victim = n[len(_WH):]
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
        clfd, restore = _open_readable(lfd, n, 0o500)
        try:
            ctfd, old_mode = _open_readable(tfd, n, 0o700)
            try:
                if existed and old_mode is None:
                    tst = os.fstat(ctfd)
                    if tst.st_mode & 0o700 != 0o700:      # root: readable anyway, but keep it writable
                        old_mode = stat.S_IMODE(tst.st_mode)
                        os.fchmod(ctfd, old_mode | 0o700)
                keys = self._xattrs(clfd)
                self.merge_dir(clfd, ctfd, rel + (n,), keys)
                if existed and IMPLICIT_XATTR in keys:
                    if old_mode is not None:
                        os.fchmod(ctfd, old_mode)
                    # keep the lower layer's attributes; its mtime changed with the new children
                    # (umoci/tar leave an existing directory's attributes alone too)
                else:
                    self._dir_attrs(clfd, ctfd, os.fstat(clfd), keys, restore)
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
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nfd
        return fd

    def _resolve_links(self, layer: Path) -> None:
        """Hardlinks of this layer whose targets are in lower layers: link to the snapshot's inode."""
        links, self.links = self.links, []
        for rel, name, target in links:
            where = "/".join(rel + (name,))
            tcomps = [c for c in os.fsdecode(target).split("/") if c not in ("", ".", "..")]
            if not tcomps:
                raise LayerError(f"layer {layer.name[:12]}: hardlink {where} to the root directory")
            try:
                tfd = self._open_dir(tuple(tcomps[:-1]))
            except OSError:
                raise LayerError(f"layer {layer.name[:12]}: hardlink {where} -> {os.fsdecode(target)}: "
                                 f"target not found in lower layers") from None
            try:
                try:
                    tst = os.stat(tcomps[-1], dir_fd=tfd, follow_symlinks=False)
                except OSError:
                    tst = None
                if tst is None or stat.S_ISDIR(tst.st_mode):
                    raise LayerError(f"layer {layer.name[:12]}: hardlink {where} -> {os.fsdecode(target)}: "
                                     f"target {'is a directory' if tst else 'not found in lower layers'}")
                dfd = self._open_dir(rel)
                try:
                    if os.path.lexists(f"/proc/self/fd/{dfd}/{name}"):
                        self._remove(dfd, name)
                    try:
                        os.link(tcomps[-1], name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
                    except OSError as e:
                        if e.errno != errno.EXDEV:
                            raise
                        self._copy(tfd, dfd, tcomps[-1], dst_name=name)
                    self.entries += 1
                    if stat.S_ISREG(tst.st_mode):
                        self.size += tst.st_size
                finally:
                    os.close(dfd)
            finally:
                os.close(tfd)

    def merge_layer(self, layer: Path, tfd: int) -> None:
        lfd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root_fd = tfd
        try:
            keys = self._xattrs(lfd)
            self.merge_dir(lfd, tfd, (), keys)
            if self.links:
                self._resolve_links(layer)
            if IMPLICIT_XATTR not in keys:
                self._dir_attrs(lfd, tfd, os.fstat(lfd), keys)
        finally:
            os.close(lfd)


def _open_readable(pfd: int, name: str, need: int) -> tuple[int, int | None]:
    """Open directory name (no symlink followed). Without CAP_DAC_OVERRIDE a directory of mode 0000
    cannot be read: add `need` (u+rx for a layer dir, u+rwx for a snapshot dir) and return the mode
    to restore. Directories are never shared between layers and snapshots, only files are."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=pfd), None
    except PermissionError:
        pass
    path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    try:
        mode = stat.S_IMODE(os.fstat(path_fd).st_mode)
        os.chmod(f"/proc/self/fd/{path_fd}", mode | need)     # the magic link is the dir itself
        try:
            return os.open(f"/proc/self/fd/{path_fd}", _DIR_FLAGS & ~os.O_NOFOLLOW), mode
        except BaseException:
            os.chmod(f"/proc/self/fd/{path_fd}", mode)
            raise
    finally:
        os.close(path_fd)


class _Fallback(Exception):
    """The top-down merge cannot build this snapshot (a hardlink placeholder to a lower layer, or
    too many open directories): the caller empties dest and merges bottom-up instead."""


class _TopDown(_Merger):
    """Upper wins: every final entry is created exactly once.

    Per directory, the layers that contribute to it are read from the top down. A name claimed by
    a layer hides it in every lower layer; `.wh.X` hides X in the layers below its own; an opaque
    marker hides every lower layer's children of its directory. A directory merges its contents
    downward through the run of layers (top first) in which that name is a directory, cut after
    the first one that is opaque; its attributes come from the topmost layer of the run that named
    it (not IMPLICIT_XATTR), else from the lowest one (what the bottom-up merge leaves).
    Directory modes are applied after their contents, as in the bottom-up merge."""

    def merge_tree(self, layers: list[Path], tfd: int) -> None:
        fds: list[int] = []
        try:
            for layer in reversed(layers):                 # top first
                fds.append(os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            keys = [self._xattrs(fd) for fd in fds]
            if any(HARDLINKS_XATTR in k for k in keys):
                raise _Fallback("hardlink placeholder")
            self._contents(fds, tfd)
            for fd, k in zip(fds, keys):
                if IMPLICIT_XATTR not in k:
                    self._dir_attrs(fd, tfd, os.fstat(fd), k)
                    break
        finally:
            for fd in fds:
                os.close(fd)

    def _contents(self, lfds: list[int], tfd: int) -> None:
        """Fill target dir tfd from layer dirs lfds (top first), stopping after an opaque one."""
        hidden: set[str] = set()
        runs: dict[str, list[int]] = {}         # subdirectory -> layer dir fds holding it, top first
        count = self.count_bytes
        if len(lfds) == 1:
            self._single(lfds[0], tfd, runs)
            lfds = ()
        for lfd in lfds:
            with os.scandir(lfd) as it:
                ents = list(it)
            whiteouts = []
            opaque = False
            for e in ents:
                n = e.name
                if n.startswith(_WH):
                    if n == _OPQ:
                        opaque = True
                    elif not n.startswith(_AUFS):
                        whiteouts.append(n[len(_WH):])
                    continue
                if n in hidden:
                    continue
                run = runs.get(n)
                if e.is_dir(follow_symlinks=False):
                    if run is None:
                        runs[n] = [lfd]
                    else:
                        run.append(lfd)
                    continue
                hidden.add(n)                    # a non-directory: nothing below it counts
                if run is not None:
                    continue                     # ... and it ends an upper directory's run
                try:
                    os.link(n, n, src_dir_fd=lfd, dst_dir_fd=tfd, follow_symlinks=False)
                except OSError as ex:
                    if ex.errno != errno.EXDEV:
                        raise
                    self._copy(lfd, tfd, n)
                self.entries += 1
                if count and e.is_file(follow_symlinks=False):
                    self.size += e.stat(follow_symlinks=False).st_size
            if opaque:
                break
            hidden.update(whiteouts)
        for n, run in runs.items():
            self._subdir(run, tfd, n)

    def _single(self, lfd: int, tfd: int, runs: dict[str, list[int]]) -> None:
        """_contents with one contributing layer (most directories): no name can be hidden."""
        count = self.count_bytes
        link = os.link
        with os.scandir(lfd) as it:
            for e in it:
                n = e.name
                if e.is_dir(follow_symlinks=False):
                    if not n.startswith(_WH):
                        runs[n] = [lfd]
                    continue
                if n.startswith(_WH):
                    continue
                try:
                    link(n, n, src_dir_fd=lfd, dst_dir_fd=tfd, follow_symlinks=False)
                except OSError as ex:
                    if ex.errno != errno.EXDEV:
                        raise
                    self._copy(lfd, tfd, n)
                self.entries += 1
                if count and e.is_file(follow_symlinks=False):
                    self.size += e.stat(follow_symlinks=False).st_size

    def _subdir(self, parents: list[int], tfd: int, n: str) -> None:
        os.mkdir(n, 0o700, dir_fd=tfd)
        self.entries += 1
        ctfd = os.open(n, _DIR_FLAGS, dir_fd=tfd)
        opened: list[tuple[int, int | None]] = []
        try:
            for pfd in parents:
                opened.append(_open_readable(pfd, n, 0o500))
            keys = [self._xattrs(fd) for fd, _ in opened]
            if any(HARDLINKS_XATTR in k for k in keys):
                raise _Fallback("hardlink placeholder")
            self._contents([fd for fd, _ in opened], ctfd)
            src = len(opened) - 1
            for i, k in enumerate(keys):
                if IMPLICIT_XATTR not in k:
                    src = i
                    break
            fd, restore = opened[src]
            self._dir_attrs(fd, ctfd, os.fstat(fd), keys[src], restore)
        finally:
            for fd, restore in opened:
                if restore is not None:
                    os.fchmod(fd, restore)
                os.close(fd)
            os.close(ctfd)


def merge_layers_bottom_up(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Merge layer trees (base first) into the existing empty directory dest, one layer after
    the other (removals, replacements and hardlink placeholders resolved as each layer lands).

    -> (entries, bytes of regular files; 0 unless count_bytes)."""
    m = _Merger(count_bytes)
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchmod(tfd, 0o755)
        for layer in layers:
            m.merge_layer(Path(layer), tfd)
    finally:
        os.close(tfd)
    return m.entries, m.size


def merge_layers_top_down(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Same result as merge_layers_bottom_up, each final entry created once (see _TopDown).
    Raises _Fallback (dest left partly filled) where only the bottom-up merge applies."""
    m = _TopDown(count_bytes)
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchmod(tfd, 0o755)
        m.merge_tree([Path(p) for p in layers], tfd)
    except OSError as ex:
        if ex.errno in (errno.EMFILE, errno.ENFILE):     # (layers + 1) fds per level of depth
            raise _Fallback("too many open directories") from None
        raise
    finally:
        os.close(tfd)
    return m.entries, m.size


def merge_layers(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Merge layer trees (base first) into the existing empty directory dest: top-down, or
    bottom-up when a layer holds hardlinks into lower layers.

    -> (entries, bytes of regular files; 0 unless count_bytes)."""
    try:
        return merge_layers_top_down(layers, dest, count_bytes=count_bytes)
    except _Fallback:
        pass
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _Merger()._clear_dir(tfd)
    finally:
        os.close(tfd)
    return merge_layers_bottom_up(layers, dest, count_bytes=count_bytes)


def ensure_snapshot(store, diff_ids: list[str]) -> tuple[str, Path]:
    """(chain_id, path) of the merged rootfs of diff_ids; built and recorded if missing."""
    from container.cas.fsutil import publish_dir, remove_tree
    from container.schema import models as m
    from container.schema.db import write_txn

    if not diff_ids:
        raise LayerError("an image without layers has no root filesystem")
    chains = chain_ids(list(diff_ids))
    chain = chains[-1]
    final = store.snapshot_path(chain)
    store.db()
    row = m.Snapshot.get_or_none(m.Snapshot.chain_id == chain)
    if row is not None and final.is_dir():
        m.Snapshot.update(last_used=m.utcnow()).where(m.Snapshot.chain_id == chain).execute()
        return chain, final

    entries = size = None
    if not final.is_dir():
        layers = [store.layer_path(d) for d in diff_ids]
        for d, p in zip(diff_ids, layers):
            if not p.is_dir():
                raise StoreError(f"layer {d} is not unpacked in the store (run fsck or pull again)")
        store.snapshots_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=store.snapshots_dir))
        try:
            entries, size = merge_layers(layers, tmp)
        except OSError as e:
            remove_tree(tmp)
            raise LayerError(f"cannot build snapshot {chain}: {e.strerror or e}"
                             + (f" ({e.filename!r})" if e.filename else "")) from None
        except BaseException:
            remove_tree(tmp)
            raise
        publish_dir(tmp, final)      # False: another process published the same chain first

    top = m.Layer.get_or_none(m.Layer.diff_id == diff_ids[-1])
    if top is None:
        raise StoreError(f"layer {diff_ids[-1]} is not recorded in the store database")
    if size is not None:
        # file bytes the snapshot links (upper bound: whiteouts and replaced files are not
        # subtracted); counting exactly costs a stat per file
        size = sum(r.size for r in m.Layer.select(m.Layer.size).where(m.Layer.diff_id.in_(list(diff_ids))))
    with write_txn():
        (m.Snapshot.insert(chain_id=chain, parent=chains[-2] if len(chains) > 1 else None,
                           top=top.diff_id, size=size or 0, entries=entries or 0)
         .on_conflict_ignore().execute())
        m.Snapshot.update(last_used=m.utcnow()).where(m.Snapshot.chain_id == chain).execute()
    return chain, final
