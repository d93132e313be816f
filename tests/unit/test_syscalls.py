"""runtime/syscalls.py (libc through _ctypes, without the ctypes package) and isolate's
NewPidNamespace: the calls behave as ctypes' own, and a supervisor's later forks are ordinary."""

import ctypes
import errno
import os
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux system calls")

from container.engine.runtime import syscalls  # noqa: E402

PR_CAPBSET_READ = 23


def _ctypes_libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    lib.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return lib


def test_same_results_and_errno_as_ctypes(tmp_path):
    ours, theirs = syscalls.libc(), _ctypes_libc()
    for path in (b"/nonexistent/x", str(tmp_path).encode()):      # ENOENT; EINVAL or EPERM: not a mount
        assert ours.umount2(path, 0) == theirs.umount2(path, 0) == -1
        a = syscalls.get_errno()
        theirs.umount2(path, 0)
        assert a == ctypes.get_errno() != 0
    for cap in (0, 21, 40, 5000):                # held or not; 5000: beyond the last one (EINVAL)
        assert ours.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == theirs.prctl(PR_CAPBSET_READ, cap, 0, 0, 0)
    assert syscalls.capbset_drop(5000) == errno.EINVAL


def test_errors_are_oserror_with_the_errno():
    with pytest.raises(OSError) as e:
        syscalls.mount("/nonexistent/src", "/nonexistent/dst", None, syscalls.MS_BIND)
    assert e.value.errno == errno.ENOENT and "/nonexistent/dst" in str(e.value)


def _in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(fn())
        except BaseException:
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_unshare_and_sethostname():
    def child() -> int:
        syscalls.unshare(syscalls.CLONE_NEWUTS)
        syscalls.sethostname("syscalls-test")
        return 0 if os.uname().nodename == "syscalls-test" else 1

    before = os.uname().nodename
    assert _in_child(child) == 0
    assert os.uname().nodename == before


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_new_pid_namespace_is_for_the_forks_inside_only():
    from container.engine.runtime.isolate import NewPidNamespace

    def supervisor() -> int:                      # (in a child, so pytest's own forks stay ordinary)
        own = os.readlink("/proc/self/ns/pid")
        for _ in range(2):                        # twice: a fallback spawn, a restart
            ns = NewPidNamespace()
            if not ns.usable():                   # (root in the host's namespaces: it is)
                return 4
            with ns:
                inside = _in_child(lambda: 0 if os.getpid() == 1 else 1)
            if inside != 0 or os.readlink("/proc/self/ns/pid_for_children") != own:
                return 1
            if _in_child(lambda: 0 if os.getpid() != 1 and os.readlink("/proc/self/ns/pid") == own else 1) != 0:
                return 2
        return 0 if os.readlink("/proc/self/ns/pid") == own else 3

    assert _in_child(supervisor) == 0
