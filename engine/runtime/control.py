"""A container's lifecycle from the outside: start, stop, kill, restart, wait, logs, and the
systemd unit that starts it at boot (docker's and podman's verbs; runtime/supervisor.py is the
inside).

Whether a container runs is its lock (engine/containers.py: a row "running" whose
containers/<id>/lock nobody holds is shown exited). Signals go to the container's init (the row's
pid), after checking that this pid is still the process the supervisor started (its start
time, recorded in the row's config "state"): a pid alone may have been reused.
"""

from __future__ import annotations

import os
import time

from container.engine.errors import Conflict, ContainerError, ContainerNotFound

STOP_TIMEOUT = 10


def _live(info) -> bool:
    from container.cas.lock import is_held

    return is_held(os.path.join(info.path, "lock"))


def _signal(info, sig: int) -> bool:
    """Send `sig` to the container's init; False when it is not (or no longer) there."""
    from container.engine.runtime.supervisor import proc_start

    if not info.pid:
        return False
    want = (info.config.get("state") or {}).get("pid_start")
    if want is not None and proc_start(info.pid) != want:
        return False
    try:
        os.kill(info.pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:     # rootless, an init of another id of the mapping: its supervisor may
        from container.engine.runtime.relay import ask

        sup = (info.config.get("state") or {}).get("supervisor")
        if not sup or not ask(info.path, int(sup), sig):
            raise ContainerError(f"cannot signal container {info.name}: its process is not this user's "
                                 f"and it has no supervisor to relay it") from None
        return True


def _mark_stopped(info) -> None:
    """Tell the supervisor not to restart it (docker: a stopped or killed container stays so)."""
    from container.engine.runtime.supervisor import STOP_MARKER

    try:
        open(os.path.join(info.path, STOP_MARKER), "a").close()
    except OSError:
        pass


def _wait_free(info, timeout: float | None) -> bool:
    """True once nothing holds the container's lock; False after `timeout` s (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while _live(info):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop(store, name: str, timeout: int | None = None, *, sig: int | None = None) -> str:
    """docker stop: the image's StopSignal (default SIGTERM; `sig` instead: rm -f's SIGKILL),
    SIGKILL after `timeout` s (10; a negative one: none, wait as long as it takes, as docker).
    Returns the container's id; a container that is not running is left as it is."""
    from container.engine.containers import resolve_container
    from container.engine.runtime.supervisor import stop_signal

    info = resolve_container(store, name)
    if not _live(info):
        return info.id
    _mark_stopped(info)
    t = STOP_TIMEOUT if timeout is None else timeout
    if sig is None:
        try:
            sig = stop_signal(info.config.get("stop_signal") or None)
        except ValueError:
            sig = 15
    if info.status == "running":
        _signal(info, sig)
    if not _wait_free(info, None if t < 0 else t):
        try:
            again = resolve_container(store, name)
        except ContainerNotFound:       # a --rm container its supervisor removed as it stopped
            return info.id
        _signal(again, 9)
        if not _wait_free(info, 30):
            raise ContainerError(f"container {name} did not stop: its supervisor still holds it")
    return info.id


def kill(store, name: str, signame: str = "KILL") -> str:
    """docker kill -s SIG: the signal to the container's init. SIGKILL or the stop signal also
    cancel the restart policy, as in docker."""
    from container.engine.containers import resolve_container
    from container.engine.runtime.supervisor import stop_signal

    try:
        sig = stop_signal(signame)
    except ValueError as e:
        raise ContainerError(str(e)) from None
    info = resolve_container(store, name)
    if not _live(info) or info.status != "running":
        raise Conflict(f"cannot kill container: {name}: container {info.id[:12]} is not running")
    if sig == 9 or sig == stop_signal(info.config.get("stop_signal") or None):
        _mark_stopped(info)
    if not _signal(info, sig):
        raise Conflict(f"cannot kill container: {name}: container {info.id[:12]} is not running")
    return info.id


def start(store, name: str) -> str:
    """docker start: a created or exited container under a new supervisor (runtime/supervisor.py);
    its id once it runs. One that runs already is left alone."""
    from container.engine.containers import resolve_container
    from container.engine.runtime.supervisor import launch

    info = resolve_container(store, name)
    if _live(info):
        return info.id
    try:
        launch((str(store.root), store.db_url), info.id, info.path)
    except ContainerError as e:
        raise ContainerError(f"failed to start container {name}: {e}", exit_code=e.exit_code) from None
    return info.id


def wait(store, name: str, poll: float = 0.05) -> int:
    """docker wait: block until the container is not running, then its exit code; also when it
    is removed meanwhile (--rm, rm -f): its supervisor's exit-code file, held open from the start."""
    from container.engine.containers import resolve_container
    from container.engine.runtime.supervisor import EXIT_FILE

    info = resolve_container(store, name)
    try:
        held = open(os.path.join(info.path, EXIT_FILE), "rb")
    except OSError:
        held = None
    try:
        while info.status not in ("exited", "restarting"):
            time.sleep(poll)
            try:
                info = resolve_container(store, info.id)
            except ContainerNotFound:
                text = held.read().strip() if held is not None else b""
                if not text.isdigit():
                    raise ContainerNotFound(f"No such container: {name}") from None
                return int(text)
        return info.exit_code if info.exit_code is not None else 255
    finally:
        if held is not None:
            held.close()


def logs(store, name: str, *, follow: bool = False, tail: int | None = None, since: float | None = None):
    """The container's log records (stream, text, RFC 3339 time): what is there, then with
    `follow` what comes, until the container stops."""
    from container.engine.containers import resolve_container
    from container.engine.runtime.logs import log_records

    info = resolve_container(store, name)
    yield from log_records(info.path, tail=tail, since=since, follow=follow, running=lambda: _live(info))


def systemd_unit(store, name: str, *, executable: str, timeout: int = STOP_TIMEOUT) -> str:
    """`generate systemd`: a unit that starts the container at boot and stops it with the host
    (podman's shape: Type=forking, the supervisor's pid file)."""
    import shlex

    from container.engine.containers import resolve_container
    from container.engine.runtime.supervisor import PID_FILE

    info = resolve_container(store, name)
    base = [executable, "--root", str(store.root)]
    if store.db_url:
        base += ["--db", store.db_url]
    cmd = " ".join(shlex.quote(a) for a in base)
    from container.engine.locate import rootless

    where = ("\n# a user's unit: ~/.config/systemd/user/container-{0}.service, `systemctl --user enable --now "
             "container-{0}`;\n# `loginctl enable-linger` starts it at boot rather than at login"
             .format(info.name) if rootless() else "")
    return f"""# container-{info.name}.service
# generated by `container generate systemd {info.name}`{where}

[Unit]
Description=container {info.name} ({info.image})
Wants=network-online.target
After=network-online.target
RequiresMountsFor={store.root}

[Service]
Type=forking
Restart=on-failure
TimeoutStopSec={timeout + 20}
ExecStart={cmd} start {info.id}
ExecStop={cmd} stop -t {timeout} {info.id}
PIDFile={os.path.join(info.path, PID_FILE)}

[Install]
WantedBy=default.target
"""
