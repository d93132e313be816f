"""Engine errors to one line on stderr and an exit code: the CLI's only error mapping.

docker's codes: the error's own (engine/errors.py: 1, or for run 125 engine failure, 126 cannot
execute, 127 not found), 130 for Ctrl-C. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from .output import err


def report(e: BaseException) -> int:
    """Say `e` in one line and return its exit code; re-raise what is not an engine error (the
    facade, engine/service.py, has translated everything the store can raise)."""
    from container.engine.service import ContainerError

    if isinstance(e, KeyboardInterrupt):
        err("interrupted")
        return 130
    if not isinstance(e, ContainerError):
        raise e
    err(str(e))
    return e.exit_code
