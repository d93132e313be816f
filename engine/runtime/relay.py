"""Signals a command may not send itself, relayed by the container's supervisor.

Rootless with subordinate ranges, a container whose init runs as another id of the mapping (`-u
1000`: a subordinate uid on the host) cannot be signalled by `stop`/`kill`/`rm -f`: each command
runs in a user namespace of its own, a sibling of the container's, so the kernel sees the user
signalling a process of another uid without CAP_KILL over it (EPERM). The supervisor runs as the
user (uid 0 of the container's namespace, which owns the container) and may. So the command
appends the signal's number to containers/<id>/signal-requests and wakes the supervisor with
RELAY_SIGNAL; the supervisor takes the file (renamed first: a request written meanwhile starts a
new one) and signals its container. Root and single-id containers never need it.
"""

from __future__ import annotations

import os
import signal

REQUESTS = "signal-requests"


def relay_signal() -> int:
    """The supervisor's wake-up for relayed signals (a real-time one: nothing else sends it)."""
    return signal.SIGRTMIN + 3


def ask(cdir: str, supervisor: int, sig: int) -> bool:
    """Have the supervisor (pid `supervisor`, holding the container in cdir) send `sig`; False when
    it is not that container's supervisor any more or cannot be reached."""
    try:
        with open(f"/proc/{supervisor}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if b"container.engine.runtime.supervisor" not in argv or os.path.basename(cdir).encode() not in argv:
        return False                               # a reused pid
    fd = os.open(os.path.join(cdir, REQUESTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{sig}\n".encode())
    finally:
        os.close(fd)
    try:
        os.kill(supervisor, relay_signal())
    except (ProcessLookupError, PermissionError):
        return False
    return True


def take(cdir: str) -> list[int]:
    """The supervisor's side: the signals asked for since the last take, in order."""
    path = os.path.join(cdir, REQUESTS)
    taken = path + ".taken"
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return []
    try:
        with open(taken) as f:
            text = f.read()
    finally:
        os.unlink(taken)
    out = []
    for line in text.split():
        try:
            if 0 < int(line) < 65:
                out.append(int(line))
        except ValueError:
            pass
    return out
