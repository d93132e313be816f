"""Filesystem helpers shared by the store: durable publish, guarded delete."""

from __future__ import annotations

import os

TYPE_CHECKING = False        # (no pathlib at run time: run's fast path would pay ~5 ms for it)
if TYPE_CHECKING:
    from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the filesystem that holds `path` (Linux syncfs(2)); elsewhere, or where it fails,
    sync(2) flushes every filesystem. Used before a DB commit that makes new trees visible."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def publish_dir(tmp: Path, final: Path) -> bool:
    """Rename a fully built tree `tmp` to `final` (same filesystem).

    Returns False, and removes `tmp`, when `final` already exists (another
    process published the same content first: content addressing makes the
    two equal)."""
    try:
        os.rename(tmp, final)
    except OSError as e:
        if final.exists():
            remove_tree(tmp)
            return False
        raise e
    fsync_dir(final.parent)
    return True


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike[str], inodes: set[int] | None = None) -> None:
    """rm -rf that copes with read-only dirs (mode 0000 dirs come from layers) and never follows symlinks.
    `inodes`: add the st_ino of every non-directory unlinked (from the directory listing: no stat).

    Every directory is opened relative to its parent's fd with O_NOFOLLOW (shutil.rmtree's fd walk),
    iteratively, so a deep tree needs no recursion; and without shutil, whose import (zlib, bz2,
    lzma) would cost `run --rm` 2 ms."""
    try:
        st = os.lstat(path)          # one stat says absent, a symlink or file (unlinked), or a dir
    except FileNotFoundError:
        return
    if st.st_mode & 0o170000 != 0o040000:
        os.unlink(path)
        if inodes is not None:
            inodes.add(st.st_ino)
        return
    parent, leaf = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, str, int, list[str]]] = []     # (parent fd, name, fd, subdirs left)
    try:
        _enter(stack, pfd, leaf, inodes)
        while stack:
            dfd, name, fd, subdirs = stack[-1]
            if subdirs:
                _enter(stack, fd, subdirs.pop(), inodes)
                continue
            stack.pop()
            os.close(fd)
            try:
                os.rmdir(name, dir_fd=dfd)
            except FileNotFoundError:
                pass
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)
        os.close(pfd)


def _enter(stack: list[tuple[int, str, int, list[str]]], pfd: int, name: str, inodes: set[int] | None) -> None:
    """Open directory `name` under `pfd`, make it writable, unlink its non-directories, and push it
    with the names of its subdirectories."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    except FileNotFoundError:
        return
    stack.append((pfd, name, fd, []))
    mode = os.fstat(fd).st_mode
    if mode & 0o700 != 0o700:
        os.fchmod(fd, (mode & 0o7777) | 0o700)
    subdirs = stack[-1][3]
    with os.scandir(fd) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.name)
            else:
                try:
                    os.unlink(e.name, dir_fd=fd)
                    if inodes is not None:
                        inodes.add(e.inode())
                except FileNotFoundError:
                    pass


def remove_under(root: str | os.PathLike[str], path: str | os.PathLike[str],
                 resolved: dict[str, str] | None = None, inodes: set[int] | None = None) -> None:
    """The one guarded delete: refuses any path that is not strictly inside `root`.

    Every sweep (gc, prune, rm) goes through here (udocker's FileUtil guard). `resolved`: a dict the
    caller keeps for one sweep of many paths under the store lock, where realpath() of the root and
    of each parent directory is worked out once (the store's own directories: blobs/sha256, layers,
    snapshots...) instead of one lstat per path component per path. `inodes`: as remove_tree's."""
    cache = resolved if resolved is not None else {}
    root_s = os.fspath(root)
    root_r = cache.get(root_s)
    if root_r is None:
        root_r = cache[root_s] = os.path.realpath(root_s)
    # Resolve the parent only: the leaf itself may be a symlink, which we delete, not follow.
    norm = os.path.normpath(str(path))
    name = os.path.basename(norm)
    up = os.path.dirname(norm)
    parent = cache.get(up)
    if parent is None:
        parent = cache[up] = os.path.realpath(up)
    target = os.path.join(parent, name)
    if name in ("", ".", "..") or root_r == "/" or not target.startswith(root_r + "/"):
        from .errors import UnsafeDelete            # (only here: not on run's path)

        raise UnsafeDelete(f"refusing to delete {path}: not inside {root}")
    remove_tree(target, inodes)
