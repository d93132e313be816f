"""A rootless container's /proc, /dev and /sys, mounted inside its rootfs before pivot_root.

In a user namespace the kernel mounts a new proc only while a proc is visible in the mount
namespace, refuses a new sysfs without a network namespace of our own, binds only from mounts
attached to our namespace, and never lets us mknod. So, while the host's tree is still there
(runtime/child.py calls premount() between the rootfs mount and pivot_root):

    /proc  a new proc (the container's PID namespace)
    /dev   a tmpfs with the host's null, zero, full, random, urandom and tty bind-mounted on empty
           files (podman's way), the usual symlinks, devpts, shm, mqueue (child.setup_dev)
    /sys   the host's, bound recursively and remounted read-only (with the flags the kernel locked
           on it: nosuid, nodev, noexec)

Every target is reached through an O_PATH fd opened with O_NOFOLLOW relative to the rootfs and
mounted on as /proc/self/fd/N: a /proc, /dev or /sys that the image made a symlink (to a host
path, as seen before pivot_root) is replaced by a directory in the container's own upper layer,
never followed. The masking of /proc (child._protect_kernel_paths) runs after pivot_root as for root.
"""

from __future__ import annotations

import os
import stat

from container.engine.runtime.child import DEVICES, setup_dev
from container.engine.runtime.syscalls import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC,
                                               MS_REMOUNT, mount)

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _dir_in(root_fd: int, name: str) -> int:
    """An O_PATH fd of the directory root/name, made one (in the container's layer) when it is
    missing or anything but a directory."""
    try:
        st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=root_fd)
            raise FileNotFoundError
    except FileNotFoundError:
        os.mkdir(name, 0o755, dir_fd=root_fd)
    return os.open(name, _DIR, dir_fd=root_fd)


def premount(target: str) -> None:
    """/proc, /dev, /sys in the rootfs mounted at `target` (module docstring)."""
    host = {name: os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC) for name, _, _ in DEVICES}
    sys_fd = os.open("/sys", _DIR)
    root_fd = os.open(target, _DIR)
    fds = list(host.values()) + [sys_fd, root_fd]
    try:
        fd = _dir_in(root_fd, "proc")
        fds.append(fd)
        mount("proc", _fd_path(fd), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        fd = _dir_in(root_fd, "dev")
        fds.append(fd)
        mount("tmpfs", _fd_path(fd), "tmpfs", MS_NOSUID, "mode=755,size=65536k")
        dev = os.open("dev", _DIR, dir_fd=root_fd)          # the tmpfs now on top
        fds.append(dev)
        setup_dev(_fd_path(dev), host)
        fd = _dir_in(root_fd, "sys")
        fds.append(fd)
        mount(_fd_path(sys_fd), _fd_path(fd), None, MS_BIND | MS_REC)
        st = os.statvfs("/sys")
        locked = ((MS_NOSUID if st.f_flag & os.ST_NOSUID else 0) | (MS_NODEV if st.f_flag & os.ST_NODEV else 0)
                  | (MS_NOEXEC if st.f_flag & os.ST_NOEXEC else 0))
        sysm = os.open("sys", _DIR, dir_fd=root_fd)
        fds.append(sysm)
        mount(None, _fd_path(sysm), None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)
    finally:
        for fd in fds:
            os.close(fd)
