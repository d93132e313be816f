"""Filesystem helpers shared by the store: durable publish, guarded delete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UnsafeDelete


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _make_writable(path: str) -> None:
    try:
        st = os.lstat(path)
        import stat
        if stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o700) != 0o700:
            os.chmod(path, st.st_mode | 0o700)
    except OSError:
        pass


def remove_tree(path: Path | str) -> None:
    """rm -rf that copes with read-only dirs (mode 0000 dirs come from layers) and never follows symlinks."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return

    def onexc(func: object, p: str, exc: object) -> None:
        parent = os.path.dirname(p)
        _make_writable(parent)
        _make_writable(p)
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass

    _make_writable(str(path))
    shutil.rmtree(path, onerror=lambda f, p, e: onexc(f, p, e))


def remove_under(root: Path, path: Path) -> None:
    """The one guarded delete: refuses any path that is not strictly inside `root`.

    Every sweep (gc, prune, rm) goes through here (udocker's FileUtil guard)."""
    root_r = Path(os.path.realpath(root))
    # Resolve the parent only: the leaf itself may be a symlink, which we delete, not follow.
    name = os.path.basename(os.path.normpath(str(path)))
    parent = Path(os.path.realpath(os.path.dirname(os.path.normpath(str(path)))))
    target = parent / name
    if (name in ("", ".", "..") or target == root_r or root_r not in target.parents
            or len(root_r.parts) < 2):
        raise UnsafeDelete(f"refusing to delete {path}: not inside {root}")
    remove_tree(target)
