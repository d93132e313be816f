"""The Linux system calls Python 3.11's os module lacks, through ctypes: mount, umount2, unshare,
setns, pivot_root, sethostname, and the two prctl()s the container's processes use.

Each raises OSError with the C errno, like the os module's own calls.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203,
                   "s390x": 217, "i686": 217, "i386": 217, "armv7l": 218, "armv6l": 218}

_libc = None


def libc():
    """libc through ctypes, loaded once (spawn() loads it before forking)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                              ctypes.c_char_p)
        lib.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        lib.unshare.argtypes = (ctypes.c_int,)
        lib.setns.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        lib.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        _libc = lib
    return _libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _b(s) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(source, target, fstype, flags: int = 0, data=None) -> None:
    _check(libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {fstype or ''} on {target}")


def umount(target, flags: int = 0, what: str = "") -> None:
    _check(libc().umount2(_b(target), flags), what or f"umount {target}")


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace `fd` (an open /proc/<pid>/ns/<kind>) refers to (0: whatever kind it is)."""
    _check(libc().setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(libc().syscall(nr, _b(new_root), _b(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    h = name.encode()
    _check(libc().sethostname(h, len(h)), "sethostname")


def set_pdeathsig(signum: int) -> None:
    """Be sent `signum` when the parent dies (best effort, as before: the result is not checked)."""
    libc().prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def capbset_drop(cap: int) -> int:
    """Drop `cap` from the bounding set; 0, or the errno (EINVAL: beyond the kernel's last one)."""
    if libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
        return ctypes.get_errno()
    return 0
