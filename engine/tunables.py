"""Numeric tunables read from the environment (CONTAINER_REGISTRY_ATTEMPTS, CONTAINER_PULL_WORKERS...).

Modules read them once, at import, into module constants; a bad value is a one-line error naming
the variable, never a traceback.
"""

from __future__ import annotations

import os

from container.engine.errors import ContainerError


def env_number(name: str, default, kind=float, *, minimum=None):
    """A numeric tunable from the environment (CONTAINER_REGISTRY_ATTEMPTS...): a bad value is a
    one-line error naming the variable, not a traceback at import."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        v = kind(raw.strip())
    except ValueError:
        raise ContainerError(f"invalid {name}={raw!r}: want a{'n integer' if kind is int else ' number'}") from None
    if v != v or v in (float("inf"), float("-inf")) or (minimum is not None and v < minimum):
        raise ContainerError(f"invalid {name}={raw!r}: out of range")
    return v
