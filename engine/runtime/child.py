"""The container's side of a spawn: what the forked children do between fork() and execve().

B (namespaces: the init of the PID namespace the supervisor unshared for it; chroot: a plain child)
unshares its other namespaces (namespace_init), sets up the rootfs (overlay or bind, pivot_root, /proc,
/dev, /sys, the /etc files docker writes), drops capabilities, switches user, execve()s. Errors
go to the supervisor over a CLOEXEC pipe as one line (report_failure); the protocol is described
in runtime/isolate.py. Nothing here may return into the supervisor's code.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from container.engine.runtime.options import DEFAULT_PATH
from container.engine.runtime.syscalls import (
    CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, MNT_DETACH, MS_BIND, MS_NODEV,
    MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, capbset_drop, mount, pivot_root,
    set_pdeathsig, sethostname, umount, unshare)

TYPE_CHECKING = False        # (no typing import on run's path; mypy reads this block as true)
if TYPE_CHECKING:
    from container.engine.runtime.isolate import ProcessSpec, RootfsSpec
    import signal
else:
    try:                     # the signal module without its enum wrappers (enum: ~1.5 ms of `run`)
        import _signal as signal
    except ImportError:      # pragma: no cover (not CPython)
        import signal

_TRACE = bool(os.environ.get("CONTAINER_TRACE"))

# What a root container keeps (podman's default set; docker's adds MKNOD, NET_RAW, AUDIT_WRITE, which
# rely on a device cgroup and a private network that we do not have). Everything else, SYS_ADMIN,
# SYS_MODULE, SYS_RAWIO, DAC_READ_SEARCH (open_by_handle_at), SYS_PTRACE, SYS_BOOT, NET_ADMIN...,
# leaves the bounding set before exec, so the container's root cannot remount or unmask /proc,
# mknod the host's disks or load modules. chroot loses SYS_CHROOT too (chroot escapes need it).
KEEP_CAPS = {0: "CHOWN", 1: "DAC_OVERRIDE", 3: "FOWNER", 4: "FSETID", 5: "KILL", 6: "SETGID", 7: "SETUID",
             8: "SETPCAP", 10: "NET_BIND_SERVICE", 18: "SYS_CHROOT", 31: "SETFCAP"}
# docker's default read-only and masked paths (moby oci/defaults.go; /proc/interrupts since moby
# 28): the kernel's global knobs are read-only, what leaks the host's hardware and kernel state
# reads empty (a dir under an empty read-only tmpfs, a file under /dev/null). Applied once /proc,
# /dev and /sys are mounted. The chroot backend mounts no /proc nor /sys: nothing to mask there.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def trace_pid(what: str) -> None:
    """CONTAINER_TRACE=1, in the forked processes: os.write, with the pid (run.py's trace() is the
    supervisor's)."""
    if _TRACE:
        import time

        t0 = float(os.environ.get("CONTAINER_TRACE_T0") or 0)
        os.write(2, f"trace {(time.perf_counter() - t0) * 1000:7.2f} ms  (cpu {time.process_time() * 1000:6.1f})  "
                    f"[{os.getpid()}] {what}\n".encode())


def report_failure(w: int, code: int, msg: str, tag: str = "E") -> None:
    try:
        line = f"{tag}{code} {msg}".replace("\n", " ") + "\n"
        if tag in ("O", "N"):
            line = f"{tag}{msg}".replace("\n", " ") + "\n"
        os.write(w, line.encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(code)


def namespace_child(w: int, rootfs: RootfsSpec, spec: ProcessSpec, slave, devnull, *, middle: bool = False) -> None:
    """B, forked by the supervisor into the PID namespace it unshared for its children
    (isolate.NewPidNamespace), that namespace's init: unshares its own mount, UTS, IPC (with
    --network none, network) namespaces and sets the container up. middle: A, where the supervisor
    cannot make the PID namespace (rootless): unshares the PID namespace too, forks B, reports
    B's host pid and exits with B's status."""
    if middle:
        for s in FORWARDED:
            signal.signal(s, signal.SIG_IGN)
    set_pdeathsig(signal.SIGKILL)           # (B: getppid() is 0 here, the supervisor is outside)
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (CLONE_NEWPID if middle else 0)
    if spec.network == "none":
        flags |= CLONE_NEWNET
    trace_pid("A start" if middle else "B start")
    try:
        unshare(flags)
    except OSError as e:
        report_failure(w, 125, f"cannot create namespaces ({e}); try --isolation chroot", tag="N")
    trace_pid("unshared")
    if not middle:
        container_init(w, rootfs, spec, slave, devnull, chroot=False)
    pid = os.fork()
    if pid == 0:
        try:
            set_pdeathsig(signal.SIGKILL)
            container_init(w, rootfs, spec, slave, devnull, chroot=False)
        except BaseException as e:
            report_failure(w, 125, str(e))
        os._exit(125)
    hand_over(w, pid, slave, devnull)
    exit_with(pid, "A: B exited")


def hand_over(w: int, pid: int, slave, devnull) -> None:
    """The middle process (a rootless run's A, exec's X1) once the container's process is forked: its host pid to
    the supervisor ("P<pid>"), our copies of the pipe, the pty's slave and /dev/null closed."""
    try:
        os.write(w, b"P%d\n" % pid)
    except OSError:
        pass
    os.close(w)
    if slave is not None:
        os.close(slave)
    if devnull is not None:
        os.close(devnull)


def exit_with(pid: int, what: str) -> None:
    """Wait for `pid` and _exit with its status (128+n when signal n killed it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    trace_pid(what)
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def container_init(w: int, rootfs: RootfsSpec, spec: ProcessSpec, slave, devnull, *, chroot: bool) -> None:
    for s in FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    if chroot:
        os.chroot(rootfs.path)
        os.chdir("/")
    else:
        _setup_namespaces(w, rootfs, spec)
        if spec.tty:                      # the container's own pty (runtime/tty.py, loaded already)
            from container.engine.runtime.tty import own_pty

            slave = own_pty(w, slave, spec.uid)
    try:
        os.makedirs(spec.cwd, exist_ok=True)
    except OSError as e:
        if not spec.read_only or not os.path.isdir(spec.cwd):
            report_failure(w, 125, f"cannot create working directory {spec.cwd}: {e.strerror}")
    if spec.read_only and not chroot:
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV)
    start_process(w, spec, slave, devnull, chroot=chroot, pdeathsig=True)


def start_process(w: int, spec: ProcessSpec, slave, devnull, *, chroot: bool, pdeathsig: bool) -> None:
    """What `run`'s init and `exec`'s process (runtime/exec.py) do once inside the container's
    root: capabilities out of the bounding set, the pty (setsid, controlling tty) or stdin, the
    user, SIGKILL at the parent's death, the working directory, execve (126/127 as docker)."""
    ppid = os.getppid()
    _drop_capabilities(w, chroot)
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
        try:
            os.setgroups(list(spec.sgids) or [spec.gid])
        except PermissionError:
            if not in_userns():            # rootless with a single id: setgroups is denied there
                raise
        os.setgid(spec.gid)
        os.setuid(spec.uid)
    except OSError as e:
        report_failure(w, 125, f"cannot switch to user {spec.uid}:{spec.gid}: {e.strerror}")
    if pdeathsig:
        # (after the user switch, which clears it) the container dies with its supervisor, chroot
        # included: a detached one's supervisor killed -9 leaves no process that `ps` calls exited
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != ppid:          # the parent died before the signal was armed: go too
            os._exit(137)
    try:
        os.chdir(spec.cwd)
    except OSError as e:
        report_failure(w, 125, f"cannot chdir to working directory {spec.cwd}: {e.strerror}")
    trace_pid("B exec")
    if spec.init:
        _init(w, spec)
    _exec(w, spec.argv, spec.env)


def _init(w: int, spec: ProcessSpec) -> None:
    """--init: B stays the PID namespace's init (this Python, already loaded: nothing to find in
    the image), forks the command, forwards it every signal it is sent and reaps every zombie
    that the namespace reparents to it; exits with the command's status (128+n if killed by n),
    as tini does. The command's exec reports through `w` as without --init."""
    child = os.fork()
    if child == 0:
        _exec(w, spec.argv, spec.env)
    os.close(w)

    def forward(signum, frame) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for s in FORWARDED + (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGCONT):
        signal.signal(s, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _exec(w: int, argv: list[str], env: list[str]) -> None:
    envd = {}
    for kv in env:
        k, _, v = kv.partition("=")
        envd[k] = v
    file = argv[0]
    if not file:
        report_failure(w, 127, 'exec: "": executable file not found in $PATH')
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
                    report_failure(w, 127, f"exec {file}: no such file or directory")
                continue
            if e.errno in (errno.EACCES, errno.EISDIR, errno.EPERM):
                denied = (path, "permission denied" if e.errno != errno.EISDIR else "is a directory")
                if "/" in file:
                    break
                continue
            if e.errno == errno.ENOEXEC:
                report_failure(w, 126, f"exec {path}: exec format error")
            report_failure(w, 126, f"exec {path}: {e.strerror}")
    if denied:
        report_failure(w, 126, f"exec {denied[0]}: {denied[1]}")
    report_failure(w, 127, f'exec: "{file}": executable file not found in $PATH')


def _setup_namespaces(w: int, rootfs: RootfsSpec, spec: ProcessSpec) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    trace_pid("B rprivate")
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
                report_failure(w, 125, str(e), tag="O")
    else:
        mount(target, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NODEV)
    trace_pid("B rootfs mounted")
    mounted: list[str] = []
    if spec.mounts:                       # -v/--mount/--tmpfs: targets resolved inside the rootfs
        from container.engine.runtime.mounts import apply_mounts

        mounted = apply_mounts(target, spec.mounts)
        trace_pid("B volumes mounted")
    etc_files = _etc_files(spec)          # read from the host before it goes out of reach
    userns = in_userns()
    if userns:
        # in a user namespace the kernel mounts a new proc only where one is visible, refuses sysfs
        # without a network namespace of our own and mknod always: /proc, /dev and /sys are set
        # up inside the rootfs before the host's tree goes away (runtime/usermounts.py)
        from container.engine.runtime.usermounts import premount

        premount(target)
    oldroot = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(target)
    pivot_root(".", ".")
    os.fchdir(oldroot)
    os.close(oldroot)
    umount(".", MNT_DETACH, "umount old root")
    os.chdir("/")
    trace_pid("B pivoted, old root detached")
    # Before /proc, /dev and /sys exist in here: the image may ship /etc/hosts (or /etc) as a
    # symlink to /proc/sys/kernel/core_pattern or /proc/sysrq-trigger, and a write that follows
    # it must land in the overlay, not in the host kernel's global settings.
    _write_etc(etc_files, mounted)
    if not userns:
        _mkdir("/proc")
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        trace_pid("B proc")
        _mkdir("/dev")
        mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
        setup_dev("/dev", None)
        trace_pid("B dev")
        _mkdir("/sys")
        try:
            mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:
            pass
    _protect_kernel_paths(w)
    trace_pid("B /proc and /sys protected")
    if spec.hostname:
        sethostname(spec.hostname)
    if spec.network == "none":
        _lo_up()
    trace_pid("B sys, hostname, net")


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


def _write_etc(files: dict[str, bytes], mounted: list[str] | tuple[str, ...] = ()) -> None:
    """Write them after pivot_root and before any special filesystem is mounted: every path (and
    symlink) then resolves inside the container's own rootfs, which holds nothing but the image's
    files. An image without /etc, or with a read-only or odd one, simply keeps what it has. A file
    that resolves into a user's mount (-v /host/etc:/etc) is left as the user has it: never
    written on the host."""
    if not os.path.isdir("/etc"):
        return
    for name, data in files.items():
        if mounted:
            real = os.path.realpath(name)
            if any(real == m or real.startswith(m.rstrip("/") + "/") for m in mounted):
                continue
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


def _protect_kernel_paths(w: int) -> None:
    """Read-only binds over the kernel's global knobs, /dev/null or an empty read-only tmpfs over
    what leaks host data. Failing to protect /proc/sys or /proc/sysrq-trigger fails the run."""
    for p in READONLY_PATHS:
        try:
            mount(p, p, None, MS_BIND | MS_REC)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT or not os.path.lexists(p):
                continue
            if p in ("/proc/sys", "/proc/sysrq-trigger"):
                report_failure(w, 125, f"cannot make {p} read-only: {e}")
    for p in MASKED_PATHS:
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
    for cap in range(last + 1):
        if cap in keep:
            continue
        e = capbset_drop(cap)
        if e:
            if e == errno.EINVAL:          # beyond this kernel's last capability
                break
            if e != errno.EPERM:           # EPERM: we do not hold SETPCAP, so we hold little to drop
                report_failure(w, 125, f"cannot drop capability {cap}: {os.strerror(e)}")


DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))


def in_userns() -> bool:
    """True in a rootless user's namespace (engine/runtime/userns.enter)."""
    from container.engine.locate import USERNS_ENV     # (loaded already: no import on run's path)

    return bool(os.environ.get(USERNS_ENV))


def setup_dev(dev: str, host: dict[str, int] | None) -> None:
    """The minimal /dev in the tmpfs mounted at `dev`: nodes made (root), or the host's bound from
    `host` {name: O_PATH fd} (rootless), the usual symlinks, pts, shm, mqueue."""
    old = os.umask(0)
    try:
        for name, major, minor in DEVICES:
            if host is not None:
                os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
                mount(f"/proc/self/fd/{host[name]}", f"{dev}/{name}", None, MS_BIND)
            else:
                os.mknod(f"{dev}/{name}", 0o20666, os.makedev(major, minor))
        for src, dst in (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                         ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"),
                         ("pts/ptmx", "ptmx"), ("/proc/kcore", "core")):
            os.symlink(src, f"{dev}/{dst}")
        os.mkdir(f"{dev}/pts", 0o755)
        os.mkdir(f"{dev}/shm", 0o1777)
        os.mkdir(f"{dev}/mqueue", 0o755)
    finally:
        os.umask(old)
    for opts in ("newinstance,ptmxmode=0666,mode=0620,gid=5", "newinstance,ptmxmode=0666,mode=0620"):
        try:                              # (gid 5 is not mapped in a single-id user namespace)
            mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, opts)
            break
        except OSError:
            pass
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    try:
        mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
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
