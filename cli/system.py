"""gc, prune (image/container/system), df, fsck, sql; the `image`, `container` and `system` groups.

    container gc [--dry-run]
    container prune [-a] [-f] [--filter until=…]            (= image prune)
    container image prune [-a] [-f] [--filter until=…]
    container container prune [-f] [--filter until=…]
    container system prune [-a] [-f] [--filter until=…]      (containers, then images, then gc)
    container df [-v] [--format json|TEMPLATE|report]        (alias: system df)
    container fsck [--repair] [--deep]
    container sql "SELECT …" [--format table|json|csv] | --schema

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import sys
from typing import Annotated, List, Optional

import typer

from .state import state

image_app = typer.Typer(name="image", help="Manage images.", no_args_is_help=True)
container_app = typer.Typer(name="container", help="Manage containers.", no_args_is_help=True)
system_app = typer.Typer(name="system", help="Manage the store.", no_args_is_help=True)

FORCE = typer.Option("--force", "-f", help="Do not prompt for confirmation.")
FILTER = typer.Option("--filter", help="Filter (until=<timestamp|duration>).")
ALL = typer.Option("--all", "-a", help="Remove all unused images, not just dangling ones.")


def confirm_prune(what: str, force: bool) -> None:
    from .output import is_tty

    if force:
        return
    if not is_tty(sys.stdin):
        from container.engine.service import ContainerError

        raise ContainerError("refusing to prune without confirmation: stdin is not a terminal; "
                             "use --force")
    sys.stdout.write(f"WARNING! This will remove:\n{what}\n")
    if not typer.confirm("Are you sure you want to continue?", default=False):
        raise typer.Exit(0)


def _short(d: str) -> str:
    return d.split(":", 1)[-1][:12]


def _print_sweep(plan, *, dry_run: bool, verbose: bool, show_images: bool, show_containers: bool) -> None:
    from .output import human_size

    out = sys.stdout.write
    would = "Would delete" if dry_run else "Deleted"
    if show_containers or plan.containers:
        if plan.containers:
            out(f"{would} Containers:\n")
            for cid, _name in plan.containers:
                out(f"{cid}\n")
            out("\n")
    if show_images or plan.images:
        if plan.images:
            out(f"{would} Images:\n")
            for _iid, config, tags in plan.images:
                for t in tags:
                    out(f"untagged: {t}\n")
                out(f"deleted: {config}\n")
            out("\n")
    units = plan.units
    if units:
        counts: dict[str, int] = {}
        for u in units:
            counts[u.kind] = counts.get(u.kind, 0) + 1
        if dry_run or verbose:
            out(f"{would} files:\n")
            for u in units:
                out(f"{u.kind:<10} {u.key:<72} {human_size(plan.unit_freed.get(id(u), 0))}\n")
        else:
            out(f"{would}: " + ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(counts.items()))
                + "\n")
    rows = [("blob rows", plan.blobs), ("layer rows", plan.layers), ("snapshot rows", plan.snapshots),
            ("expired leases", plan.leases)]
    rows = [(k, v) for k, v in rows if v]
    if rows and (dry_run or verbose):
        out(f"{would} " + ", ".join(f"{len(v)} {k}" for k, v in rows) + "\n")
    for kind, key, stored, actual in plan.drift:
        out(f"{'Would fix' if dry_run else 'Fixed'} refcount drift: {kind} {key} stored {stored}, "
            f"actual {actual}\n")
    for s in plan.skipped:
        sys.stderr.write(f"Skipped: {s}\n")
    for e in plan.errors:
        sys.stderr.write(f"Error: {e}\n")
    label = "Total reclaimable space" if dry_run else "Total reclaimed space"
    out(f"{label}: {human_size(plan.freed)}\n")


def _prune(ctx, *, containers: bool, images: Optional[str], force: bool, filters, dry_run=False,
           warn_text: str) -> None:
    from container.engine.service import Engine

    until = Engine.prune_filters(filters)
    if not dry_run:
        confirm_prune(warn_text, force)
    st = state(ctx)
    plan = st.engine.prune(containers=containers, images=images, until=until, dry_run=dry_run)
    _print_sweep(plan, dry_run=dry_run, verbose=st.verbose, show_images=bool(images),
                 show_containers=containers)
    if plan.errors:
        raise typer.Exit(1)


# -- gc ------------------------------------------------------------------------------------------

def gc_cmd(ctx: typer.Context,
           dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="List what would go, with sizes.")]
           = False) -> None:
    """Delete everything no tag, container or in-flight pull references."""
    st = state(ctx)
    plan = st.engine.gc(dry_run=dry_run)
    _print_sweep(plan, dry_run=dry_run, verbose=st.verbose, show_images=False, show_containers=False)
    if plan.errors:
        raise typer.Exit(1)


# -- prune -----------------------------------------------------------------------------------------

def image_prune(ctx: typer.Context, all: Annotated[bool, ALL] = False, force: Annotated[bool, FORCE] = False,
                filter: Annotated[Optional[List[str]], FILTER] = None) -> None:
    """Remove unused images (dangling ones; with -a every image no container uses)."""
    _prune(ctx, containers=False, images="all" if all else "dangling", force=force, filters=filter,
           warn_text="  - all images without at least one container associated to them" if all else
           "  - all dangling images")


def container_prune(ctx: typer.Context, force: Annotated[bool, FORCE] = False,
                    filter: Annotated[Optional[List[str]], FILTER] = None) -> None:
    """Remove all stopped containers."""
    _prune(ctx, containers=True, images=None, force=force, filters=filter,
           warn_text="  - all stopped containers")


def system_prune(ctx: typer.Context, all: Annotated[bool, ALL] = False, force: Annotated[bool, FORCE] = False,
                 filter: Annotated[Optional[List[str]], FILTER] = None) -> None:
    """Remove stopped containers, unused images, then everything nothing references (gc)."""
    _prune(ctx, containers=True, images="all" if all else "dangling", force=force, filters=filter,
           warn_text="  - all stopped containers\n"
                     + ("  - all images without at least one container associated to them\n" if all
                        else "  - all dangling images\n")
                     + "  - all unreferenced store content (gc)")


# -- df --------------------------------------------------------------------------------------------

def df_cmd(ctx: typer.Context,
           verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The store's finer rows, and per "
                                                                         "image: shared and unique size.")]
           = False,
           format: Annotated[Optional[str], typer.Option(
               "--format", help="json, table, a Go template, or report (the whole accounting as JSON).")]
           = None) -> None:
    """Show disk usage as docker does: Images (the bytes the images hold: their layers, each shared
    one once, and their snapshots) and Containers; -v adds the store's finer rows (manifests,
    layers, snapshots, containers, ingest, unreferenced), which add up to the store.

    Sizes are disk usage (st_blocks, as du counts), each hardlinked inode once; the rows add up to
    the store (the database, lock and skeleton dirs are reported apart in --format report as
    "metadata"). RECLAIMABLE is what `image prune -a` (then gc) frees, and for containers what
    `container prune` frees."""
    from .format import parse_format

    fmt = None
    if format is not None and format != "report":
        fmt = parse_format(format, headers=DF_HEADS,
                           default="{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}")
    report = state(ctx).engine.disk_usage(verbose=verbose)
    if format == "report":
        from .output import print_json

        print_json(report)
        return
    _render_df(report, verbose=verbose, fmt=fmt)


DF_HEADS = {"TotalCount": "TOTAL", "Reclaimable": "RECLAIMABLE"}


def df_rows(rows: list[dict]) -> list[dict]:
    """docker's df --format fields (strings, as docker prints them) and ours: Bytes, ReclaimableBytes."""
    from .output import human_size

    return [{"Type": r["type"], "TotalCount": str(r["total"]), "Active": str(r["active"]),
             "Size": human_size(r["size"]),
             "Reclaimable": f"{human_size(r['reclaimable'])} ({100 * r['reclaimable'] // r['size'] if r['size'] else 0}%)",
             "Bytes": r["size"], "ReclaimableBytes": r["reclaimable"]} for r in rows]


def _render_df(report: dict, *, verbose: bool, fmt=None) -> None:
    from .format import write
    from .output import human_size, print_table

    if fmt is not None:
        write(fmt, df_rows(report["docker"] + (report["summary"] if verbose else [])))
        return

    def table(rows: list[dict]) -> None:
        print_table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                    [[r["Type"], r["TotalCount"], r["Active"], r["Size"], r["Reclaimable"]] for r in df_rows(rows)])

    table(report["docker"])
    if verbose:
        sys.stdout.write("\nStore space usage (these rows add up to the store):\n\n")
        table(report["summary"])
        sys.stdout.write("\nImages space usage:\n\n")
        rows = []
        for im in report["images"]:
            tags = im["tags"] or ["<none>:<none>"]
            for t in tags[:1]:
                repo, _, tag = t.rpartition(":") if "@" not in t else (t.split("@")[0], "", "<none>")
                rows.append([repo or t, tag or "<none>", _short(im["config_digest"]),
                             human_size(im["size"]), human_size(im["shared"]), human_size(im["unique"]),
                             im["containers"]])
        print_table(["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"], rows)
        sys.stdout.write(f"\nImages total: {human_size(report['images_total'])} "
                         f"(unique {human_size(sum(i['unique'] for i in report['images']))} "
                         f"+ shared {human_size(report['images_shared'])}"
                         f"{' - deduplicated ' + human_size(report['deduplicated']) if report.get('deduplicated') else ''})\n")
        sys.stdout.write(f"Deduplicated: {human_size(report.get('deduplicated', 0))} "
                         "(identical files of layer trees stored once; taken off Layers)\n")
        sys.stdout.write("\nContainers space usage:\n\n")
        print_table(["CONTAINER ID", "IMAGE", "SIZE", "STATUS", "NAMES"],
                    [[c["id"][:12], c["image"], human_size(c["size"]), c["status"], c["name"]]
                     for c in report["containers"]])
        sys.stdout.write("\nLocal Volumes space usage:\n\n")
        print_table(["VOLUME NAME", "LINKS", "SIZE"],
                    [[v["name"], v["links"], human_size(v["size"])] for v in report.get("volumes", [])])


# -- fsck -----------------------------------------------------------------------------------------

def fsck_cmd(ctx: typer.Context,
             repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed, and say what.")]
             = False,
             deep: Annotated[bool, typer.Option("--deep", help="Also verify every unpacked layer tree "
                                                                "against its blob.")] = False) -> None:
    """Check the store: rows vs files both ways, blob hashes, refcounts, half-built trees."""
    st = state(ctx)
    report = st.engine.fsck(repair=repair, deep=deep)
    _render_fsck(report, repair=repair, verbose=st.verbose)
    if report.remaining:
        raise typer.Exit(1)



def _render_fsck(rep, *, repair: bool, verbose: bool) -> None:
    out = sys.stdout.write
    for p in rep.problems:
        if p.fixed:
            out(f"repaired  {p.kind:<17} {p.detail}: {p.fixed}\n")
        else:
            out(f"PROBLEM   {p.kind:<17} {p.detail}\n")
    for n in rep.notes:
        out(f"note      {n}\n")
    if verbose:
        out("checked: " + ", ".join(f"{k}={v}" for k, v in rep.checked.items()) + "\n")
    left = len(rep.remaining)
    fixed = len(rep.problems) - left
    if not rep.problems:
        out("fsck: no problems found\n")
    elif repair:
        out(f"fsck: {fixed} problem(s) repaired, {left} remaining\n")
    else:
        out(f"fsck: {left} problem(s) found (container fsck --repair fixes what it can)\n")


# -- sql ------------------------------------------------------------------------------------------

def sql_cmd(ctx: typer.Context,
            query: Annotated[Optional[str], typer.Argument(metavar="[QUERY]", help="A read-only SQL query.")] = None,
            format: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
            schema: Annotated[bool, typer.Option("--schema", help="Print the documented schema.")] = False
            ) -> None:
    """Run a read-only SQL query against the metadata database."""
    from container.engine.service import ContainerError, Engine

    if schema:
        sys.stdout.write(_schema_markdown(*Engine.sql_schema()))
        return
    if not query:
        raise ContainerError('give a query, e.g. container sql "SELECT * FROM image", or --schema')
    if format not in ("table", "json", "csv"):
        raise ContainerError(f"unknown format {format!r}: use table, json or csv")
    st = state(ctx)
    cols, rows = st.engine.sql(query)
    _render_sql(cols, rows, format)


def _schema_markdown(tables, examples) -> str:
    """The documented schema as markdown (docs/schema.md is this text)."""
    out = ["# The metadata database (`container sql`)", "",
           "`container sql \"SELECT …\" [--format table|json|csv]` runs one read-only query against the",
           "store's metadata database (SQLite in ROOT/metadata.db unless --db names another, such as",
           "PostgreSQL: the same tables). The connection itself is read-only (SQLite `mode=ro` +",
           "`PRAGMA query_only`, an authorizer that refuses ATTACH and PRAGMA writes; on PostgreSQL one",
           "prepared statement in a READ ONLY transaction): writes fail, whatever the text. Times are",
           "UTC. Digests are `sha256:<64 hex>`. `->` marks a foreign key. `string_agg(X, SEP)` works on",
           "both backends, as in the examples below, and so do `version_cmp(a, b[, manager])` (-1, 0, 1)",
           "and `version_lt(a, b[, manager])`: the package manager's version ordering for the package table",
           "(`manager` 'rpm': rpm's rpmvercmp over epoch:version-release, `~` first, `^` after the base;",
           "'apk': apk's, `_alpha`..`_rc` before the release, `_p` after, `-r#`; anything else or no",
           "manager: dpkg's, epochs and `~` before anything): `version_lt(p.version, '3.0.14', p.manager)`.",
           ""]
    for t in tables:
        out.append(f"## {t.name}")
        out.append("")
        if t.what:
            out += [t.what, ""]
        out.append("| column | type | meaning |")
        out.append("|---|---|---|")
        for c in t.columns:
            typ = c.type + (f" ({', '.join(c.flags)})" if c.flags else "")
            out.append(f"| {c.name} | {typ} | {c.meaning} |")
        out.append("")
    out.append("## Example queries")
    out.append("")
    for title, q in examples:
        out += [f"{title}:", "", "```sh", f'container sql "{q}"', "```", ""]
    return "\n".join(out)


def _cell(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v


def _render_sql(cols: list[str], rows: list[tuple], fmt: str) -> None:
    """Query results as json, csv or aligned columns (NULL shown as NULL, bytes as hex)."""
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps([{c: _cell(v) for c, v in zip(cols, r)} for r in rows], indent=2,
                                    default=str) + "\n")
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else _cell(v) for v in r])
    else:
        rows_s = [["NULL" if v is None else str(_cell(v)) for v in r] for r in rows]
        widths = [len(c) for c in cols]
        for r in rows_s:
            for i, c in enumerate(r):
                widths[i] = max(widths[i], len(c))
        fmt_s = "   ".join("{:<%d}" % w for w in widths)
        if cols:
            sys.stdout.write(fmt_s.format(*cols).rstrip() + "\n")
        for r in rows_s:
            sys.stdout.write(fmt_s.format(*r).rstrip() + "\n")


def register(app: typer.Typer) -> None:
    app.command("gc")(gc_cmd)
    app.command("prune")(image_prune)
    app.command("df")(df_cmd)
    app.command("fsck")(fsck_cmd)
    app.command("sql")(sql_cmd)

    image_app.command("prune")(image_prune)
    container_app.command("prune")(container_prune)
    system_app.command("prune")(system_prune)
    system_app.command("df")(df_cmd)
    system_app.command("gc")(gc_cmd)
    app.add_typer(image_app, name="image")
    app.add_typer(container_app, name="container")
    app.add_typer(system_app, name="system")
