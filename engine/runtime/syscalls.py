"""The Linux system calls Python 3.11's os module lacks: mount, umount2, unshare, setns,
pivot_root, sethostname, and the two prctl()s the container's processes use.

Each raises OSError with the C errno, like the os module's own calls. They are called through
_ctypes, the C half of ctypes, driven directly: `import ctypes` (its package, with types, struct
and every C type class defined) costs `container run` about 3 ms, and only four of those types
are needed here. The calls are the ones ctypes.CDLL(None, use_errno=True) with these argtypes
makes (tests/unit checks both agree); where _ctypes is missing, ctypes serves.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False        # (no typing import on run's path; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

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

_libc: Any = None


def _bind() -> Any:
    """libc's functions with their argument types: an object whose attributes are the C functions
    (mount, umount2, unshare, setns, sethostname, prctl, syscall), each setting errno for get_errno()."""
    lib: Any
    try:
        import _ctypes as C
    except ImportError:          # pragma: no cover (not CPython)
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.get_errno = ctypes.get_errno
        types: Any = (ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t)
    else:
        # what ctypes/__init__.py defines for c_int, c_ulong, c_char_p, c_size_t (unsigned long on
        # every Linux ABI) and CDLL(None, use_errno=True)'s function pointer class
        ulong = type("c_ulong", (C._SimpleCData,), {"_type_": "L"})
        types = (type("c_int", (C._SimpleCData,), {"_type_": "i"}), ulong,
                 type("c_char_p", (C._SimpleCData,), {"_type_": "z"}), ulong)
        fn: Any = type("_FuncPtr", (C.CFuncPtr,), {"_flags_": C.FUNCFLAG_CDECL | C.FUNCFLAG_USE_ERRNO,
                                                      "_restype_": types[0]})
        dlopen: Any = C.dlopen

        class Lib:
            _handle = dlopen(None, C.RTLD_LOCAL)
            get_errno = staticmethod(C.get_errno)

        lib = Lib()
        for name in ("mount", "umount2", "unshare", "setns", "sethostname", "prctl", "syscall"):
            setattr(lib, name, fn((name, lib)))
    int_t, ulong_t, str_t, size_t = types
    lib.mount.argtypes = (str_t, str_t, str_t, ulong_t, str_t)
    lib.umount2.argtypes = (str_t, int_t)
    lib.unshare.argtypes = (int_t,)
    lib.setns.argtypes = (int_t, int_t)
    lib.sethostname.argtypes = (str_t, size_t)
    lib.prctl.argtypes = (int_t, ulong_t, ulong_t, ulong_t, ulong_t)
    return lib


def libc() -> Any:
    """libc's functions, bound once (spawn() binds them before forking)."""
    global _libc
    if _libc is None:
        _libc = _bind()
    return _libc


def get_errno() -> int:
    """The errno the last of these calls left (ctypes.get_errno())."""
    return int(libc().get_errno())


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = get_errno()
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
        return get_errno()
    return 0
