"""The top-down ("upper wins") merge: the same snapshot as engine/layer/merge.py, each final entry
created exactly once.

    merge_layers_top_down(layers, dest) -> (entries, bytes)     TopDownUnsupported: merge bottom-up

Per directory the contributing layers are read from the top, a name claimed by an upper layer
hides it below, whiteouts hide names in the layers below theirs, an opaque marker stops the walk;
so nothing is removed (on images whose upper layers delete or replace much, several times fewer
filesystem operations). A layer holding hardlinks into lower layers (placeholders) is left to
the bottom-up merge.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from container.engine.layer.merge import AUFS_META, DIR_FLAGS, OPAQUE_MARKER, WHITEOUT, Merger, open_readable
from container.engine.layer.unpack import HARDLINKS_XATTR, IMPLICIT_XATTR


class TopDownUnsupported(Exception):
    """The top-down merge cannot build this snapshot (a hardlink placeholder to a lower layer, or
    too many open directories): the caller empties dest and merges bottom-up instead."""


class TopDownMerger(Merger):
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
            keys = [self.list_xattrs(fd) for fd in fds]
            if any(HARDLINKS_XATTR in k for k in keys):
                raise TopDownUnsupported("hardlink placeholder")
            self._contents(fds, tfd)
            for fd, k in zip(fds, keys):
                if IMPLICIT_XATTR not in k:
                    self.set_dir_attrs(fd, tfd, os.fstat(fd), k)
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
            lfds = []
        for lfd in lfds:
            with os.scandir(lfd) as it:
                ents = list(it)
            whiteouts = []
            opaque = False
            for e in ents:
                n = e.name
                if n.startswith(WHITEOUT):
                    if n == OPAQUE_MARKER:
                        opaque = True
                    elif not n.startswith(AUFS_META):
                        whiteouts.append(n[len(WHITEOUT):])
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
                    self.copy_entry(lfd, tfd, n)
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
                    if not n.startswith(WHITEOUT):
                        runs[n] = [lfd]
                    continue
                if n.startswith(WHITEOUT):
                    continue
                try:
                    link(n, n, src_dir_fd=lfd, dst_dir_fd=tfd, follow_symlinks=False)
                except OSError as ex:
                    if ex.errno != errno.EXDEV:
                        raise
                    self.copy_entry(lfd, tfd, n)
                self.entries += 1
                if count and e.is_file(follow_symlinks=False):
                    self.size += e.stat(follow_symlinks=False).st_size

    def _subdir(self, parents: list[int], tfd: int, n: str) -> None:
        os.mkdir(n, 0o700, dir_fd=tfd)
        self.entries += 1
        ctfd = os.open(n, DIR_FLAGS, dir_fd=tfd)
        opened: list[tuple[int, int | None]] = []
        try:
            for pfd in parents:
                opened.append(open_readable(pfd, n, 0o500))
            keys = [self.list_xattrs(fd) for fd, _ in opened]
            if any(HARDLINKS_XATTR in k for k in keys):
                raise TopDownUnsupported("hardlink placeholder")
            self._contents([fd for fd, _ in opened], ctfd)
            src = len(opened) - 1
            for i, k in enumerate(keys):
                if IMPLICIT_XATTR not in k:
                    src = i
                    break
            fd, restore = opened[src]
            self.set_dir_attrs(fd, ctfd, os.fstat(fd), keys[src], restore)
        finally:
            for fd, restore in opened:
                if restore is not None:
                    os.fchmod(fd, restore)
                os.close(fd)
            os.close(ctfd)


def merge_layers_top_down(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Same result as merge_layers_bottom_up, each final entry created once (see TopDownMerger).
    Raises TopDownUnsupported (dest left partly filled) where only the bottom-up merge applies."""
    m = TopDownMerger(count_bytes)
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchmod(tfd, 0o755)
        m.merge_tree([Path(p) for p in layers], tfd)
    except OSError as ex:
        if ex.errno in (errno.EMFILE, errno.ENFILE):     # (layers + 1) fds per level of depth
            raise TopDownUnsupported("too many open directories") from None
        raise
    finally:
        os.close(tfd)
    return m.entries, m.size
