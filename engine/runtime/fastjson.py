"""JSON for `run`'s path without the json package: `import json` imports re (and with it enum,
functools, collections), several ms of every `container run`. The C scanner and encoder that
json itself uses (the _json accelerator) are driven directly, so the results are json's:
loads() is json.loads(), dumps() is json.dumps() with its default options. Where _json is
missing (not CPython), the json package serves.
"""

from __future__ import annotations

TYPE_CHECKING = False        # (no typing import on run's path; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

_SCAN = None
_ENCODE = None
_WS = " \t\n\r"


class _Context:
    """What _json.make_scanner reads of a json.JSONDecoder (json.loads()'s defaults)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def loads(data: bytes | str) -> Any:
    """json.loads(data) (UTF-8 bytes or str); ValueError when it is not one JSON document."""
    global _SCAN
    s = data.decode("utf-8-sig" if data[:3] == b"\xef\xbb\xbf" else "utf-8") if isinstance(data, bytes) else data
    if _SCAN is None:
        try:
            import _json
        except ImportError:          # pragma: no cover (not CPython)
            import json

            return json.loads(s)
        _SCAN = _json.make_scanner(_Context())  # type: ignore[arg-type]
    n = len(s)
    i = 0
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _SCAN(s, i)
    except StopIteration:
        raise ValueError(f"not JSON: expecting a value at char {i}") from None
    finally:
        _Context.memo.clear()
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError(f"not JSON: extra data at char {end}")
    return obj


def dumps(obj: Any) -> str:
    """json.dumps(obj): ASCII-only, ", " and ": " separators, NaN allowed, no sorting."""
    global _ENCODE
    if _ENCODE is None:
        try:
            import _json
        except ImportError:          # pragma: no cover (not CPython)
            import json

            return json.dumps(obj)

        def default(o: Any) -> Any:
            raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

        _ENCODE = _json.make_encoder({}, default, _json.encode_basestring_ascii, None,
                                     ": ", ", ", False, False, True)
    return "".join(_ENCODE(obj, 0))
