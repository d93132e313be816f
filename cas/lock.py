"""Store-wide lock (design.md invariant 7): adders shared, sweepers exclusive."""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False        # (typing's own costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from pathlib import Path          # (annotations only: no pathlib on run's fast path)


def store_lock(root: Path | str, *, exclusive: bool, timeout: float | None = None) -> flock:
    return flock(os.path.join(root, "lock"), exclusive=exclusive, timeout=timeout,
                 what="the store (a gc or prune is running?)")


def is_held(path: Path | str) -> bool:
    """True when another open file description holds an exclusive flock on an existing `path` (a
    running container's supervisor, a pull's ingest). Probes with a shared lock, so two probes never
    see each other; never creates the file, and a missing one is not held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class flock:
    """flock(2) on `path` (created if missing), held inside `with` (which gives the fd). timeout
    None = wait forever; 0 = try once. (A class, not contextlib.contextmanager: contextlib's
    import costs `run` a millisecond.)"""

    def __init__(self, path: Path | str, *, exclusive: bool, timeout: float | None = None,
                 what: str = "") -> None:
        self.path, self.exclusive, self.timeout, self.what = path, exclusive, timeout, what
        self.fd = -1

    def __enter__(self) -> int:
        path, timeout = self.path, self.timeout
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            op = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
            if timeout is None:
                fcntl.flock(fd, op)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, op | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            from .errors import StoreLocked   # (only here: not on run's path)

                            raise StoreLocked(f"could not lock {self.what or path} within {timeout:g}s") from None
                        time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)
