"""The one clock of the metadata: naive UTC datetimes, as every DateTimeField stores them.

Stdlib only and outside models.py, so the engine (and run's sqlite fast path) can use it
without importing peewee.
"""

from __future__ import annotations

import datetime as _dt


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
