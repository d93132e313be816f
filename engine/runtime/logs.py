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

LOG_NAME = "container.log"
LINE_MAX = 16 << 10


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
    """The config file's [log] max-size / max-file (engine/locate.config_files(), later wins)."""
    from container.engine.errors import ContainerError
    from container.engine.locate import config_files
    from container.engine.runtime.options import parse_size

    out: dict = {}
    for p in config_files():
        try:
            with open(p, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if b"log" not in raw:
            continue
        import tomllib

        try:
            table = tomllib.loads(raw.decode()).get("log", {})
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ContainerError(f"invalid config file {p}: {e}") from None
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
        self.path = log_path(cdir)
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

    def _emit(self, records: list[bytes]) -> None:
        """Append the records, as few write(2)s as the rotation allows (each whole records)."""
        batch: list[bytes] = []
        size = 0
        for raw in records:
            if (self.size or size) and self.size + size + len(raw) > self.max_size:
                self._append(b"".join(batch))
                batch, size = [], 0
                self._rotate()
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

    def _rotate(self) -> None:
        os.close(self.fd)
        if self.max_file <= 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_file - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = 0


# -- reading ------------------------------------------------------------------------------------

def _files(cdir: str) -> list[str]:
    """The log's files, oldest first."""
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


def read_records(cdir: str, *, tail: int | None = None, since: float | None = None) -> list[tuple[str, str, str]]:
    """(stream, text, time) of every record now in the log, oldest first; --since / --tail applied."""
    out = []
    for p in _files(cdir):
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for line in data.splitlines():
            rec = _parse(line)
            if rec is not None and (since is None or parse_rfc3339(rec[2]) >= since):
                out.append(rec)
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return out


def _next_file(cdir: str, ino):
    """After the file with inode `ino` was rotated: the next newer one (several rotations may
    have happened since), or the oldest there is when ours rotated out of max-file."""
    files = _files(cdir)
    inodes: list[int | None] = []
    for p in files:
        try:
            inodes.append(os.stat(p).st_ino)
        except OSError:
            inodes.append(None)
    i = inodes.index(ino) + 1 if ino in inodes else 0
    for p in files[i:]:
        try:
            f = open(p, "rb")
        except OSError:
            continue
        return f, os.fstat(f.fileno()).st_ino
    return None, None


def follow_records(cdir: str, running, *, since: float | None = None, interval: float = 0.1):
    """New records as they are written, across rotations, until running() is false and the log
    has been read to its end. Starts at the current end of the newest file."""
    path = log_path(cdir)
    f = None
    ino = None
    buf = b""
    try:
        try:
            f = open(path, "rb")
            f.seek(0, os.SEEK_END)
            ino = os.fstat(f.fileno()).st_ino
        except OSError:
            f = None
        while True:
            chunk = f.read() if f is not None else b""
            if not chunk:
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                rotated = st is not None and st.st_ino != ino
                if not rotated and running():
                    time.sleep(interval)
                    continue
                chunk = f.read() if f is not None else b""     # what came in before the rotation / exit
                if not chunk:
                    if not rotated:
                        return
                    if f is not None:
                        f.close()
                    f, ino = _next_file(cdir, ino)      # the one written after ours, from its start
                    buf = b""
                    continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                rec = _parse(line)
                if rec is not None and (since is None or parse_rfc3339(rec[2]) >= since):
                    yield rec
    finally:
        if f is not None:
            f.close()
