"""`container exec`: a new process in a running container (docker exec), from the Container row
(pid, isolation, config) and /proc alone, whoever started the container (a foreground `run`, a
detached supervisor).

    row "running" (its supervisor holds the lock) -> the container's init, found from the row's pid
    (that pid, or a descendant: the process whose NSpid ends in 1, in a PID namespace not ours; for
    chroot, the process rooted in the container's rootfs), pinned by a pidfd and checked against
    the row's start time (a recycled pid is never entered) -> its namespaces that differ from ours
    (user, ipc, uts, net, pid, cgroup, mnt) and its root (/proc/<pid>/root) opened -> user, env,
    workdir resolved against that root -> E (us) forks X1: setns() into each, forks X2 (a fork is
    what enters a PID namespace) and waits for it; X2 chroot()s to the init's root, then does what
    `run`'s init does (runtime/child.start_process: capabilities, pty, user, cwd, execve).

The mount namespace already has the container's /proc, /dev, masked and read-only paths: X2 sees
what the init sees. E is runtime/isolate.start()'s supervisor: the report pipe, -t's pty pump,
signals forwarded to X2. X1 and X2 die with E (PR_SET_PDEATHSIG), and with the container's init
(the kernel kills a PID namespace's processes when its init exits). With -d, X1 exits once X2 has
exec'd and X2 lives on (setsid, stdio on /dev/null) until it ends or the container does.

Rootless, the exec process is left outside any user namespace (cli/app.main()) and joins the
container's first (join_user_namespace(): a namespace of its own would be a sibling without
rights over the container's); from there on it is root's exec.

Exit codes as docker exec: the command's; 126 it cannot be started (not executable, bad user or
working directory); 127 not found; 1 no such container or not running.
"""

from __future__ import annotations

import os
import signal

from container.engine.errors import CommandNotExecutable, Conflict, RunError
from container.engine.runtime.child import FORWARDED, exit_with, hand_over, report_failure, start_process
from container.engine.runtime.options import DEFAULT_PATH, REQUIRED, Record, RunOptions, merge_env, user_env
from container.engine.runtime.syscalls import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS,
    set_pdeathsig, setns)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from container.engine.containers import ContainerInfo
    from container.engine.runtime.isolate import ProcessSpec

# the order runc's nsenter joins them: the user namespace first (it grants the rights to join the
# others), the mount namespace last (/proc/<pid>/... is opened before, from the host's view)
NAMESPACES = (("user", CLONE_NEWUSER), ("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET),
              ("pid", CLONE_NEWPID), ("cgroup", CLONE_NEWCGROUP), ("mnt", CLONE_NEWNS))
START_SLACK = 2.0      # seconds: /proc's start time (clock ticks, btime in whole seconds) vs the row's


class ExecOptions(Record):
    """docker exec's options (cli/exec.py fills it)."""
    FIELDS = dict(container=REQUIRED, command=REQUIRED, env=list, env_files=list, workdir=None, user=None,
                  interactive=False, tty=False, detach=False)
    __slots__ = tuple(FIELDS)
    container: str
    command: list[str]
    env: list[str]
    env_files: list[str]
    workdir: str | None
    user: str | None
    interactive: bool
    tty: bool
    detach: bool


class Target(Record):
    """What X1/X2 enter: (fd, CLONE_NEW* flag, name) of each namespace to join, the init's root."""
    FIELDS = dict(pid=REQUIRED, namespaces=list, root=REQUIRED, chroot=False)
    __slots__ = tuple(FIELDS)
    pid: int
    namespaces: list[tuple[int, int, str]]
    root: int
    chroot: bool

    def close(self) -> None:
        for fd, _, _ in self.namespaces:
            os.close(fd)
        os.close(self.root)


# -- finding the container's init --------------------------------------------------------------

def _status_field(pid: int, key: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split()[1:]
    except OSError:
        pass
    return None


def _same(a: str, b: str) -> bool:
    """Two /proc paths name the same file (namespace, directory)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def _is_init(pid: int, info: ContainerInfo) -> bool:
    if info.isolation == "chroot":
        # rooted in the container's private copy, not in ours
        return not _same(f"/proc/{pid}/root", "/proc/self/root") and \
            _same(f"/proc/{pid}/root", os.path.join(info.path, "rootfs"))
    nspid = _status_field(pid, "NSpid")
    return nspid is not None and len(nspid) > 1 and nspid[-1] == "1" and \
        not _same(f"/proc/{pid}/ns/pid", "/proc/self/ns/pid")


def find_init(info: ContainerInfo) -> int:
    """The host pid of the container's init: the row's pid, or the first descendant (a supervisor's
    child, --init's reaper's parent...) that is it, a few levels down at most."""
    level = [info.pid] if info.pid else []
    for _ in range(4):
        for pid in level:
            if _is_init(pid, info):
                return pid
        level = [c for pid in level for c in _children(pid)]
    raise Conflict(f"container {info.name} is not running (no process of it found)")


def _start_time(pid: int) -> float | None:
    """When `pid` started, in seconds since the epoch (from /proc/<pid>/stat and btime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _started_at(started: object) -> float | None:
    import datetime as dt

    if isinstance(started, str):
        try:
            started = dt.datetime.fromisoformat(started)
        except ValueError:
            return None
    if not isinstance(started, dt.datetime):
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)
    return started.timestamp()


def open_target(info: ContainerInfo) -> Target:
    """The init's namespaces (those that are not ours) and root, opened; Conflict when it is gone
    or when the pid now names a process that started after the container did (recycled)."""
    if info.status != "running":
        raise Conflict(f"container {info.name} is not running")
    pid = find_init(info)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        raise Conflict(f"container {info.name} is not running") from None
    fds: list[tuple[int, int, str]] = []
    root = -1
    try:
        began, started = _start_time(pid), _started_at(info.started)
        if began is None or (started is not None and began > started + START_SLACK):
            raise Conflict(f"container {info.name} is not running (pid {pid} is another process)")
        for name, flag in NAMESPACES:
            path = f"/proc/{pid}/ns/{name}"
            if not os.path.exists(path) or _same(path, f"/proc/self/ns/{name}"):
                continue
            fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag, name))
        root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        signal.pidfd_send_signal(pidfd, 0)     # still alive: what we opened was that process's
    except BaseException as e:
        for fd, _, _ in fds:
            os.close(fd)
        if root >= 0:
            os.close(root)
        if isinstance(e, (ProcessLookupError, FileNotFoundError)):      # it exited meanwhile
            raise Conflict(f"container {info.name} is not running") from None
        raise
    finally:
        os.close(pidfd)
    return Target(pid=pid, namespaces=fds, root=root, chroot=info.isolation == "chroot")


# -- the process -----------------------------------------------------------------------------

def process_spec(info: ContainerInfo, opts: ExecOptions, target: Target) -> ProcessSpec:
    """argv, env, cwd and user of the new process: the container's env (recorded at create) with
    --env-file and -e over it, TERM=xterm with -t; -w else the container's working directory; -u
    else the container's user, resolved in the container's own /etc/passwd and /etc/group. HOME
    follows the exec user unless it was set explicitly (docker: runc sets it when unset)."""
    from container.engine.runtime.isolate import ProcessSpec
    from container.engine.runtime.users import resolve_user

    if not opts.command:
        raise RunError("exec needs a command to run in the container", exit_code=1)
    cfg = info.config
    workdir = opts.workdir if opts.workdir is not None else (cfg.get("workdir") or "/")
    if not workdir.startswith("/"):
        raise CommandNotExecutable(f"the working directory '{workdir}' is invalid, it needs to be an "
                                   f"absolute path")
    root = f"/proc/self/fd/{target.root}"
    run_user = cfg.get("user") or ""
    try:
        user = resolve_user(root, opts.user or run_user)        # (-u "": the container's, as docker)
    except RunError as e:
        raise CommandNotExecutable(str(e)) from None
    env = list(cfg.get("env") or [f"PATH={DEFAULT_PATH}"])
    if opts.user:
        try:
            run_home = resolve_user(root, run_user).home
        except RunError:
            run_home = None
        env = [f"HOME={user.home}" if kv == f"HOME={run_home}" else kv for kv in env]
    if opts.tty and not any(kv.startswith("TERM=") for kv in env):
        env.append("TERM=xterm")
    extra = user_env(RunOptions(image=info.image, env=list(opts.env), env_files=list(opts.env_files)))
    env = merge_env(env, extra)
    if not any(kv.startswith("HOME=") for kv in env):
        env.append(f"HOME={user.home}")
    tty = opts.tty and not opts.detach
    return ProcessSpec(argv=list(opts.command), env=env, cwd=workdir, uid=user.uid, gid=user.gid,
                       sgids=user.sgids, tty=tty, interactive=opts.interactive and not opts.detach)


def exec_in(store, opts: ExecOptions) -> int:
    """Run opts.command in the container; its exit status (0 at once with -d). Raises
    ContainerNotFound, Conflict (not running), CommandNotExecutable (126), CommandNotFound (127)."""
    import sys

    from container.engine.containers import resolve_container
    from container.engine.runtime import isolate

    if sys.platform.startswith("linux") and os.geteuid() != 0:
        join_user_namespace(store, opts.container)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        raise RunError("container exec needs root on Linux", exit_code=1)
    info = resolve_container(store, opts.container)
    target = open_target(info)
    try:
        spec = process_spec(info, opts, target)
        quiet = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if opts.detach else -1
        pty = None
        if spec.tty:
            from container.engine.runtime.tty import open_pty_in

            pty = open_pty_in(target.root)
        try:
            running = isolate.start(lambda w, slave, devnull: _enter(w, target, spec, slave, devnull, quiet),
                                    spec, pty)
        except RunError as e:
            if type(e) is RunError:         # what fails before the execve is docker's 126 for exec
                raise CommandNotExecutable(str(e)) from None
            raise
        finally:
            if quiet >= 0:
                os.close(quiet)
    finally:
        target.close()
    return running.wait()


def join_user_namespace(store, name: str) -> None:
    """Rootless (cli/app.main() left this process outside any user namespace for exec): join the
    user namespace the container runs in, the one the command that started it made. A child enters
    a namespace of its own to read the row (the store is only used from inside one) and says which
    process holds the container and in which id mode; when there is none (no such container, not
    running, not ours) this process enters a fresh namespace and the usual errors follow."""
    from container.engine.runtime import userns

    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        code = 1
        try:
            from container.engine.containers import resolve_container

            mode = userns.enter()
            info = resolve_container(store, name)
            if mode and info.status == "running" and info.pid:
                os.write(w, f"{info.pid} {mode}".encode())
                code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode().split()
    os.waitpid(child, 0)
    if len(said) == 2:
        try:
            userns.join(int(said[0]), said[1])
            return
        except OSError:
            pass
    if userns.enter() is None and userns.entry_error():
        raise RunError(str(userns.entry_error()), exit_code=1)


def _enter(w: int, target: Target, spec: ProcessSpec, slave: int | None, devnull: int | None,
           quiet: int) -> None:
    """X1: join the namespaces, fork X2 into them, report X2's pid, wait for it (with -d: leave)."""
    detach = quiet >= 0
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)
    if not detach:
        set_pdeathsig(signal.SIGKILL)
    for fd, flag, name in target.namespaces:
        try:
            setns(fd, flag)
        except OSError as e:
            report_failure(w, 126, f"cannot join the container's {name} namespace: {e.strerror}")
    pid = -1
    x1 = os.getpid()
    try:
        pid = os.fork()
    except OSError as e:          # ENOMEM: the PID namespace's init has exited
        report_failure(w, 126, f"the container is not running any more ({e.strerror})")
    if pid == 0:
        if not detach:                    # dies with X1; X1 gone already (killed -9 meanwhile): go too
            set_pdeathsig(signal.SIGKILL)
            if os.getppid() not in (0, x1):
                os._exit(137)
        try:
            _process(w, target, spec, slave, devnull, quiet)
        except BaseException as e:
            report_failure(w, 126, str(e))
        os._exit(126)
    hand_over(w, pid, slave, devnull)
    if detach:
        os._exit(0)
    exit_with(pid, "X1: X2 exited")


def _process(w: int, target: Target, spec: ProcessSpec, slave: int | None, devnull: int | None,
             quiet: int) -> None:
    """X2, in the container's namespaces: its root, then run's process setup and execve."""
    for s in FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    os.fchdir(target.root)
    os.chroot(".")
    os.chdir("/")
    for fd, _, _ in target.namespaces:
        os.close(fd)
    os.close(target.root)
    if quiet >= 0:
        os.setsid()
        for fd in (1, 2):
            os.dup2(quiet, fd)
        os.close(quiet)
    start_process(w, spec, slave, devnull, chroot=target.chroot, pdeathsig=quiet < 0)
