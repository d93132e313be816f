"""`container volume create|ls|inspect|rm|prune`, docker's shapes (engine/volumes.py through the facade).

    container volume create [NAME] [--label K=V]...     prints the name
    container volume ls [-q] [--format json|table|TEMPLATE] [--filter dangling=|label=|name=|driver=]
    container volume inspect NAME...                     docker's JSON array
    container volume rm [-f] NAME...                     refused while a container uses it
    container volume prune [-f]                          the volumes no container uses; the space freed

Also the Mounts of a container's `inspect` (mounts_json) and `ps`'s Mounts field (mounts_field).
Nothing heavy is imported at module level.
"""

from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer

from .state import state

volume_app = typer.Typer(name="volume", help="Manage volumes.", no_args_is_help=True)

LS_HEADS = {"Name": "VOLUME NAME"}


def _time(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(t, "strftime") else str(t or "")


def _labels(v) -> dict:
    labels = dict(v.labels)
    if v.anonymous:
        labels.setdefault("com.docker.volume.anonymous", "")
    return labels


def inspect_json(v) -> dict:
    """docker volume inspect's object."""
    return {"CreatedAt": _time(v.created), "Driver": v.driver, "Labels": _labels(v) or None,
            "Mountpoint": v.mountpoint, "Name": v.name, "Options": v.options or None, "Scope": "local"}


def _row(v) -> dict:
    labels = _labels(v)
    return {"Name": v.name, "Driver": v.driver, "Scope": "local", "Mountpoint": v.mountpoint,
            "Labels": ",".join(f"{k}={x}" for k, x in sorted(labels.items())),
            "Label": (lambda k, _l=labels: _l.get(k, "")), "Links": str(len(v.containers)), "Size": "N/A",
            "CreatedAt": _time(v.created)}


def mounts_json(cfg: dict) -> list[dict]:
    """A container's Mounts as docker inspect shows them (from config["mounts"], runtime/mounts.py)."""
    out = []
    for m in cfg.get("mounts") or []:
        d = {"Type": m["type"]}
        if m["type"] == "volume":
            d["Name"] = m["name"]
        d.update({"Source": m["source"], "Destination": m["target"]})
        if m["type"] == "volume":
            d["Driver"] = "local"
        d.update({"Mode": m.get("mode") or "", "RW": not m["readonly"],
                  "Propagation": "rprivate" if m["type"] == "bind" else ""})
        out.append(d)
    return out


def mounts_field(cfg: dict) -> str:
    """ps's Mounts column: volume names and bind sources, as docker lists them."""
    return ",".join(m["name"] or m["source"] for m in cfg.get("mounts") or [] if m["type"] != "tmpfs")


def _parse_labels(labels: list[str]) -> dict[str, str]:
    out = {}
    for item in labels:
        k, _, v = item.partition("=")
        if not k:
            from container.engine.service import ContainerError

            raise ContainerError(f"invalid label '{item}': want KEY=VALUE")
        out[k] = v
    return out


def create_cmd(ctx: typer.Context,
               name: Annotated[Optional[str], typer.Argument(metavar="[VOLUME]", help="Name (default: random).")]
               = None,
               label: Annotated[Optional[List[str]], typer.Option("--label", "-l", help="KEY=VALUE (repeatable).")]
               = None,
               driver: Annotated[str, typer.Option("--driver", "-d", help="Only local.")] = "local") -> None:
    """Create a volume (an existing one of that name is kept as it is)."""
    if driver != "local":
        from container.engine.service import ContainerError

        raise ContainerError(f"volume driver {driver!r} is not supported: only local")
    v = state(ctx).engine.create_volume(name, labels=_parse_labels(list(label or [])))
    typer.echo(v.name)


def ls_cmd(ctx: typer.Context,
           quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only volume names.")] = False,
           format: Annotated[Optional[str], typer.Option("--format", help="json, table or a Go template.")]
           = None,
           filter: Annotated[Optional[List[str]], typer.Option(
               "--filter", "-f", help="dangling=true|false, driver=, label=KEY[=VALUE], name=REGEX (repeatable).")]
           = None) -> None:
    """List volumes."""
    from .format import parse_format, write
    from .output import print_table

    fmt = parse_format(format, headers=LS_HEADS, default="{{.Driver}}\t{{.Name}}") if format is not None else None
    vs = state(ctx).engine.volumes(filters=filter)
    if quiet:
        for v in vs:
            typer.echo(v.name)
        return
    if fmt is not None:
        write(fmt, [_row(v) for v in vs])
        return
    print_table(["DRIVER", "VOLUME NAME"], [[v.driver, v.name] for v in vs])


def inspect_cmd(ctx: typer.Context,
                names: Annotated[List[str], typer.Argument(metavar="VOLUME...", help="Volume names.")]) -> None:
    """Show volumes as docker volume inspect does (a JSON array); exit 1 when one is missing."""
    from container.engine.service import ContainerError

    from .output import err, print_json

    out, failed = [], False
    for n in names:
        try:
            out.append(inspect_json(state(ctx).engine.volume(n)))
        except ContainerError as e:
            err(str(e))
            failed = True
    print_json(out)
    if failed:
        raise typer.Exit(1)


def rm_cmd(ctx: typer.Context,
           names: Annotated[List[str], typer.Argument(metavar="VOLUME...", help="Volume names.")],
           force: Annotated[bool, typer.Option("--force", "-f", help="No error for a missing volume.")] = False
           ) -> None:
    """Remove volumes (never one a container uses: remove the container first)."""
    from container.engine.service import ContainerError, VolumeNotFound

    from .output import err

    failed = False
    for n in names:
        try:
            state(ctx).engine.remove_volume(n)
            typer.echo(n)
        except VolumeNotFound as e:
            if not force:
                err(str(e))
                failed = True
        except ContainerError as e:
            err(str(e))
            failed = True
    if failed:
        raise typer.Exit(1)


def prune_cmd(ctx: typer.Context,
              force: Annotated[bool, typer.Option("--force", "-f", help="Do not prompt for confirmation.")] = False,
              all: Annotated[bool, typer.Option("--all", "-a", help="Accepted for docker: every unused volume "
                                                               "goes, named ones too.")] = False) -> None:
    """Remove every volume no container uses (podman's rule; docker's with --all)."""
    from .output import human_size
    from .system import confirm_prune

    confirm_prune("  - all local volumes not used by at least one container", force)
    names, freed = state(ctx).engine.prune_volumes()
    if names:
        sys.stdout.write("Deleted Volumes:\n" + "".join(f"{n}\n" for n in names) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(freed)}\n")


def register(app: typer.Typer) -> None:
    volume_app.command("create")(create_cmd)
    volume_app.command("ls")(ls_cmd)
    volume_app.command("list", hidden=True)(ls_cmd)
    volume_app.command("inspect")(inspect_cmd)
    volume_app.command("rm")(rm_cmd)
    volume_app.command("remove", hidden=True)(rm_cmd)
    volume_app.command("prune")(prune_cmd)
    app.add_typer(volume_app, name="volume")
