"""What every metadata backend agrees on, stdlib only: the schema version this program writes and
reads (migrations.py steps up to it), and the one clock (naive UTC datetimes, as every
DateTimeField stores them).

Outside models.py and db.py, so the engine and run's sqlite3 fast path (schema/lite.py) use the
same number and the same clock without importing peewee.
"""

from __future__ import annotations

import datetime as _dt

SCHEMA_VERSION = 2


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
