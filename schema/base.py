"""What every metadata backend agrees on, stdlib only: the schema version this program writes and
reads (migrations.py steps up to it), and the one clock (naive UTC datetimes, as every
DateTimeField stores them).

Outside models.py and db.py, so the engine and run's sqlite3 fast path (schema/lite.py) use the
same number and the same clock without importing peewee.
"""

from __future__ import annotations

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    import datetime as _dt

SCHEMA_VERSION = 6


def utcnow() -> _dt.datetime:
    import datetime as _dt       # (not at module level: `run`'s fast path uses utcnow_text())

    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def utcnow_text() -> str:
    """str(utcnow()), as a DateTimeField stores it ('YYYY-MM-DD HH:MM:SS[.ffffff]'), without
    importing datetime (2-3 ms of `container run`)."""
    import time

    secs, us = divmod(time.time_ns() // 1000, 1_000_000)
    text = "%04d-%02d-%02d %02d:%02d:%02d" % time.gmtime(secs)[:6]
    return f"{text}.{us:06d}" if us else text
