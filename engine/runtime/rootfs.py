"""A container's root filesystem: never the shared snapshot itself (design.md invariant 5).

    ROOT/containers/<id>/
        lock            flock'ed by the supervisor while the container runs (gc/prune respect it)
        upper/ work/    overlay: the container's writes; the snapshot is the read-only lower
        rootfs/         overlay: the mount point (mounted only inside the container's own mount
                        namespace, so the host never sees it and nothing leaks if we die);
                        copy: a private copy of the snapshot (data copied, never hardlinked)

`overlay` is the default; `copy` is used where overlay is unavailable (the isolator reports a
failed mount and the caller falls back) and by the chroot backend, which has no private mount
namespace to mount in.
"""

from __future__ import annotations

import os
import stat

from container.engine.errors import RunError


# The device nodes a private copy may keep (null, zero, full, random, urandom, tty): what docker's
# device cgroup allows by default. The chroot backend has no nodev mount to neutralise the others.
SAFE_DEVICES = frozenset(os.makedev(1, n) for n in (3, 5, 7, 8, 9)) | {os.makedev(5, 0)}


def overlay_dirs(cdir: str) -> dict[str, str]:
    out = {}
    for key, sub in (("upper", "upper"), ("work", "work"), ("path", "rootfs")):
        out[key] = os.path.join(cdir, sub)
        os.mkdir(out[key], 0o755)
    return out


def make_copy(snapshot, cdir) -> str:
    """A private copy of `snapshot` at cdir/rootfs; returns its path."""
    dst = os.path.join(cdir, "rootfs")
    try:
        if os.path.lexists(dst):
            from container.cas.fsutil import remove_tree

            remove_tree(dst)
        copy_tree(str(snapshot), str(dst))
    except OSError as e:
        raise RunError(f"cannot copy the rootfs for the container: {e}") from None
    return str(dst)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for n in names:
        try:
            os.setxattr(dst, n, os.getxattr(src, n, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass


def _copy_file(src: str, dst: str, st: os.stat_result) -> None:
    fi = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            left = st.st_size
            while left > 0:
                try:
                    n = os.copy_file_range(fi, fo, left)
                except OSError:
                    n = os.sendfile(fo, fi, None, left)
                if n == 0:
                    break
                left -= n
        finally:
            os.close(fo)
    finally:
        os.close(fi)


def copy_tree(src: str, dst: str, *, exists: bool = False) -> None:
    """Copy a rootfs: files, dirs, symlinks, devices, fifos; owners, modes, mtimes, xattrs.
    exists: `dst` is an empty directory already (a volume's copy-up), which takes src's owner and mode.

    Every regular file gets its own new inode (hardlinks inside the snapshot are shared with
    layers/, so linking would write through)."""
    root_uid = os.geteuid() == 0
    st = os.lstat(src)
    if not exists:
        os.mkdir(dst, 0o700)
    dirs: list[tuple[str, str, os.stat_result]] = [(src, dst, st)]
    todo = [(src, dst)]
    while todo:
        s_dir, d_dir = todo.pop()
        with os.scandir(s_dir) as it:
            for e in it:
                s, d = e.path, os.path.join(d_dir, e.name)
                st = e.stat(follow_symlinks=False)
                m = st.st_mode
                if stat.S_ISDIR(m):
                    os.mkdir(d, 0o700)
                    dirs.append((s, d, st))
                    todo.append((s, d))
                    continue
                if stat.S_ISREG(m):
                    _copy_file(s, d, st)
                elif stat.S_ISLNK(m):
                    os.symlink(os.readlink(s), d)
                elif stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m):
                    if not root_uid and not stat.S_ISFIFO(m):
                        continue
                    if not stat.S_ISFIFO(m) and (not stat.S_ISCHR(m) or st.st_rdev not in SAFE_DEVICES):
                        continue        # an image's dev/sda would open the host's disk under chroot
                    try:
                        os.mknod(d, m, st.st_rdev)
                    except PermissionError:     # a user namespace: no device nodes (its /dev has binds)
                        continue
                else:
                    continue            # sockets
                _meta(s, d, st, root_uid)
    for s, d, st in reversed(dirs):
        _meta(s, d, st, root_uid)


def _meta(s: str, d: str, st: os.stat_result, root_uid: bool) -> None:
    link = stat.S_ISLNK(st.st_mode)
    if root_uid:
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
    _copy_xattrs(s, d)
    if not link:
        os.chmod(d, stat.S_IMODE(st.st_mode))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
