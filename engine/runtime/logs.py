"""A container's log: docker's json-file format, size-capped with rotation; reading and following it.

    ROOT/containers/<id>/container.log      newest; .1 .. .<max-file - 1> older (rename on rotation)

One JSON object a line, as docker's json-file driver writes them:

    {"log":"hello\\n","stream":"stdout","time":"2026-12-01T15:30:00.123456789Z"}

The writer is the container's supervisor (runtime/supervisor.py; a foreground run tees into it,
runtime/tee.py): a line is one write(2) with O_APPEND, so a reader never sees half a record
except the one being written, which it leaves for later. A line longer than 16 KiB is split as
docker splits it. max-size and max-file: --log-opt, else the config file's [log] table
(max-size = "20m", max-file = 5), else docker's `local` driver defaults (20 MiB, 5 files).
"""

from __future__ import annotations

import json
import os
import time

from json.encoder import encode_basestring as _quote  # (the C encoder: a JSON string literal)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from io import FileIO
    from typing import Callable, Iterator

LOG_NAME = "container.log"
LINE_MAX = 16 << 10
ROTATE_WAIT = 0.05


def log_path(cdir: str) -> str:
    return os.path.join(cdir, LOG_NAME)


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 with nanoseconds, UTC (Go's time.RFC3339Nano, fixed width)."""
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def parse_rfc3339(s: str) -> float:
    """RFC 3339 (with up to nanoseconds, Z or an offset) to seconds since the epoch."""
    import datetime as dt

    t = s.strip()
    frac = 0.0
    if "." in t:
        head, _, rest = t.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        frac = float("0." + digits) if digits else 0.0
        t = head + rest
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp() + frac


def parse_since(s: str) -> float:
    """docker logs --since: a duration before now (10m, 1h30m, 90s, 2h), an RFC 3339 time, or a
    Unix timestamp; seconds since the epoch. ContainerError for anything else."""
    import re

    from container.engine.errors import ContainerError

    t = s.strip()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if t and m and any(m.groups()):
        h, mi, sec = (float(g or 0) for g in m.groups())
        return time.time() - (h * 3600 + mi * 60 + sec)
    try:
        return float(t)
    except ValueError:
        pass
    try:
        return parse_rfc3339(t)
    except ValueError:
        raise ContainerError(f"invalid value for \"since\": {s!r}: want a duration (10m), "
                             f"an RFC 3339 time or a Unix timestamp") from None


def config_log_options() -> dict:
    """The config file's [log] max-size / max-file (engine/locate.config_tables(), later wins)."""
    from container.engine.errors import ContainerError
    from container.engine.locate import config_tables
    from container.engine.runtime.options import parse_size

    out: dict = {}
    for p, doc in config_tables(b"log"):
        table = doc.get("log", {})
        if not isinstance(table, dict):
            raise ContainerError(f"{p}: [log] must be a table")
        if "max-size" in table:
            out["max_size"] = parse_size(str(table["max-size"]))
        if "max-file" in table:
            n = table["max-file"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ContainerError(f"{p}: log.max-file must be an integer >= 1")
            out["max_file"] = n
    return out


class LogWriter:
    """Appends records to cdir/container.log, rotating at max_size into max_file files."""

    def __init__(self, cdir: str, max_size: int = 20 << 20, max_file: int = 5):
        self.dir, self.path = cdir, log_path(cdir)
        self.busy_until = 0.0                  # a follower held the rotation lock: do not wait for it
        self.max_size, self.max_file = max_size, max_file
        self.partial: dict[str, bytes] = {}
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        """Output of `stream` (stdout|stderr): whole lines become records (one time stamp for
        what arrived together), the rest waits for its newline."""
        buf = self.partial.pop(stream, b"") + data
        when = rfc3339(time.time_ns())
        tail = f'"stream":"{stream}","time":"{when}"}}\n'
        records = []
        start, n = 0, len(buf)
        while start < n:
            nl = buf.find(b"\n", start, start + LINE_MAX)
            if nl >= 0:
                end = nl + 1
            elif n - start >= LINE_MAX:
                end = start + LINE_MAX
            else:
                break
            records.append(('{"log":' + _quote(buf[start:end].decode("utf-8", "replace")) + "," + tail).encode())
            start = end
        if start < n:
            self.partial[stream] = buf[start:]
        self._emit(records)

    def flush(self) -> None:
        """What is left of a line without its newline (the stream ended)."""
        partial, self.partial = self.partial, {}
        for stream, buf in partial.items():
            if buf:
                when = rfc3339(time.time_ns())
                self._emit([('{"log":' + _quote(buf.decode("utf-8", "replace")) +
                             f',"stream":"{stream}","time":"{when}"}}\n').encode()])

    def close(self) -> None:
        self.flush()
        os.close(self.fd)

    def drain(self, streams: dict[int, str], limit: int = 4 << 20) -> None:
        """Log what the pipes {fd: stream} hold now, without waiting for more (at most `limit`
        bytes a pipe: a process the container left behind may write forever)."""
        for fd, name in streams.items():
            os.set_blocking(fd, False)
            n = 0
            while n < limit:
                try:
                    data = os.read(fd, 65536)
                except OSError:                  # EAGAIN: empty; EIO: the pty is gone
                    break
                if not data:
                    break
                self.write(name, data)
                n += len(data)

    def _emit(self, records: list[bytes]) -> None:
        """Append the records, as few write(2)s as the rotation allows (each whole records)."""
        batch: list[bytes] = []
        size = 0
        for raw in records:
            if (self.size or size) and self.size + size + len(raw) > self.max_size:
                self._append(b"".join(batch))
                batch, size = [], 0
                self._rotate()                 # (or postponed: tried again at the next record)
            batch.append(raw)
            size += len(raw)
        if batch:
            self._append(b"".join(batch))

    def _append(self, blob: bytes) -> None:
        if not blob:
            return
        try:
            os.write(self.fd, blob)
            self.size += len(blob)
        except OSError:
            pass                       # a full disk loses log lines, never the container

    def _rotate(self) -> bool:
        """Rename the files one step older, under the rotation lock (a follower looking for the
        next file sees them before or after, never half-renamed). A follower that holds the lock
        for longer than ROTATE_WAIT (stopped, descheduled) postpones the rotation: the file grows
        past max-size rather than the container waiting on its reader."""
        now = time.monotonic()
        lock = _dir_lock(self.dir, shared=False, wait=0.0 if now < self.busy_until else ROTATE_WAIT)
        if lock is None:
            self.busy_until = now + 1.0
            return False
        try:
            os.close(self.fd)
            if self.max_file <= 1:
                os.unlink(self.path)           # (not truncated: a follower reads it to its end)
            else:
                for i in range(self.max_file - 1, 0, -1):
                    src = self.path if i == 1 else f"{self.path}.{i - 1}"
                    if os.path.exists(src):
                        os.replace(src, f"{self.path}.{i}")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self.size = 0
        finally:
            os.close(lock)
        return True


def _dir_lock(cdir: str, *, shared: bool, wait: float | None = None) -> int | None:
    """flock of the log's directory: shared by followers while they look at the files, exclusive
    by the writer while it renames them. The fd that holds it (close it to unlock); None when
    the directory is gone or, with `wait` seconds, still locked after them."""
    import fcntl

    try:
        fd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, op | (fcntl.LOCK_NB if deadline is not None else 0))
            return fd
        except BlockingIOError:
            if deadline is None or time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.001)


# -- reading ------------------------------------------------------------------------------------

def _files(cdir: str) -> list[str]:
    """The log's files, oldest first (consistent only under _dir_lock: a rotation renames them)."""
    base = log_path(cdir)
    older = []
    i = 1
    while os.path.exists(f"{base}.{i}"):
        older.append(f"{base}.{i}")
        i += 1
    return list(reversed(older)) + ([base] if os.path.exists(base) else [])


def _parse(line: bytes) -> tuple[str, str, str] | None:
    try:
        d = json.loads(line)
        return d["stream"], d["log"], d["time"]
    except (ValueError, KeyError, TypeError):
        return None


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class _Snapshot:
    """Under the shared rotation lock: the log's files as they are between two rotations."""

    def __init__(self, cdir: str):
        self.cdir = cdir
        self.fd: int | None = None

    def __enter__(self) -> _Snapshot:
        self.fd = _dir_lock(self.cdir, shared=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)                  # (closing the last fd of it drops the flock)

    def open_all(self) -> list[FileIO]:
        out = []
        for p in _files(self.cdir):
            try:
                out.append(open(p, "rb", buffering=0))
            except OSError:
                continue
        return out

    def after(self, ino: int | None) -> FileIO | None:
        """The file written after the one with inode `ino` (None: the newest is ours), or the
        oldest there is when ours is gone (rotated out of max-file) or there was none."""
        files = _files(self.cdir)
        inodes = [_ino(p) for p in files]
        i = inodes.index(ino) + 1 if ino is not None and ino in inodes else 0
        for p in files[i:]:
            try:
                return open(p, "rb", buffering=0)
            except OSError:
                continue
        return None


class _Reader:
    """Records from open log files: one file at a time, the partial last line kept for later."""

    def __init__(self, since: float | None):
        self.since = since
        self.f: FileIO | None = None
        self.ino: int | None = None
        self.buf = b""

    def switch(self, f: FileIO | None) -> None:
        if self.f is not None:
            self.f.close()
        self.f, self.buf = f, b""
        self.ino = os.fstat(f.fileno()).st_ino if f is not None else None

    def drain(self) -> list[tuple[str, str, str]]:
        """Every whole record from where we are to the current end of our file."""
        if self.f is None:
            return []
        data = self.f.read() or b""
        if not data:
            return []
        *lines, self.buf = (self.buf + data).split(b"\n")
        out = []
        for line in lines:
            rec = _parse(line)
            if rec is not None and (self.since is None or parse_rfc3339(rec[2]) >= self.since):
                out.append(rec)
        return out


def read_records(cdir: str, *, tail: int | None = None, since: float | None = None) -> list[tuple[str, str, str]]:
    """(stream, text, time) of every record now in the log, oldest first; --since / --tail applied."""
    return list(log_records(cdir, tail=tail, since=since))


def log_records(cdir: str, *, tail: int | None = None, since: float | None = None, follow: bool = False,
                running: Callable[[], bool] = lambda: False, interval: float = 0.1) -> Iterator[tuple[str, str, str]]:
    """(stream, text, time) records, oldest first: those in the log now (--since, --tail), then
    with `follow` those written after, across rotations, until running() is false and the log
    has been read to its end.

    The files are opened all at once under the rotation lock, read, and the newest one stays
    open and is followed: nothing written between the read and the follow is lost. When the newest
    file is no longer ours (a rotation renamed it), ours is read to its end and the next newer
    one is found under the lock (a rotation in progress renames several). The stop is looked at
    only when nothing is left to read, and then everything is read once more: the writer's last
    record is written before the container's lock is released."""
    from collections import deque

    r = _Reader(since)
    with _Snapshot(cdir) as snap:
        files = snap.open_all()
    keep: deque[tuple[str, str, str]] | list[tuple[str, str, str]] = \
        deque(maxlen=max(tail, 0)) if tail is not None else []
    try:
        for f in files:
            r.switch(f)
            keep.extend(r.drain())
        files = []
        yield from keep
        del keep
        if not follow:
            return
        base = log_path(cdir)
        stopping = False
        while True:
            got = r.drain()
            yield from got
            if r.ino is None or _ino(base) != r.ino:            # rotated (or not there yet)
                with _Snapshot(cdir) as snap:
                    nxt = snap.after(r.ino)
                if nxt is not None:
                    yield from r.drain()                        # what came before the rotation
                    r.switch(nxt)
                    continue
            if got:
                continue
            if stopping:
                return
            if not running():
                stopping = True                                 # one more look at everything
                continue
            time.sleep(interval)
    finally:
        for f in files:
            f.close()
        r.switch(None)
