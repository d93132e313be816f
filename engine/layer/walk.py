"""The directories under a layer root, opened as fds one component at a time, never following a
symlink; a symlink this layer made in a parent path resolved inside the tree first.

    tree = DirTree(dest, limits)
    fd = tree.parent_fd((b"usr", b"lib"), create=True, show=name)      # Missing / IsSymlink / LayerError
    fd, real = tree.dir_fd((b"app", b"etc"), create=True, show=name)   # app -> /opt/app: real == (b"opt", b"app", b"etc")

The extractor (engine/layer/unpack.py) is a DirTree. Directories it creates because an entry
needs them are marked IMPLICIT_XATTR and listed in `implicit`. Part of the security boundary
(docs/security.md): every fd is opened with O_NOFOLLOW|O_DIRECTORY relative to its parent's, from
the root; link targets are resolved by engine/layer/paths.resolve_links, never by the kernel.
"""

from __future__ import annotations

import errno
import os
import stat

from container.engine.errors import LayerError
from container.engine.layer.paths import resolve_links
from container.engine.layer.tar import Limits, show_name

IMPLICIT_XATTR = "user.container.implicit"   # set on directories the tar did not name (see merge.py)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Missing(LayerError):
    """A path component that does not exist (where creating it is not wanted)."""


class IsSymlink(LayerError):
    """A path component that is a symlink (dir_fd resolves the path to one without)."""


class DirTree:
    """A cache of directory fds under `dest`, keyed by path components (the root is ())."""

    def __init__(self, dest: bytes, limits: Limits):
        self.limits = limits
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fds: dict[tuple[bytes, ...], int] = {(): self.root_fd}
        self.implicit: set[tuple[bytes, ...]] = set()

    def forget_fds(self, prefix: tuple[bytes, ...]) -> None:
        """Close the cached fds at or under prefix (it was removed)."""
        n = len(prefix)
        for k in [k for k in self.fds if k[:n] == prefix and k != ()]:
            os.close(self.fds.pop(k))
        self.implicit = {k for k in self.implicit if k[:n] != prefix}

    def close(self) -> None:
        for k, fd in self.fds.items():
            if k != ():
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = {(): self.root_fd}
        os.close(self.root_fd)

    def parent_fd(self, comps: tuple[bytes, ...], *, create: bool, show: bytes) -> int:
        """fd of the directory comps (inside dest), opened without following any symlink."""
        fd = self.fds.get(comps)
        if fd is not None:
            return fd
        if len(self.fds) > 256:
            for k in list(self.fds)[:128]:
                if k != ():
                    os.close(self.fds.pop(k))
        i = len(comps)
        while i > 0 and comps[:i] not in self.fds:
            i -= 1
        fd = self.fds[comps[:i]]
        for j in range(i, len(comps)):
            c = comps[j]
            try:
                nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise Missing(f"layer entry {show_name(show)}: {show_name(b'/'.join(comps[:j + 1]))} "
                                     f"does not exist") from None
                os.mkdir(c, 0o755, dir_fd=fd)
                nfd = os.open(c, DIR_FLAGS, dir_fd=fd)
                self.implicit.add(comps[:j + 1])
                set_xattr_fd(nfd, IMPLICIT_XATTR, b"1")
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    kind = IsSymlink if _is_link(fd, c) else LayerError
                    raise kind(f"layer entry {show_name(show)}: parent {show_name(b'/'.join(comps[:j + 1]))} "
                                     f"is not a directory (a symlink or file); refusing to write "
                                     f"through it") from None
                raise
            self.fds[comps[:j + 1]] = nfd
            fd = nfd
        return fd

    def dir_fd(self, comps: tuple[bytes, ...], *, create: bool, show: bytes) -> tuple[int, tuple[bytes, ...]]:
        """(fd, path) of the directory comps, a symlink among them resolved inside the tree first."""
        try:
            return self.parent_fd(comps, create=create, show=show), comps
        except IsSymlink:
            pass
        real = resolve_links(comps, self.link_at, show)
        if len(real) >= self.limits.max_depth:
            raise LayerError(f"layer entry {show_name(show)}: deeper than {self.limits.max_depth} directories")
        return self.parent_fd(real, create=create, show=show), real

    def link_at(self, comps: tuple[bytes, ...]) -> bytes | None:
        """The target of the symlink at comps (its parents free of symlinks), None if none is there."""
        try:
            fd = self.parent_fd(comps[:-1], create=False, show=b"/".join(comps))
            return os.readlink(comps[-1], dir_fd=fd)
        except (LayerError, OSError):
            return None


def _is_link(dir_fd: int, name: bytes) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def set_xattr_fd(fd: int, key: str, value: bytes) -> None:
    """Set an xattr on an fd, quietly not where the filesystem has none."""
    try:
        os.setxattr(fd, key, value)
    except OSError:
        pass


def remove_xattr_fd(fd: int, key: str) -> None:
    """Remove an xattr from an fd, quietly where it is not there."""
    try:
        os.removexattr(fd, key)
    except OSError:
        pass


def chmod_dir_at(pfd: int, leaf: bytes, mode: int) -> None:
    """chmod the directory leaf of pfd through an fd opened without following a symlink."""
    fd = os.open(leaf, DIR_FLAGS, dir_fd=pfd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def rmtree_at(pfd: int, leaf: bytes) -> None:
    """Remove the directory leaf (relative to pfd) and everything under it, following no symlink."""
    fd = os.open(leaf, DIR_FLAGS, dir_fd=pfd)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        with os.scandir(fd) as it:
            names = [(os.fsencode(d.name), d.is_dir(follow_symlinks=False)) for d in it]
        for name, is_dir in names:
            if is_dir:
                rmtree_at(fd, name)
            else:
                os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(leaf, dir_fd=pfd)
