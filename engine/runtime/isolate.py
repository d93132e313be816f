"""Isolation backends: run one process in a container rootfs (Linux only; imported by `run` alone).

Two backends (style.md §9.6), chosen by `--isolation` and recorded on the container row:

namespaces  supervisor S unshares a PID namespace for its children (unshare(CLONE_NEWPID) through
            _ctypes: Python 3.11 has no os.unshare), forks B into it, its init, and at once points
            its own children back at its own PID namespace (setns: a later spawn, a restart, is
            forked afresh). B unshares NEWNS|NEWUTS|NEWIPC[|NEWNET], makes
            every mount private, mounts the rootfs (overlay with the snapshot as lower, or a bind
            of the private copy), pivot_root()s into it and detaches the old root, then mounts a
            fresh /proc, a minimal /dev (tmpfs + mknod null/zero/full/random/urandom/tty, devpts,
            shm), /sys read-only; sets the hostname; remounts / read-only for --read-only; drops
            to the user; chdirs; execve()s. All mounts live in B's mount namespace, so nothing is
            left mounted on the host, whatever happens to us. S waits for B (one fork: no middle
            process between them). Where S may not setns back (rootless: the host's PID namespace
            is not its user namespace's), a middle process A unshares everything, forks B, reports
            B's pid ("P") and exits with B's status; S waits for A.
chroot      where namespaces are unavailable: B chroot()s into the private copy (no mounts, no
            PID namespace) and does the same process setup.

Everything runs in forked children of a single-threaded supervisor, never in preexec_fn. A
CLOEXEC pipe reports an error ("E<code> <message>", "O" = the overlay mount failed, "N" = the
namespaces were refused; a middle process, A or exec's, sends the host pid of its child: "P<pid>") or
reaches EOF at B's successful execve. With -t it is a socketpair, on
which B sends ("T") the master of a pty from the container's own devpts (docs/tty.md).

The children's side (namespaces, mounts, exec) is runtime/child.py, over the libc calls of
runtime/syscalls.py; the -t pump is runtime/tty.py (imported for -t only). start() is the fork and
this protocol with any child: `container exec` (runtime/exec.py) uses it with its own.

Signals: S forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to B. B is PID 1 of its namespace, and the
kernel drops signals that PID 1 does not handle; docker users get the same trap. We emulate the
ordinary semantics instead: if B neither catches nor ignores the signal (SigCgt/SigIgn in
/proc/<pid>/status), S kills it with SIGKILL and reports 128+n for the forwarded signal n.
"""

from __future__ import annotations

import os
import sys

from container.engine.errors import CommandNotExecutable, CommandNotFound, RunError
from container.engine.runtime.child import (
    FORWARDED, container_init, namespace_child, report_failure, trace_pid)
from container.engine.runtime.options import REQUIRED, Record
from container.engine.runtime.syscalls import libc

TYPE_CHECKING = False        # (no typing import on run's path; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, Callable
    import signal
else:
    try:                     # the signal module without its enum wrappers (enum: ~1.5 ms of `run`)
        import _signal as signal
    except ImportError:      # pragma: no cover (not CPython)
        import signal


def unavailable_reason(isolation: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"container run needs Linux (namespaces, overlayfs, chroot); this host is {sys.platform}"
    if os.geteuid() != 0:                 # a user outside its namespace: userns.enter() failed
        from container.engine.runtime.userns import entry_error

        return f"container run as a user needs a user namespace: {entry_error() or 'not entered'}"
    if isolation == "namespaces" and not os.path.exists("/proc/self/ns/pid"):
        return "this kernel has no PID/mount namespaces"
    return None


def choose_isolation(requested: str) -> str:
    if requested not in ("auto", "namespaces", "chroot"):
        raise RunError(f"invalid --isolation {requested!r}: want auto, namespaces or chroot")
    if requested == "auto":
        return "namespaces" if unavailable_reason("namespaces") is None else "chroot"
    return requested


class ProcessSpec(Record):
    FIELDS = dict(argv=REQUIRED, env=REQUIRED, cwd="/", uid=0, gid=0, sgids=tuple, hostname="",
                  tty=False, interactive=False, read_only=False,
                  network="host",         # host | none
                  init=False,             # --init: B stays pid 1 as a reaper, its child execs (child.py)
                  mounts=list)            # runtime/mounts.child_mounts(): made by init before pivot_root
    __slots__ = tuple(FIELDS)
    argv: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    sgids: tuple[int, ...]
    hostname: str
    tty: bool
    interactive: bool
    read_only: bool
    network: str
    init: bool
    mounts: list[tuple]


class RootfsSpec(Record):
    # mode: overlay | copy; path: the mount point (overlay) or the private copy (copy);
    # lower: overlay's read-only lower (the snapshot); upper/work: the container's
    FIELDS = dict(mode=REQUIRED, path=REQUIRED, lower="", upper="", work="")
    __slots__ = tuple(FIELDS)
    mode: str
    path: str
    lower: str
    upper: str
    work: str


class OverlayFailed(RunError):
    """The overlay mount failed in the container's namespace: the caller falls back to a copy."""


class NamespacesUnavailable(RunError):
    """unshare() was refused (no CAP_SYS_ADMIN, seccomp, a locked-down container): with
    --isolation auto the caller falls back to chroot."""


class Running(Record):
    # pid: what S waits for (B; exec's middle process); container_pid: B in the host's PID ns;
    # _sig: the forwarded signal we emulated with SIGKILL
    FIELDS = dict(pid=REQUIRED, container_pid=REQUIRED, tty_master=None, interactive=False, _sig=0,
                  _old_handlers=dict, log=None)
    __slots__ = tuple(FIELDS)
    pid: int
    container_pid: int
    tty_master: int | None
    interactive: bool
    _sig: int
    _old_handlers: dict[signal.Signals, Any]     # signal -> the handler signal.signal() returned
    log: Any                                     # -t: the LogWriter the pty pump records into (runtime/logs.py)

    # -- signals -----------------------------------------------------------
    def _forward(self, signum, frame) -> None:
        try:
            os.kill(self.container_pid, signum)
        except ProcessLookupError:
            return
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT) and \
                not _handles(self.container_pid, signum):
            self._sig = signum
            try:
                os.kill(self.container_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        """Wait for the container process, forwarding signals; return docker's exit status.

        Signals that reached us since spawn() (while the caller was recording the start) are
        forwarded first."""
        self._old_handlers = _EARLY.pop("old", {})
        for s in FORWARDED:
            signal.signal(s, self._forward)
        for s in _EARLY.pop("pending", []):
            self._forward(s, None)
        try:
            if self.tty_master is not None:
                from container.engine.runtime.tty import pump_tty

                pump_tty(self.tty_master, self.interactive, self.log)
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except ChildProcessError:
                    status = 0
                    break
                except InterruptedError:
                    continue
        finally:
            for s, h in self._old_handlers.items():
                signal.signal(s, h)
            if self.tty_master is not None:
                os.close(self.tty_master)
        trace_pid("S: B exited")
        if self._sig:
            return 128 + self._sig
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def _handles(pid: int, signum: int) -> bool:
    """True when `pid` catches or ignores `signum` (so the kernel's PID-1 rule does not apply)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return True
    mask = 0
    for line in data.splitlines():
        if line.startswith((b"SigCgt:", b"SigIgn:")):
            mask |= int(line.split()[1], 16)
    return bool(mask & (1 << (signum - 1)))


# -- the supervisor side -------------------------------------------------------------------

_EARLY: dict = {}


def _hold_signals() -> None:
    """From spawn() on, SIGINT/SIGTERM/... are recorded, not fatal: Running.wait() forwards them
    (a Ctrl-C between the fork and wait() must not kill the supervisor and orphan the container)."""
    pending = _EARLY.setdefault("pending", [])
    if "old" not in _EARLY:
        _EARLY["old"] = {s: signal.signal(s, lambda n, f: pending.append(n)) for s in FORWARDED}


def _release_signals() -> None:
    for s, h in _EARLY.pop("old", {}).items():
        signal.signal(s, h)
    pending = _EARLY.pop("pending", [])
    for s in pending:                 # spawn failed: deliver them to ourselves as if never held
        os.kill(os.getpid(), s)


def spawn(isolation: str, rootfs: RootfsSpec, spec: ProcessSpec,
          forked: Callable[[int], None] | None = None) -> Running:
    """Start the container process; returns once it has exec'd, or raises RunError (125/126/127).
    forked(pid) is called as soon as the process exists, while it sets itself up (start())."""
    reason = unavailable_reason(isolation)
    if reason:
        raise RunError(reason)
    if spec.network == "none":
        import socket  # noqa: F401
        import struct  # noqa: F401

    if isolation != "namespaces":
        def child(w: int, slave: int | None, devnull: int | None) -> None:
            container_init(w, rootfs, spec, slave, devnull, chroot=True)

        return start(child, spec, forked=forked)

    ns = NewPidNamespace()
    if ns.usable():
        def init(w: int, slave: int | None, devnull: int | None) -> None:
            namespace_child(w, rootfs, spec, slave, devnull)

        with ns:
            return start(init, spec, forked=forked)

    def middle(w: int, slave: int | None, devnull: int | None) -> None:
        namespace_child(w, rootfs, spec, slave, devnull, middle=True)

    running = start(middle, spec)                # B's pid is known from A's report only
    if forked is not None:
        try:
            forked(running.container_pid)
        except BaseException:
            _kill_and_reap(running.container_pid, running.pid)
            raise
    return running


class NewPidNamespace:
    """`with`: the children forked inside go into a new PID namespace (unshare(CLONE_NEWPID) sets
    the caller's pid_for_children, never its own); on the way out the caller's own namespace is
    its children's again (setns), so any later fork (a retry, a restart, a pull's helper) is an
    ordinary child. NamespacesUnavailable when the kernel refuses the new namespace. usable()
    first: False where that setns back would be refused (a rootless user's namespace does not
    own the host's PID namespace): there, a middle process unshares instead (child.namespace_child)."""

    def __init__(self) -> None:
        self.fd = -1

    def usable(self) -> bool:
        from container.engine.runtime.syscalls import CLONE_NEWPID, setns

        self.fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.fd, CLONE_NEWPID)          # (a no-op that checks the permission)
            return True
        except OSError:
            os.close(self.fd)
            return False

    def __enter__(self) -> None:
        from container.engine.runtime.syscalls import CLONE_NEWPID, unshare

        try:
            unshare(CLONE_NEWPID)
        except OSError as e:
            os.close(self.fd)
            raise NamespacesUnavailable(f"cannot create namespaces ({e}); try --isolation chroot") from None

    def __exit__(self, *exc: object) -> None:
        from container.engine.runtime.syscalls import CLONE_NEWPID, setns

        try:
            setns(self.fd, CLONE_NEWPID)      # (back into the namespace we are in: not refused)
        except OSError:
            pass                              # B runs: a later fork would fail, not this spawn
        finally:
            os.close(self.fd)


def start(child: Callable[[int, int | None, int | None], None], spec: ProcessSpec,
          pty: tuple[int, int] | None = None, forked: Callable[[int], None] | None = None) -> Running:
    """Fork `child(w, slave, devnull)` (spawn()'s, or runtime/exec.py's) with the protocol above:
    the report pipe `w`, the pty's slave with -t (`pty` (master, slave) when given, else a new
    one), /dev/null for stdin without -i; held signals. forked(pid), when given, runs in the parent
    right after the fork, in parallel with the child's setup (run records "running" there); if it
    raises, the child is killed and reaped and the error goes on."""
    libc()                                   # bind libc before forking (once, in the parent)
    # B runs after pivot_root, where our Python stdlib is out of reach: import what it needs now.
    if spec.tty:
        import container.engine.runtime.tty  # noqa: F401   (termios, _socket: the pty's code)
    if spec.mounts:
        from container.engine.runtime.mounts import host_ready

        host_ready(spec.mounts)
    sys.stdout.flush()
    sys.stderr.flush()
    _hold_signals()
    try:
        return _spawn(child, spec, pty, forked)
    except BaseException:
        _release_signals()
        raise


def release_signals() -> None:
    """A detached supervisor (runtime/supervisor.py) takes the signals back right after spawn():
    it handles them itself instead of Running.wait()'s forwarding."""
    _release_signals()


def _spawn(child: Callable[[int, int | None, int | None], None], spec: ProcessSpec,
           pty: tuple[int, int] | None, forked: Callable[[int], None] | None) -> Running:
    master = slave = None
    if spec.tty:
        # the report channel is a socket, on which the container's init may send the master of
        # a pty from its own devpts (runtime/tty.py); this pair is what it uses when it cannot
        from container.engine.runtime.tty import copy_winsize, socket_pair

        r, w = socket_pair()
        master, slave = pty or os.openpty()
        os.set_inheritable(master, False)
        copy_winsize(slave)
    else:
        r, w = os.pipe2(os.O_CLOEXEC)
    devnull = None
    if not spec.interactive and not spec.tty:
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    trace_pid("S fork")
    pid = os.fork()
    if pid == 0:                                       # B (or exec's middle process)
        try:
            os.close(r)
            if master is not None:
                os.close(master)
            child(w, slave, devnull)
        except BaseException as e:                     # never return into the supervisor's code
            report_failure(w, 125, str(e))
        os._exit(125)
    os.close(w)
    if slave is not None:
        os.close(slave)
    if devnull is not None:
        os.close(devnull)
    if forked is not None:
        try:
            forked(pid)
        except BaseException:
            _kill_and_reap(pid)
            os.close(r)
            if master is not None:
                os.close(master)
            raise
    if spec.tty:
        from container.engine.runtime.tty import recv_report

        data, own = recv_report(r)
        if own is not None:                            # the container's pty replaces ours
            if master is not None:
                os.close(master)
            master = own
    else:
        data = _read_report(r)
    cpid = pid
    err = None
    for line in data.split(b"\n"):
        if line.startswith(b"P"):
            cpid = int(line[1:])
        elif line.startswith((b"E", b"O", b"N")) and err is None:
            err = line
    if err is not None:
        _reap(pid)
        if master is not None:
            os.close(master)
        text = err.decode("utf-8", "replace")
        if text.startswith("O"):
            raise OverlayFailed(text[1:])
        if text.startswith("N"):
            raise NamespacesUnavailable(text[1:])
        code_s, _, msg = text[1:].partition(" ")
        code = int(code_s) if code_s.isdigit() else 125
        cls = {126: CommandNotExecutable, 127: CommandNotFound}.get(code, RunError)
        raise cls(msg)
    return Running(pid=pid, container_pid=cpid, tty_master=master, interactive=spec.interactive)


def _kill_and_reap(pid: int, child: int = 0) -> None:
    """SIGKILL `pid` and reap it (or `child`, our child that waits for it)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(child or pid)


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


def _read_report(r: int) -> bytes:
    """What the children said on the report pipe until its EOF (the execve); closes it."""
    data = b""
    while True:
        try:
            chunk = os.read(r, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    os.close(r)
    return data

