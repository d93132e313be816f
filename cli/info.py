"""`container info` (also `container system info`): the store, the backends in use and why, as
docker/podman `info` prints them: a section a block, "Key: value" lines; --format json for the
whole dict, or a Go template over it ({{.store.root}}, {{json .rootless}})."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from .state import state


def _label(key: str) -> str:
    return " ".join(w.upper() if w in ("db", "id", "uid", "gid", "os") else w.capitalize() for w in key.split("_"))


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list) and v and all(isinstance(item, dict) for item in v):
        return "; ".join(" ".join(f"{k}={x}" for k, x in item.items()) for item in v)
    if isinstance(v, list):
        return ", ".join(" ".join(str(x) for x in item) if isinstance(item, list) else str(item) for item in v) or "-"
    return "-" if v is None or v == "" else str(v)


def info_cmd(ctx: typer.Context,
             format: Annotated[Optional[str], typer.Option(
                 "--format", "-f", help="json, or a Go template over the sections ({{.store.root}}).")] = None,
             ) -> None:
    """Show where the store is, how it is kept (database backend, owner), whether this user runs
    rootless and in which id mode (subordinate ranges or a single id) and why, the isolation and
    the container rootfs backend (kernel overlay, fuse-overlayfs or a private copy) and why."""
    data = state(ctx).engine.info()
    if format == "json":
        from .output import print_json

        print_json(data)
        return
    if format is not None:
        from .format import parse, render

        typer.echo(render(parse(format), data))
        return
    for section, values in data.items():
        typer.echo(f"{_label(section)}:")
        for k, v in values.items():
            typer.echo(f"  {_label(k)}: {_value(v)}")


def register(app: typer.Typer, system_app: typer.Typer) -> None:
    app.command("info")(info_cmd)
    system_app.command("info")(info_cmd)
