"""Rendering helpers: errors on stderr, tables on a tty, plain lines otherwise, JSON on request."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    import datetime as _dt


def one_line(msg: str) -> str:
    """Control characters (a newline in a reference, ESC from a registry's error text) escaped, so an
    error stays one line and cannot forge another "Error:" line or move the cursor."""
    if msg.isprintable():
        return msg
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in msg)


def err(msg: str) -> None:
    sys.stderr.write(f"Error: {one_line(str(msg))}\n")
    sys.stderr.flush()


def warn(msg: str) -> None:
    sys.stderr.write(f"Warning: {msg}\n")
    sys.stderr.flush()


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """docker-style aligned columns (plain text both on and off a tty, so it stays parseable)."""
    rows = [["" if c is None else one_line(str(c)) for c in r] for r in rows]   # an image's Cmd may hold ESC
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "   ".join("{:<%d}" % w for w in widths)
    out = [fmt.format(*headers).rstrip()]
    out += [fmt.format(*r).rstrip() for r in rows]
    sys.stdout.write("\n".join(out) + "\n")


def human_size(n: float) -> str:
    """docker's units: 1000-based, 3 significant digits (4.26MB, 1.2GB, 0B)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}TB"


def humanize_age(when: _dt.datetime | None, now: _dt.datetime | None = None) -> str:
    """docker's CREATED column: 'About a minute ago', '2 days ago', '3 months ago'."""
    import datetime as _dt

    if when is None:
        return "N/A"
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    now = now or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    s = (now - when).total_seconds()
    if s < 1:
        return "Less than a second ago"
    if s < 60:
        return f"{int(s)} seconds ago"
    m = s / 60
    if m < 2:
        return "About a minute ago"
    if m < 60:
        return f"{int(m)} minutes ago"
    h = m / 60
    if round(h) == 1:
        return "About an hour ago"
    if h < 48:
        return f"{round(h)} hours ago"
    d = h / 24
    if d < 14:
        return f"{int(d)} days ago"
    if d < 60:
        return f"{int(d // 7)} weeks ago"
    if d < 365 * 2:
        return f"{int(d // 30)} months ago"
    return f"{int(d // 365)} years ago"


def go_time(when: _dt.datetime | None) -> str:
    """A time as docker's --format prints one (Go's time.String in UTC): 2024-05-01 10:00:00 +0000 UTC."""
    import datetime as _dt

    if when is None:
        return ""
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
