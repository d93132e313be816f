"""Shared CLI state (ctx.obj): global options and a lazily opened store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer


@dataclass
class CliState:
    root: Path | None = None
    db: str | None = None
    verbose: bool = False
    storage: list[str] | None = None
    _engine: Any = field(default=None, repr=False)

    @property
    def engine(self):
        """The engine facade (engine/service.py); the store opens on first use, so --help never
        touches the disk."""
        if self._engine is None:
            from container.engine.service import Engine

            self._engine = Engine(self.root, self.db, storage=self.storage, warn=warn)
        return self._engine


def warn(msg: str) -> None:
    """The engine's warnings (a read-only store skipped): one line on stderr, as docker's."""
    from .output import one_line

    typer.echo(f"WARNING: {one_line(msg)}", err=True)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = CliState()
    return obj
