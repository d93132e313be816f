"""What is inside an image, without running it: files, diff, history, packages (the contents index,
through engine/service.py's files/image_diff/history/packages)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .output import human_size, humanize_age, print_json, print_table
from .state import state

from .files_fast import TYPE_NAME as _TYPE_NAME, render_files


def files_cmd(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image reference or ID.")],
    path: Annotated[Optional[str], typer.Argument(help="Only this path and what is under it.")] = None,
    long: Annotated[bool, typer.Option("-l", "--long", help="Mode, owner, size, mtime (ls -l's columns).")] = False,
    layers: Annotated[bool, typer.Option("--layers", help="Prefix each entry with the layer that set it "
                                                          "(0 = base).")] = False,
    format: Annotated[Optional[str], typer.Option("--format", help="json: one object a line.")] = None,
) -> None:
    """List an image's merged filesystem without running it (like find; whiteouts applied).
    (The usual command lines take cli/files_fast.py's path, without typer.)"""
    from container.engine.service import ContainerError

    if format not in (None, "json"):
        raise ContainerError(f"unknown format {format!r}: use json")
    diff_ids, nodes = state(ctx).engine.files(image, path, detail=long or format == "json")
    text = render_files(diff_ids, nodes, long=long, layers=layers, fmt=format)
    if text:
        typer.echo(text)


def diff_cmd(
    ctx: typer.Context,
    image_a: Annotated[str, typer.Argument(help="The image to compare from.")],
    image_b: Annotated[str, typer.Argument(help="The image to compare to.")],
    format: Annotated[Optional[str], typer.Option("--format", help="json")] = None,
) -> None:
    """What changes from IMAGE_A's files to IMAGE_B's: A added, C changed, D deleted, with sizes."""
    from container.engine.service import ContainerError

    if format not in (None, "json"):
        raise ContainerError(f"unknown format {format!r}: use json")
    _a, _b, ch = state(ctx).engine.image_diff(image_a, image_b)
    if format == "json":
        print_json({
            "added": [{"path": n.path, "type": _TYPE_NAME.get(n.type), "size": n.size} for n in ch.added],
            "changed": [{"path": y.path, "type": _TYPE_NAME.get(y.type), "size_before": x.size, "size": y.size}
                        for x, y in ch.changed],
            "removed": [{"path": n.path, "type": _TYPE_NAME.get(n.type), "size": n.size} for n in ch.removed],
        })
        return
    rows = [("A", n.path, human_size(n.size)) for n in ch.added]
    rows += [("C", y.path, f"{human_size(x.size)} -> {human_size(y.size)}") for x, y in ch.changed]
    rows += [("D", n.path, human_size(n.size)) for n in ch.removed]
    for kind, p, size in sorted(rows, key=lambda r: r[1]):
        typer.echo(f"{kind} {p}\t{size}")
    add = sum(n.size for n in ch.added) + sum(y.size - x.size for x, y in ch.changed)
    gone = sum(n.size for n in ch.removed)
    typer.echo(f"{len(ch.added)} added, {len(ch.changed)} changed, {len(ch.removed)} removed; "
               f"+{human_size(max(add, 0))} -{human_size(gone + max(-add, 0))}", err=True)


HISTORY_HEADS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY"}


def history_cmd(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image reference or ID.")],
    human_: Annotated[str, typer.Option("--human", "-H", help="true|false: sizes and dates in human readable "
                                                              "form (docker's --human=false).")] = "true",
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Don't truncate output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show image IDs.")] = False,
    format: Annotated[Optional[str], typer.Option("--format", help="json, table or a Go template.")] = None,
) -> None:
    """Show the history of an image: its config's steps with the layer each made and its size."""
    from .format import parse_format, write
    from .output import go_time

    from container.engine.service import ContainerError

    if human_.lower() not in ("true", "false", "1", "0"):
        raise ContainerError(f"invalid argument {human_!r} for \"-H, --human\" flag: use true or false")
    human = human_.lower() in ("true", "1")
    default = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    fmt = parse_format(format, headers=HISTORY_HEADS, default=default) if format is not None else None
    _info, hist = state(ctx).engine.history(image)

    def short(i: str) -> str:
        return i if no_trunc or i == "<missing>" else i.split(":", 1)[-1][:12]

    if quiet:
        typer.echo("\n".join(short(h.id) for h in hist))
        return
    rows = []
    for h in hist:
        by = h.created_by.replace("\t", " ")
        if not no_trunc and len(by) > 45:
            by = by[:44] + "…"
        rows.append({"ID": short(h.id), "CreatedSince": humanize_age(h.created) if human else go_time(h.created),
                     "CreatedAt": go_time(h.created), "CreatedBy": by,
                     "Size": human_size(h.size) if human else str(h.size), "Comment": h.comment})
    if fmt is not None:
        write(fmt, rows)
        return
    print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                [[r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Comment"]] for r in rows])


def packages_cmd(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image reference or ID.")],
    format: Annotated[Optional[str], typer.Option("--format", help="json: one object a line.")] = None,
) -> None:
    """List the packages an image ships (dpkg, apk, rpm databases; os-release) and the layer that last
    changed each."""
    from container.engine.service import ContainerError

    if format not in (None, "json"):
        raise ContainerError(f"unknown format {format!r}: use json")
    info, pkgs = state(ctx).engine.packages(image)
    if format == "json":
        import json

        for p in pkgs:
            typer.echo(json.dumps(p, separators=(",", ":")))
        return
    osr = [p for p in pkgs if p["manager"] == "os-release"]
    if osr:
        typer.echo(f"OS: {osr[0]['source'] or osr[0]['name'] + ' ' + osr[0]['version']}", err=True)
    print_table(["NAME", "VERSION", "ARCH", "SOURCE", "MANAGER", "LAYER"],
                [[p["name"], p["version"], p["arch"], p["source"], p["manager"],
                  f"{p['layer']} {(p['diff_id'] or '').split(':', 1)[-1][:12]}"]
                 for p in pkgs if p["manager"] != "os-release"])


def register(app: typer.Typer) -> None:
    app.command("files")(files_cmd)
    app.command("diff")(diff_cmd)
    app.command("history")(history_cmd)
    app.command("packages")(packages_cmd)
    from .system import image_app

    image_app.command("history", help="Show the history of an image (alias of history).")(history_cmd)
