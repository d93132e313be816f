"""Loggers that cost no `import logging` until a record is made.

    log = lazylog.get("container.unpack")      # instead of logging.getLogger(...) at import
    log.warning("...%s", x)                     # debug / info / warning / error, as logging's

A layer worker process (engine/layer/worker.py) imports the extractor and nothing else: logging
was a third of its start (~10 ms, with re and traceback) and it makes a record only on a
rootless pull's notes. There `capture()` keeps the records of INFO and above as (logger, level,
text) for the parent to log again, and logging is never imported; elsewhere each call goes to
logging.getLogger(name), imported on the first one.
"""

from __future__ import annotations

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    import logging

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_sink: list[tuple[str, int, str]] | None = None


def capture() -> list[tuple[str, int, str]]:
    """From now on, records of INFO and above go to the returned list instead of logging."""
    global _sink
    _sink = []
    return _sink


class Logger:
    __slots__ = ("name", "_log")

    def __init__(self, name: str) -> None:
        self.name = name
        self._log: logging.Logger | None = None

    def _emit(self, level: int, msg: str, args: tuple) -> None:
        if _sink is not None:
            if level >= INFO:
                _sink.append((self.name, level, _text(msg, args)))
            return
        log = self._log
        if log is None:
            import logging

            log = self._log = logging.getLogger(self.name)    # (imported on the first record only)
        log.log(level, msg, *args, stacklevel=3)

    def debug(self, msg: str, *args) -> None:
        self._emit(DEBUG, msg, args)

    def info(self, msg: str, *args) -> None:
        self._emit(INFO, msg, args)

    def warning(self, msg: str, *args) -> None:
        self._emit(WARNING, msg, args)

    def error(self, msg: str, *args) -> None:
        self._emit(ERROR, msg, args)


def _text(msg: str, args: tuple) -> str:
    """msg % args as logging makes it (one mapping argument: %(name)s); a bad format never raises."""
    if not args:
        return msg
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]     # type: ignore[assignment]
    try:
        return msg % args
    except Exception:
        return f"{msg} {args!r}"


def get(name: str) -> Logger:
    return Logger(name)
