"""Isolation backends: run one process in a container rootfs (Linux only; imported by `run` alone).

Two backends (style.md §9.6), chosen by `--isolation` and recorded on the container row:

namespaces  supervisor S forks A; A calls unshare(NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET]) through
            ctypes (Python 3.11 has no os.unshare) and forks B, the PID namespace's init. B makes
            every mount private, mounts the rootfs (overlay with the snapshot as lower, or a bind
            of the private copy), pivot_root()s into it and detaches the old root, then mounts a
            fresh /proc, a minimal /dev (tmpfs + mknod null/zero/full/random/urandom/tty, devpts,
            shm), /sys read-only; sets the hostname; remounts / read-only for --read-only; drops
            to the user; chdirs; execve()s. All mounts live in B's mount namespace, so nothing is
            left mounted on the host, whatever happens to us. A only waits for B and exits with
            its status: S waits for A.
chroot      where namespaces are unavailable: B chroot()s into the private copy (no mounts, no
            PID namespace) and does the same process setup.

Everything runs in forked children of a single-threaded supervisor, never in preexec_fn. A
CLOEXEC pipe reports either B's host pid ("P") or an error ("E<code> <message>", "O" = the
overlay mount failed) and reaches EOF at B's successful execve.

Signals: S forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to B. B is PID 1 of its namespace, and the
kernel drops signals that PID 1 does not handle; docker users get the same trap. We emulate the
ordinary semantics instead: if B neither catches nor ignores the signal (SigCgt/SigIgn in
/proc/<pid>/status), S kills it with SIGKILL and reports 128+n for the forwarded signal n.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import stat
import sys
from container.engine.errors import CommandNotExecutable, CommandNotFound, RunError
from container.engine.runtime.record import REQUIRED, Record

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
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

# What a root container keeps (podman's default set; docker's adds MKNOD, NET_RAW, AUDIT_WRITE, which
# rely on a device cgroup and a private network that we do not have). Everything else, SYS_ADMIN,
# SYS_MODULE, SYS_RAWIO, DAC_READ_SEARCH (open_by_handle_at), SYS_PTRACE, SYS_BOOT, NET_ADMIN...,
# leaves the bounding set before exec, so the container's root cannot remount or unmask /proc,
# mknod the host's disks or load modules. chroot loses SYS_CHROOT too (chroot escapes need it).
KEEP_CAPS = {0: "CHOWN", 1: "DAC_OVERRIDE", 3: "FOWNER", 4: "FSETID", 5: "KILL", 6: "SETGID", 7: "SETUID",
             8: "SETPCAP", 10: "NET_BIND_SERVICE", 18: "SYS_CHROOT", 31: "SETFCAP"}
# docker's read-only and masked /proc paths: the kernel's global knobs are not the container's
PROC_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROC_MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
               "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
               "/sys/devices/virtual/powercap")

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203,
                   "s390x": 217, "i686": 217, "i386": 217, "armv7l": 218, "armv6l": 218}

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

_libc = None
_TRACE = os.environ.get("CONTAINER_TRACE")


def _t(what: str) -> None:
    if _TRACE:
        import time
        os.write(2, f"trace {time.perf_counter() * 1000:12.2f} [{os.getpid()}] {what}\n".encode())


def libc():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                              ctypes.c_char_p)
        lib.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        lib.unshare.argtypes = (ctypes.c_int,)
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


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(libc().syscall(nr, _b(new_root), _b(put_old)), "pivot_root")


def unavailable_reason(isolation: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"container run needs Linux (namespaces, overlayfs, chroot); this host is {sys.platform}"
    if os.geteuid() != 0:
        return "container run needs root (rootless user namespaces are not implemented yet)"
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
                  network="host")         # host | none
    __slots__ = tuple(FIELDS)


class RootfsSpec(Record):
    # mode: overlay | copy; path: the mount point (overlay) or the private copy (copy);
    # lower: overlay's read-only lower (the snapshot); upper/work: the container's
    FIELDS = dict(mode=REQUIRED, path=REQUIRED, lower="", upper="", work="")
    __slots__ = tuple(FIELDS)


class OverlayFailed(RunError):
    """The overlay mount failed in the container's namespace: the caller falls back to a copy."""


class NamespacesUnavailable(RunError):
    """unshare() was refused (no CAP_SYS_ADMIN, seccomp, a locked-down container): with
    --isolation auto the caller falls back to chroot."""


class Running(Record):
    # pid: A (namespaces) or B (chroot), what S waits for; container_pid: B in the host's PID ns;
    # _sig: the forwarded signal we emulated with SIGKILL
    FIELDS = dict(pid=REQUIRED, container_pid=REQUIRED, tty_master=None, interactive=False, _sig=0,
                  _old_handlers=dict)
    __slots__ = tuple(FIELDS)

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
                _pump_tty(self.tty_master, self.interactive)
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
        _t("S: A exited")
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


def spawn(isolation: str, rootfs: RootfsSpec, spec: ProcessSpec) -> Running:
    """Start the container process; returns once it has exec'd, or raises RunError (125/126/127)."""
    reason = unavailable_reason(isolation)
    if reason:
        raise RunError(reason)
    libc()                                   # load ctypes before forking (once, in the parent)
    # B runs after pivot_root, where our Python stdlib is out of reach: import what it needs now.
    if spec.tty:
        import termios  # noqa: F401
    if spec.network == "none":
        import socket  # noqa: F401
        import struct  # noqa: F401
    sys.stdout.flush()
    sys.stderr.flush()
    _hold_signals()
    try:
        return _spawn(isolation, rootfs, spec)
    except BaseException:
        _release_signals()
        raise


def _spawn(isolation: str, rootfs: RootfsSpec, spec: ProcessSpec) -> Running:
    r, w = os.pipe2(os.O_CLOEXEC)
    master = slave = None
    if spec.tty:
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        _copy_winsize(slave)
    devnull = None
    if not spec.interactive and not spec.tty:
        devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    _t("S fork")
    pid = os.fork()
    if pid == 0:                                       # A (namespaces) or B (chroot)
        try:
            os.close(r)
            if master is not None:
                os.close(master)
            if isolation == "namespaces":
                _child_a(w, rootfs, spec, slave, devnull)
            else:
                _child_b(w, rootfs, spec, slave, devnull, chroot=True)
        except BaseException as e:                     # never return into the supervisor's code
            _fail(w, 125, str(e))
        os._exit(125)
    os.close(w)
    if slave is not None:
        os.close(slave)
    if devnull is not None:
        os.close(devnull)
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
    cpid = pid
    err = None
    for line in data.split(b"\n"):
        if line.startswith(b"P"):
            cpid = int(line[1:])
        elif line.startswith((b"E", b"O", b"N")) and err is None:
            err = line
    if err is not None:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
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


def _fail(w: int, code: int, msg: str, tag: str = "E") -> None:
    try:
        line = f"{tag}{code} {msg}".replace("\n", " ") + "\n"
        if tag in ("O", "N"):
            line = f"{tag}{msg}".replace("\n", " ") + "\n"
        os.write(w, line.encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(code)


def _child_a(w: int, rootfs: RootfsSpec, spec: ProcessSpec, slave, devnull) -> None:
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)
    lib = libc()
    lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
    if spec.network == "none":
        flags |= CLONE_NEWNET
    _t("A start")
    try:
        unshare(flags)
    except OSError as e:
        _fail(w, 125, f"cannot create namespaces ({e}); try --isolation chroot", tag="N")
    _t("A unshared")
    pid = os.fork()
    if pid == 0:
        try:
            lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)   # (getppid() is 0 here: A is outside)
            _child_b(w, rootfs, spec, slave, devnull, chroot=False)
        except BaseException as e:
            _fail(w, 125, str(e))
        os._exit(125)
    try:
        os.write(w, b"P%d\n" % pid)
    except OSError:
        pass
    os.close(w)
    if slave is not None:
        os.close(slave)
    if devnull is not None:
        os.close(devnull)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    _t("A: B exited")
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _child_b(w: int, rootfs: RootfsSpec, spec: ProcessSpec, slave, devnull, *, chroot: bool) -> None:
    for s in FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    if chroot:
        os.chroot(rootfs.path)
        os.chdir("/")
    else:
        _setup_namespaces(w, rootfs, spec)
    try:
        os.makedirs(spec.cwd, exist_ok=True)
    except OSError as e:
        if not spec.read_only or not os.path.isdir(spec.cwd):
            _fail(w, 125, f"cannot create working directory {spec.cwd}: {e.strerror}")
    _drop_capabilities(w, chroot)
    if spec.read_only and not chroot:
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV)
    if spec.tty:
        os.setsid()
        import termios
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
    elif devnull is not None:
        os.dup2(devnull, 0)
        os.close(devnull)
    try:
        os.setgroups(list(spec.sgids) or [spec.gid])
        os.setgid(spec.gid)
        os.setuid(spec.uid)
    except OSError as e:
        _fail(w, 125, f"cannot switch to user {spec.uid}:{spec.gid}: {e.strerror}")
    if not chroot:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        os.chdir(spec.cwd)
    except OSError as e:
        _fail(w, 125, f"cannot chdir to working directory {spec.cwd}: {e.strerror}")
    _t("B exec")
    _exec(w, spec.argv, spec.env)


def _exec(w: int, argv: list[str], env: list[str]) -> None:
    envd = {}
    for kv in env:
        k, _, v = kv.partition("=")
        envd[k] = v
    file = argv[0]
    if not file:
        _fail(w, 127, 'exec: "": executable file not found in $PATH')
    if "/" in file:
        candidates = [file]
    else:
        candidates = [os.path.join(d or ".", file) for d in envd.get("PATH", DEFAULT_PATH).split(":")]
    denied = None
    for path in candidates:
        try:
            os.execve(path, argv, envd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                if "/" in file:
                    _fail(w, 127, f"exec {file}: no such file or directory")
                continue
            if e.errno in (errno.EACCES, errno.EISDIR, errno.EPERM):
                denied = (path, "permission denied" if e.errno != errno.EISDIR else "is a directory")
                if "/" in file:
                    break
                continue
            if e.errno == errno.ENOEXEC:
                _fail(w, 126, f"exec {path}: exec format error")
            _fail(w, 126, f"exec {path}: {e.strerror}")
    if denied:
        _fail(w, 126, f"exec {denied[0]}: {denied[1]}")
    _fail(w, 127, f'exec: "{file}": executable file not found in $PATH')


def _setup_namespaces(w: int, rootfs: RootfsSpec, spec: ProcessSpec) -> None:
    _t("B start")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    _t("B rprivate")
    target = rootfs.path
    # nodev: device nodes that came with the image cannot be opened through the rootfs (there is
    # no device cgroup here); the container's /dev is a fresh tmpfs with the usual few devices.
    if rootfs.mode == "overlay":
        data = f"lowerdir={rootfs.lower},upperdir={rootfs.upper},workdir={rootfs.work}"
        # volatile (Linux 5.10+): no syncfs of the upper's filesystem when the overlay goes away
        # (at the exit of the container's last process: tens of ms on ext4, in `run`'s critical
        # path). Safe here because an upper dir is never mounted again: every run is a new
        # container. Older kernels reject the option: retry without it.
        try:
            mount("overlay", target, "overlay", MS_NODEV, data + ",volatile")
        except OSError:
            try:
                mount("overlay", target, "overlay", MS_NODEV, data)
            except OSError as e:
                _fail(w, 125, str(e), tag="O")
    else:
        mount(target, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NODEV)
    _t("B rootfs mounted")
    etc_files = _etc_files(spec)          # read from the host before it goes out of reach
    oldroot = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(target)
    pivot_root(".", ".")
    os.fchdir(oldroot)
    os.close(oldroot)
    _check(libc().umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _t("B pivoted, old root detached")
    # Before /proc, /dev and /sys exist in here: the image may ship /etc/hosts (or /etc) as a
    # symlink to /proc/sys/kernel/core_pattern or /proc/sysrq-trigger, and a write that follows
    # it must land in the overlay, not in the host kernel's global settings.
    _write_etc(etc_files)
    _mkdir("/proc")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _t("B proc")
    _setup_dev()
    _t("B dev")
    _protect_proc(w)
    _t("B /proc protected")
    _mkdir("/sys")
    try:
        mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass
    if spec.hostname:
        h = spec.hostname.encode()
        _check(libc().sethostname(h, len(h)), "sethostname")
    if spec.network == "none":
        _lo_up()
    _t("B sys, hostname, net")


def _etc_files(spec: ProcessSpec) -> dict[str, bytes]:
    """docker's /etc/hostname, /etc/hosts and /etc/resolv.conf (host network: the host's)."""
    out = {}
    if spec.hostname:
        out["/etc/hostname"] = spec.hostname.encode() + b"\n"
    local = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if spec.network == "host":
        for name in ("/etc/hosts", "/etc/resolv.conf"):
            try:
                with open(name, "rb") as f:
                    out[name] = f.read(1 << 20)
            except OSError:
                pass
        out.setdefault("/etc/hosts", local)
    else:
        out["/etc/hosts"] = local + (b"127.0.0.1\t" + spec.hostname.encode() + b"\n" if spec.hostname else b"")
    return out


def _write_etc(files: dict[str, bytes]) -> None:
    """Write them after pivot_root and before any special filesystem is mounted: every path (and
    symlink) then resolves inside the container's own rootfs, which holds nothing but the image's
    files. An image without /etc, or with a read-only or odd one, simply keeps what it has."""
    if not os.path.isdir("/etc"):
        return
    for name, data in files.items():
        try:
            # O_NONBLOCK: a fifo planted by the image must not hang the run (ENXIO, skipped)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            os.ftruncate(fd, 0)
            os.write(fd, data)
        except OSError:
            pass
        finally:
            os.close(fd)


def _mkdir(path: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _protect_proc(w: int) -> None:
    """Read-only binds over the kernel's global knobs, /dev/null or an empty read-only tmpfs over
    what leaks host data. Failing to protect /proc/sys or /proc/sysrq-trigger fails the run."""
    for p in PROC_READONLY:
        try:
            mount(p, p, None, MS_BIND | MS_REC)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT or not os.path.lexists(p):
                continue
            if p in ("/proc/sys", "/proc/sysrq-trigger"):
                _fail(w, 125, f"cannot make {p} read-only: {e}")
    for p in PROC_MASKED:
        try:
            if os.path.isdir(p):
                mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
            elif os.path.exists(p):
                mount("/dev/null", p, None, MS_BIND)
        except OSError:
            pass


def _drop_capabilities(w: int, chroot: bool) -> None:
    keep = set(KEEP_CAPS) - ({18} if chroot else set())
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    lib = libc()
    for cap in range(last + 1):
        if cap in keep:
            continue
        if lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            e = ctypes.get_errno()
            if e == errno.EINVAL:          # beyond this kernel's last capability
                break
            if e != errno.EPERM:           # EPERM: we do not hold SETPCAP, so we hold little to drop
                _fail(w, 125, f"cannot drop capability {cap}: {os.strerror(e)}")


def _setup_dev() -> None:
    _mkdir("/dev")
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    old = os.umask(0)
    try:
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                   ("urandom", 1, 9), ("tty", 5, 0)):
            os.mknod(f"/dev/{name}", 0o20666, os.makedev(major, minor))
        for src, dst in (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                         ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                         ("pts/ptmx", "ptmx"), ("/proc/kcore", "core")):
            os.symlink(src, f"/dev/{dst}")
        os.mkdir("/dev/pts", 0o755)
        os.mkdir("/dev/shm", 0o1777)
        os.mkdir("/dev/mqueue", 0o755)
    finally:
        os.umask(old)
    try:
        mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5")
    except OSError:
        pass
    mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    try:
        mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass


def _lo_up() -> None:
    import socket
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


# -- tty -----------------------------------------------------------------------------------

def _copy_winsize(slave: int) -> None:
    try:
        import termios
        ws = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, ws)
    except (OSError, ValueError):
        pass


def _pump_tty(master: int, interactive: bool) -> None:
    """Copy stdin -> pty and pty -> stdout until the container's side closes (raw mode on a tty)."""
    import select
    import termios
    import tty as ttymod

    stdin = sys.stdin.fileno()
    saved = None
    if interactive and os.isatty(stdin):
        try:
            saved = termios.tcgetattr(stdin)
            ttymod.setraw(stdin)
        except termios.error:
            saved = None
    fds = [master, stdin] if interactive else [master]
    try:
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if stdin in ready:
                try:
                    data = os.read(stdin, 65536)
                except OSError:
                    data = b""
                if not data:
                    fds.remove(stdin)
                else:
                    os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
