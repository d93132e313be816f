"""Moving images without a registry: save, load, export, import, push (and their `image`/`container` aliases).

Rendering only; the work is engine/transfer through the facade (engine/service.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .output import is_tty
from .state import state


def save_cmd(
    ctx: typer.Context,
    images: Annotated[List[str], typer.Argument(metavar="IMAGE...", help="Images to save (reference or id).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to a file (or, for oci-dir, "
                                                   "a directory) instead of stdout.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="docker-archive (default), oci-archive or oci-dir.")]
    = "docker-archive",
) -> None:
    """Save images to a tar archive (docker-archive as docker 25 writes it, streamed to stdout by
    default) or an OCI layout."""
    from container.engine.service import ContainerError

    engine = state(ctx).engine
    if output is None:
        if fmt == "oci-dir":
            raise ContainerError("--format oci-dir needs -o DIRECTORY")
        if is_tty(sys.stdout):
            raise ContainerError("refusing to write an archive to a terminal: use -o or redirect stdout "
                                 "(docker: cowardly refusing to save to a terminal)")
        sys.stdout.flush()
        engine.save(images, fmt=fmt, stream=sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    engine.save(images, fmt=fmt, output=output)


def load_cmd(
    ctx: typer.Context,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Read from a tar archive or an "
                                                  "OCI layout directory instead of stdin.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Suppress the load output.")] = False,
) -> None:
    """Load images from a docker-archive (old or docker 25+), an OCI layout (directory or tar) or an
    oci-archive; every digest is verified."""
    from container.engine.service import ContainerError

    engine = state(ctx).engine
    listener = None if quiet or not state(ctx).verbose else (lambda m: sys.stderr.write(m + "\n"))
    if input is None:
        if is_tty(sys.stdin):
            raise ContainerError("requested load from stdin, but stdin is a terminal: use -i FILE or redirect stdin")
        loaded = engine.load(None, stream=sys.stdin.buffer, listener=listener)
    else:
        loaded = engine.load(input, listener=listener)
    if quiet:
        return
    for img in loaded:
        for n in img.names:
            typer.echo(f"Loaded image: {n}")
        if not img.names:
            typer.echo(f"Loaded image ID: {img.id}")


def export_cmd(
    ctx: typer.Context,
    container: Annotated[str, typer.Argument(metavar="CONTAINER", help="Container name or id.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to a file instead of stdout.")]
    = None,
) -> None:
    """Export a container's filesystem (the image's layers with the container's changes) as a tar."""
    from container.engine.service import ContainerError

    engine = state(ctx).engine
    if output is not None:
        engine.export(container, output=output)
        return
    if is_tty(sys.stdout):
        raise ContainerError("refusing to write a tar to a terminal: use -o or redirect stdout "
                             "(docker: cowardly refusing to save to a terminal)")
    sys.stdout.flush()
    engine.export(container, stream=sys.stdout.buffer)
    sys.stdout.buffer.flush()


def import_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="file|-", help="A root filesystem tarball (plain, gzip or "
                                          "zstd); - reads stdin.")],
    name: Annotated[Optional[str], typer.Argument(metavar="[REPOSITORY[:TAG]]", help="Name for the image.")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message for the history entry.")] = "",
) -> None:
    """Import a root filesystem tarball as a one-layer image; prints its id."""
    engine = state(ctx).engine
    if source == "-":
        image_id = engine.import_rootfs(None, name, stream=sys.stdin.buffer, message=message)
    else:
        image_id = engine.import_rootfs(Path(source), name, message=message)
    typer.echo(image_id)


def push_cmd(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="The local image (reference or id).")],
    dest: Annotated[Optional[str], typer.Argument(metavar="[DEST]", help="REGISTRY/REPO[:TAG] to push to "
                                                  "(default: IMAGE's own name).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final digest line.")] = False,
) -> None:
    """Push an image to a registry: blobs it has are skipped, blobs of its other repositories mounted."""
    st = state(ctx)

    def line(s: str) -> None:
        if not quiet:
            sys.stderr.write(s + "\n")
            sys.stderr.flush()

    res = st.engine.push(image, dest, listener=line,
                         log=(lambda m: sys.stderr.write(m + "\n")) if st.verbose else None)
    typer.echo(f"{res.tag or '<none>'}: digest: {res.digest} size: {res.size}")


def register(app: typer.Typer) -> None:
    app.command("save")(save_cmd)
    app.command("load")(load_cmd)
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)
    app.command("push")(push_cmd)
    from .system import image_app

    image_app.command("save", help="Save images to an archive (alias of save).")(save_cmd)
    image_app.command("load", help="Load images from an archive (alias of load).")(load_cmd)
    image_app.command("import", help="Import a root filesystem tarball (alias of import).")(import_cmd)
    image_app.command("push", help="Push an image to a registry (alias of push).")(push_cmd)
    from .system import container_app

    container_app.command("export", help="Export a container's filesystem (alias of export).")(export_cmd)
