"""Image commands: pull (its display and typer-free entry: cli/pulling.py), images (list), rmi, inspect,
tag, login, logout.

Nothing heavy at import time: the engine, requests and rich are imported inside the commands.
"""

from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer

from .output import err, human_size, humanize_age, print_json, print_table
from .state import state


def pull_cmd(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="Image reference: NAME[:TAG|@DIGEST]")],
    platform: Annotated[Optional[str], typer.Option("--platform", help="os/arch[/variant], e.g. linux/arm64")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the image digest.")] = False,
    no_snapshot: Annotated[bool, typer.Option("--no-snapshot", help="Do not build the image's root filesystem "
                                              "now (the first run does); config: snapshot_on_pull = false.")]
    = False,
) -> None:
    """Pull an image from a registry (and build its root filesystem, so it is ready to run)."""
    from .pulling import pull_image

    st = state(ctx)
    code = pull_image(st.engine, image, platform=platform, quiet=quiet, no_snapshot=no_snapshot,
                      verbose=st.verbose)
    if code:
        raise typer.Exit(code)


# -- list --------------------------------------------------------------------------------------------
def images_cmd(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all images (there are no intermediate "
                                                           "images here: the same list).")] = False,
    digests: Annotated[bool, typer.Option("--digests", help="Show digests.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show image IDs.")] = False,
    format: Annotated[Optional[str], typer.Option("--format", help="json, table or a Go template.")] = None,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Don't truncate IDs.")] = False,
    filter: Annotated[Optional[List[str]], typer.Option(
        "--filter", "-f", help="dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE, "
                               "label=KEY[=VALUE] (repeatable)")] = None,
) -> None:
    """List images (--format: json, table, or a Go template as docker's: '{{.Repository}}:{{.Tag}}')."""
    from .format import parse_format, write

    fmt = None
    if format is not None:
        default = "{{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if digests else "") + \
            "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        fmt = parse_format(format, headers=IMAGE_HEADS, default=default)
    imgs = state(ctx).engine.images(filters=filter)
    if quiet:
        seen = []
        for i in imgs:
            iid = i.config_digest if no_trunc else i.short_id
            if iid not in seen:
                seen.append(iid)
        for iid in seen:
            typer.echo(iid)
        return
    rows = image_rows(imgs, no_trunc=no_trunc)
    if fmt is not None:
        write(fmt, rows)
        return
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    ro = any(r["ReadOnly"] for r in rows)      # images of read-only stores: a column saying which
    print_table(headers + (["R/O"] if ro else []),
                [[r["Repository"], r["Tag"]] + ([r["Digest"]] if digests else []) +
                 [r["ID"], r["CreatedSince"], r["Size"]] + (["ro" if r["ReadOnly"] else ""] if ro else [])
                 for r in rows])
    if ro:
        stores = sorted({r["Store"] for r in rows if r["ReadOnly"]})
        typer.echo(f"(R/O: from the read-only store{'s' if len(stores) > 1 else ''} {', '.join(stores)}; "
                   "rmi, gc and prune never touch them)", err=True)


IMAGE_HEADS = {"ID": "IMAGE ID", "CreatedSince": "CREATED"}


def image_rows(imgs, *, no_trunc: bool = False) -> list[dict]:
    """docker's image rows (one per repository:tag, <none> for an untagged image), with docker's
    --format fields (all strings, as docker prints them) and ours: ManifestDigest, IndexDigest,
    Platform, ImageID (the full config digest), Bytes (SIZE as a number), ReadOnly (podman's: in a
    read-only store) and Store (that store's directory, "" for the user's own)."""
    from .output import go_time

    rows = []
    for i in imgs:
        iid = i.config_digest if no_trunc else i.short_id
        entries = [(t.rsplit(":", 1)[0], t.rsplit(":", 1)[1]) for t in i.repo_tags]
        digest_of = {d.split("@", 1)[0]: d.split("@", 1)[1] for d in i.repo_digests}
        untagged_repos = [r for r in digest_of if r not in {e[0] for e in entries}]
        entries += [(r, "<none>") for r in untagged_repos]
        if not entries:
            entries = [("<none>", "<none>")]
        for repo, tag in entries:
            rows.append({
                "ID": iid, "Repository": repo, "Tag": tag, "Digest": digest_of.get(repo, "<none>"),
                "CreatedSince": humanize_age(i.created), "CreatedAt": go_time(i.created),
                "Size": human_size(i.size), "VirtualSize": human_size(i.size), "SharedSize": "N/A",
                "UniqueSize": "N/A", "Containers": "N/A",
                "ManifestDigest": i.id, "IndexDigest": i.index_digest or "", "Platform": i.platform,
                "ImageID": i.config_digest, "Bytes": i.size,
                "ReadOnly": bool(i.readonly_store), "Store": i.readonly_store,
            })
    return rows


def _iso(d) -> str | None:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d is not None else None


# -- inspect -------------------------------------------------------------------------------------------
def _inspect_image(i) -> dict:
    c = i.config or {}
    cc = c.get("config") or {}
    return {
        "Id": i.config_digest,
        "RepoTags": list(i.repo_tags),
        "RepoDigests": list(i.repo_digests),
        "Created": c.get("created") or _iso(i.created),
        "Author": c.get("author", ""),
        "Architecture": i.architecture,
        "Variant": i.variant or None,
        "Os": i.os,
        "Size": i.size,
        "Config": {
            "User": cc.get("User", ""),
            "Env": cc.get("Env"),
            "Cmd": cc.get("Cmd"),
            "Entrypoint": cc.get("Entrypoint"),
            "WorkingDir": cc.get("WorkingDir", ""),
            "Labels": cc.get("Labels"),
            "ExposedPorts": cc.get("ExposedPorts"),
            "Volumes": cc.get("Volumes"),
            "StopSignal": cc.get("StopSignal"),
            "OnBuild": cc.get("OnBuild"),
        },
        "RootFS": {"Type": "layers", "Layers": list(i.diff_ids)},
        "History": c.get("history") or [],
        "Container": {
            "ManifestDigest": i.id,
            "IndexDigest": i.index_digest,
            "Platform": i.platform,
            "ChainID": i.chain_id,
            "DownloadSize": i.download_size,
            "Pulled": _iso(i.pulled),
            "Layers": [{"Digest": l.blob_digest, "DiffID": l.diff_id, "MediaType": l.media_type,
                        "Size": l.size, "UnpackedSize": l.unpacked_size, "Entries": l.entries}
                       for l in i.layers],
        },
    }


def inspect_cmd(
    ctx: typer.Context,
    names: Annotated[List[str], typer.Argument(metavar="NAME...", help="Images (or containers) to inspect.")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="A Go template: '{{.Config.Env}}'.")]
    = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="image or container: look only there.")] = None,
) -> None:
    """Show details of images (or containers) as JSON, or each through a Go template (-f)."""
    from container.engine.service import ContainerNotFound, ImageNotFound

    from .format import parse_format, write

    fmt = parse_format(format, headers={}, default="{{json .}}", strict=False) if format is not None else None
    if type_ not in (None, "image", "container"):
        from container.engine.service import ContainerError

        raise ContainerError(f'"{type_}" is not a valid value for --type: use image or container')
    engine = state(ctx).engine
    out, missing = [], []
    for name in names:
        if type_ != "container":
            try:
                out.append(_inspect_image(engine.image(name)))
                continue
            except ImageNotFound:
                if type_ == "image":
                    missing.append(name)
                    continue
        try:
            c = engine.container(name)
        except (ContainerNotFound, ImageNotFound):
            missing.append(name)
            continue
        from .containers import inspect_json

        out.append(inspect_json(c))
    if fmt is not None:
        write(fmt, out)
    elif out or not missing:
        print_json(out)
    for m in missing:
        err(f"No such {type_ or 'object'}: {m}")
    if missing:
        raise typer.Exit(1)


# -- rmi / tag ------------------------------------------------------------------------------------------
def rmi_cmd(
    ctx: typer.Context,
    images: Annotated[List[str], typer.Argument(metavar="IMAGE...", help="Images to remove (reference or id).")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove even if used by containers or in several repos.")] = False,
) -> None:
    """Remove image tags; an image with no tag left is deleted (files are reclaimed by gc)."""
    from container.engine.service import ContainerError

    engine = state(ctx).engine
    failed = False
    for name in images:
        try:
            res = engine.remove_image(name, force=force)
        except ContainerError as e:
            err(str(e))
            failed = True
            continue
        for u in res.untagged:
            typer.echo(f"Untagged: {u}")
        for d in res.deleted:
            typer.echo(f"Deleted: {d}")
    if failed:
        raise typer.Exit(1)


def tag_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SOURCE_IMAGE[:TAG]", help="SOURCE_IMAGE[:TAG] or id")],
    target: Annotated[str, typer.Argument(metavar="TARGET_IMAGE[:TAG]", help="TARGET_IMAGE[:TAG]")],
) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    state(ctx).engine.tag(source, target)


# -- login / logout --------------------------------------------------------------------------------------
def login_cmd(
    ctx: typer.Context,
    server: Annotated[Optional[str], typer.Argument(metavar="[SERVER]", help="Registry host (default: Docker Hub).")] = None,
    username: Annotated[Optional[str], typer.Option("--username", "-u")] = None,
    password: Annotated[Optional[str], typer.Option("--password", "-p")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Log in to a registry (credentials saved in ~/.docker/config.json, mode 0600)."""
    from container.engine.service import Engine

    host = Engine.registry_host(server)
    if password_stdin:
        if password:
            raise typer.BadParameter("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            raise typer.BadParameter("username required (-u) when not on a terminal")
        username = input("Username: ")
    if not password:
        if password_stdin or not sys.stdin.isatty():
            raise typer.BadParameter("password required (-p or --password-stdin)")
        import getpass
        password = getpass.getpass("Password: ")
    if password and not password_stdin and ("-p" in sys.argv or "--password" in sys.argv):
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    where = Engine.login(host, username, password, log=(lambda m: sys.stderr.write(m + "\n"))
                         if state(ctx).verbose else None)
    if "docker-credential-" not in where:
        sys.stderr.write(f"WARNING! Your password will be stored unencrypted in {where}.\n")
    typer.echo("Login Succeeded")


def logout_cmd(
    ctx: typer.Context,
    server: Annotated[Optional[str], typer.Argument(metavar="[SERVER]", help="Registry host (default: Docker Hub).")] = None,
) -> None:
    """Log out from a registry."""
    from container.engine.service import Engine

    shown, removed = Engine.logout(server)
    if removed:
        typer.echo(f"Removing login credentials for {shown}")
    else:
        typer.echo(f"Not logged in to {shown}")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_cmd)
    app.command("images")(images_cmd)
    app.command("list", help="List images (alias of images).")(images_cmd)
    app.command("rmi")(rmi_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("tag")(tag_cmd)
    app.command("login")(login_cmd)
    app.command("logout")(logout_cmd)
    # docker's management-command spelling: `container image rm|ls|pull|inspect|tag`
    from .system import image_app

    image_app.command("rm", help="Remove image references (alias of rmi).")(rmi_cmd)
    image_app.command("ls", help="List images (alias of images).")(images_cmd)
    image_app.command("pull", help="Pull an image (alias of pull).")(pull_cmd)
    image_app.command("inspect", help="Show details of images (alias of inspect).")(inspect_cmd)
    image_app.command("tag", help="Create a tag (alias of tag).")(tag_cmd)
