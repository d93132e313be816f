"""The detached container's supervisor: one process per running container, no daemon (podman's conmon).

    launch()   (in the CLI: run -d, start, restart) forks twice; the grandchild leaves the
               terminal (setsid, stdio on /dev/null, its own stderr into containers/<id>/
               supervisor.log) and execs `python -m container.engine.runtime.supervisor`. The
               CLI reads one line from a pipe: "OK <pid>" once the container's process has
               exec'd, or "E<code> <message>" (docker's 125/126/127) when it could not start.
    main()     the supervisor: holds flock(containers/<id>/lock) for as long as it lives (the
               CLI's own fd for run -d, so the lock never lapses between create and start;
               taken here for start); starts the container from its row exactly as a foreground
               run does (runtime/run.py start_process); copies the container's stdout/stderr into
               its json-file log (runtime/logs.py); records status running/pid/started, then
               exit code/finished (and the signal) in the row; applies the restart policy;
               removes the container at the end with --rm.

The container's processes hold the lock's open file too (A is a fork of ours), and they die
with the supervisor (PR_SET_PDEATHSIG), so a free lock means nothing of the container runs:
engine/containers.py shows such a row as exited. That is what keeps `ps` truthful after a
kill -9 of the supervisor or a reboot; the kernel drops the lock, no pid file can go stale.

Restart policies (docker's): on-failure[:N] restarts after a non-zero exit, at most N times;
always / unless-stopped after any exit; never after `stop` or `kill` (which leave the marker
file containers/<id>/stop-requested). Delays double from 100 ms to 1 min, back to 100 ms after
a run of 10 s or more; the row says "restarting" meanwhile.

SIGTERM/SIGINT/SIGHUP to the supervisor is a `stop` (systemd's): the container's stop signal,
SIGKILL 10 s later.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STOP_MARKER = "stop-requested"
PID_FILE = "supervisor.pid"
EXIT_FILE = "exit-code"          # the last exit code, rewritten in place: `wait` holds it open
START_TIMEOUT = 120.0


def launch(where: tuple[str, str | None], cid: str, cdir: str, *, lock_fd: int | None = None) -> int:
    """Start the container `cid` under a new supervisor; its process id once it runs. Raises
    RunError/CommandNotExecutable/CommandNotFound when it cannot start."""
    from container.engine.errors import CommandNotExecutable, CommandNotFound, RunError

    root, db_url = where
    root, cdir = os.path.abspath(root), os.path.abspath(cdir)     # (it runs in /: it pins no cwd)
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            errlog = os.open(os.path.join(cdir, "supervisor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(errlog, 2)
            os.chdir("/")
            os.set_inheritable(w, True)
            args = [sys.executable, "-m", "container.engine.runtime.supervisor", "--root", root,
                    "--report-fd", str(w)]
            if lock_fd is not None:
                os.set_inheritable(lock_fd, True)
                args += ["--lock-fd", str(lock_fd)]
            if db_url:
                os.environ["CONTAINER_DB"] = db_url        # (not in argv: ps shows argv to everyone)
            os.execv(sys.executable, args + [cid])
        except BaseException:
            pass
        os._exit(127)
    os.close(w)
    os.waitpid(pid, 0)                     # the middle child, gone at once (PEP 475 retries EINTR)
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    import select

    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    line = data.split(b"\n")[0].decode("utf-8", "replace")
    if line.startswith("OK"):
        return int(line[2:].strip() or 0)
    if not line:
        raise RunError(f"the container's supervisor exited before the container started "
                       f"(see {os.path.join(cdir, 'supervisor.log')})")
    code_s, _, msg = line[1:].partition(" ")
    code = int(code_s) if code_s.isdigit() else 125
    raise {126: CommandNotExecutable, 127: CommandNotFound}.get(code, RunError)(msg, exit_code=code)


def proc_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid,
    what names one process (a pid alone may have been reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def stop_signal(name: str | int | None, default: int = signal.SIGTERM) -> int:
    """A signal by number or name (KILL, SIGKILL, 9); ValueError for an unknown one."""
    if name is None or name == "":
        return default
    if isinstance(name, int) or str(name).isdigit():
        n = int(name)
        if 0 < n < signal.NSIG:
            return n
        raise ValueError(f"invalid signal: {name}")
    s = str(name).upper()
    s = s if s.startswith("SIG") else "SIG" + s
    try:
        return int(signal.Signals[s])
    except KeyError:
        raise ValueError(f"invalid signal: {name}") from None


def _backoff(delay: float, ran_for: float) -> float:
    return 0.1 if ran_for >= 10 else min(60.0, delay * 2 if delay else 0.1)


class Supervisor:
    """One container, from its first start to its last exit."""

    def __init__(self, db, cid: str, cdir: str, lock_fd: int, report_fd: int | None, *, fresh: bool):
        self.db, self.cid, self.cdir, self.lock_fd, self.report_fd = db, cid, cdir, lock_fd, report_fd
        self.fresh = fresh                     # run -d's first start: its CLI undoes a failure
        self.stop_sig = int(signal.SIGTERM)
        self.stdin_keep: list[int] = []
        self.stop_at: float | None = None      # when SIGKILL follows the stop signal
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.running: Any = None               # the Running (runtime/isolate.py) while one runs

    # -- reporting to the CLI that launched us -------------------------------------------------
    def report(self, line: str) -> None:
        if self.report_fd is not None:
            try:
                os.write(self.report_fd, (line.replace("\n", " ") + "\n").encode())
            except OSError:
                pass
            os.close(self.report_fd)
            self.report_fd = None

    def _exit_file(self, text: str) -> None:
        """Write the same inode (O_TRUNC, no rename): a `wait` that opened it before the row and
        directory went (--rm, rm -f) reads the code from it."""
        try:
            fd = os.open(os.path.join(self.cdir, EXIT_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            os.write(fd, text.encode())
            os.close(fd)
        except OSError:
            pass

    def stop_requested(self) -> bool:
        return os.path.exists(os.path.join(self.cdir, STOP_MARKER))

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        try:
            open(os.path.join(self.cdir, STOP_MARKER), "a").close()
        except OSError:
            pass
        if self.stop_at is None:
            self.stop_at = time.monotonic() + 10
            self._signal_container(self.stop_sig)
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def _signal_container(self, sig: int) -> None:
        if self.running is not None:
            try:
                os.kill(self.running.container_pid, sig)
            except ProcessLookupError:
                pass

    def _handle_signals(self) -> None:
        from container.engine.runtime.child import FORWARDED

        from container.engine.runtime.relay import relay_signal, take

        for s in FORWARDED:
            signal.signal(s, self._on_signal)
        def relayed(signum, frame) -> None:             # stop/kill that could not signal it (relay.py)
            for sig in take(self.cdir):
                self._signal_container(sig)
        signal.signal(relay_signal(), relayed)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    # -- the container ---------------------------------------------------------------------------
    def _load(self):
        from container.schema import Container

        row = Container.get_or_none(Container.id == self.cid)
        if row is None:
            from container.engine.errors import ContainerNotFound

            raise ContainerNotFound(f"No such container: {self.cid}")
        return row

    def _specs(self, row, cfg: dict):
        from container.engine.runtime import isolate
        from container.engine.runtime.run import process_spec
        from container.engine.runtime.users import resolve_user

        snap = cfg.get("lower", "")
        spec = process_spec(json.loads(row.command or "[]"), cfg, resolve_user(snap, cfg.get("user", "")))
        path = os.path.join(self.cdir, "rootfs")
        if row.rootfs_mode == "overlay":
            # the volatile overlay of the last start leaves work/work/incompat/volatile, which
            # refuses a remount; the upper is intact (the mount went away without a crash)
            from container.cas.fsutil import remove_tree

            incompat = os.path.join(self.cdir, "work", "work", "incompat")
            if os.path.lexists(incompat):
                remove_tree(incompat)
            rootfs = isolate.RootfsSpec(mode="overlay", path=path, lower=snap,
                                        upper=os.path.join(self.cdir, "upper"), work=os.path.join(self.cdir, "work"))
        else:
            rootfs = isolate.RootfsSpec(mode="copy", path=path)
        return snap, rootfs, spec

    def _start(self, row, cfg: dict):
        """The container's process started with its stdio on pipes: (Running, {fd: stream})."""
        from container.engine.runtime import isolate
        from container.engine.runtime.run import start_process

        snap, rootfs, spec = self._specs(row, cfg)
        streams: dict[int, str] = {}
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        keep: list[int] = []
        try:
            if spec.tty:
                pass                            # spawn() opens the pty; its master is our stdout
            else:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    rd, wr = os.pipe2(os.O_CLOEXEC)
                    os.dup2(wr, fd)
                    os.close(wr)
                    streams[rd] = name
            if spec.interactive:                # stdin stays open (docker -i) and is never written
                rd, wr = os.pipe2(os.O_CLOEXEC)
                os.dup2(rd, 0)
                os.close(rd)
                keep.append(wr)
            running = start_process(self.db, self.cid, self.cdir, snap, rootfs, spec, row.isolation,
                                    row.isolation)
        except BaseException:
            for fd in list(streams) + keep:
                os.close(fd)
            raise
        finally:
            for fd, s in zip((0, 1, 2), saved):
                os.dup2(s, fd)
                os.close(s)
            isolate.release_signals()
        if running.tty_master is not None:
            streams[running.tty_master] = "stdout"
            running.tty_master = None            # (ours to read and close, not wait()'s to pump)
        self.stdin_keep = keep
        return running, streams

    def _pump(self, running, streams: dict[int, str], log) -> int:
        """Copy the container's output into the log until it exits; its exit status."""
        import selectors

        pidfd = os.pidfd_open(running.pid)
        sel = selectors.DefaultSelector()
        for fd, name in streams.items():
            sel.register(fd, selectors.EVENT_READ, name)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        exited_at = None
        while True:
            now = time.monotonic()
            if exited_at is not None and (not streams or now > exited_at + 1.0):
                log.drain(streams)                   # (stragglers' output waiting in the pipes)
                break
            timeout = None if exited_at is None else exited_at + 1.0 - now
            if self.stop_at is not None and exited_at is None:
                if now >= self.stop_at:
                    self._signal_container(signal.SIGKILL)
                    self.stop_at = now + 3600
                timeout = max(0.0, self.stop_at - now) if timeout is None else timeout
            for key, _ in sel.select(timeout):
                if key.data == "wake":
                    try:
                        os.read(self.wake_r, 512)
                    except BlockingIOError:
                        pass
                elif key.data == "exit":
                    exited_at = time.monotonic()
                    sel.unregister(pidfd)
                else:
                    try:
                        data = os.read(key.fd, 65536)
                    except OSError:                 # EIO: the pty's last holder closed it
                        data = b""
                    if data:
                        log.write(key.data, data)
                    else:
                        sel.unregister(key.fd)
                        os.close(key.fd)
                        del streams[key.fd]
        for fd in streams:
            os.close(fd)
        for fd in self.stdin_keep:
            os.close(fd)
        sel.close()
        os.close(pidfd)
        log.flush()
        code = running.wait()
        self._handle_signals()                       # (wait() leaves its forwarding installed)
        return code

    def run(self) -> None:
        from container.engine.errors import ContainerError
        from container.engine.runtime.logs import LogWriter, config_log_options
        from container.engine.runtime.options import log_options, restart_policy

        self._handle_signals()
        try:
            os.unlink(os.path.join(self.cdir, STOP_MARKER))
        except FileNotFoundError:
            pass
        with open(os.path.join(self.cdir, PID_FILE), "w") as f:
            f.write(f"{os.getpid()}\n")
        self._exit_file("")
        try:
            row = self._load()
            cfg = json.loads(row.config or "{}")
            policy, retries = restart_policy(cfg.get("restart") or "no")
            self.stop_sig = stop_signal(cfg.get("stop_signal") or None)
            log = LogWriter(self.cdir, **log_options(cfg.get("log_opts") or [], config_log_options()))
        except (ContainerError, ValueError, OSError) as e:
            self.report(f"E125 {e}")
            return
        state = dict(cfg.get("state") or {})
        # a shared store: this host's heartbeat while the container lives (other hosts' gc keeps it)
        beating = getattr(self.db, "keep_alive", lambda: None)()
        try:
            self._loop(row, cfg, state, policy, retries, log)
        finally:
            if beating is not None:
                beating.set()

    def _loop(self, row, cfg: dict, state: dict, policy: str, retries: int, log) -> None:
        from container.engine.errors import ContainerError
        from container.schema.base import utcnow

        restarts, delay = 0, 0.0
        while True:
            try:
                self.running, streams = self._start(row, cfg)
            except ContainerError as e:
                if not self.fresh:                  # (a fresh one: run -d undoes it all)
                    self.db.update(self.cid, status="exited", exit_code=e.exit_code, finished=utcnow())
                if self.report_fd is not None:
                    self.report(f"E{e.exit_code} {e}")
                    return
                break
            started = time.monotonic()
            if self.stop_at is not None:            # a stop came while it was being started
                self._signal_container(self.stop_sig)
            state.update(pid_start=proc_start(self.running.container_pid), restarts=restarts,
                         supervisor=os.getpid(), signal=None, oom_killed=False)
            cfg["state"] = state
            self.db.update(self.cid, status="running", pid=self.running.container_pid, started=utcnow(),
                           config=json.dumps(cfg))
            self.report(f"OK {self.running.container_pid}")
            code = self._pump(self.running, streams, log)
            self.running = None
            sig = code - 128 if code > 128 and code - 128 < signal.NSIG else None
            state.update(signal=sig)
            cfg["state"] = state
            self.db.update(self.cid, status="exited", exit_code=code, finished=utcnow(), config=json.dumps(cfg))
            self._exit_file(f"{code}\n")
            again = policy in ("always", "unless-stopped") or (policy == "on-failure" and code != 0)
            if not again or self.stop_requested() or (policy == "on-failure" and retries and restarts >= retries):
                break
            delay = _backoff(delay, time.monotonic() - started)
            self.db.update(self.cid, status="restarting")
            if self._sleep(delay):
                self.db.update(self.cid, status="exited")
                break
            restarts += 1
            row = self._load()
        log.close()
        if cfg.get("rm"):
            self.db.delete(self.cid)               # DB first, files second (design.md invariant 4)
            self.db.remove_dir(self.cdir)

    def _sleep(self, delay: float) -> bool:
        """Wait out a restart delay; True when a stop came meanwhile."""
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if self.stop_requested() or self.stop_at is not None:
                return True
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return self.stop_requested()


def main(argv: list[str]) -> None:
    import fcntl

    from container.engine.runtime.ormstore import OrmStore
    from container.engine.store import Store

    opts: dict[str, str] = {}
    while len(argv) > 1 and argv[0].startswith("--"):
        opts[argv[0][2:]] = argv[1]
        argv = argv[2:]
    cid = argv[0]
    report_fd = int(opts["report-fd"]) if "report-fd" in opts else None
    store = Store(opts["root"], os.environ.get("CONTAINER_DB") or None)
    db = OrmStore(store)
    cdir = os.path.join(db.containers_dir, cid)
    if "lock-fd" in opts:
        lock_fd = int(opts["lock-fd"])
        os.set_inheritable(lock_fd, False)
    else:
        lock_fd = os.open(os.path.join(cdir, "lock"), os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if report_fd is not None:
                os.write(report_fd, b"OK 0\n")      # started by someone else meanwhile: it runs
            return
    if report_fd is not None:
        os.set_inheritable(report_fd, False)
    db.open_db()
    Supervisor(db, cid, cdir, lock_fd, report_fd, fresh="lock-fd" in opts).run()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    finally:
        sys.stderr.flush()
        os._exit(0)
