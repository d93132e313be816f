"""Record: a keyword-initialised value class for the `run` hot path.

`dataclasses` imports `inspect` (with ast, dis, tokenize): about a tenth of `container run`'s
CPU time, for a handful of option bags. Subclasses list their fields with defaults in FIELDS;
a default that is a type (list, tuple, dict) is called for a fresh value.
"""

from __future__ import annotations


class Record:
    FIELDS: dict = {}
    __slots__ = ()

    def __init__(self, **kw):
        for k, v in self.FIELDS.items():
            if k in kw:
                v = kw.pop(k)
            elif v is _REQUIRED:
                raise TypeError(f"{type(self).__name__}: missing {k}")
            elif isinstance(v, type):
                v = v()
            object.__setattr__(self, k, v)
        if kw:
            raise TypeError(f"{type(self).__name__}: unexpected {', '.join(kw)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS) + ")"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose: mutable, compared by value


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


_REQUIRED = REQUIRED = _Required()
