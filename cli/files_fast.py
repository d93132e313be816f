"""`container files` without typer (building the typer app costs more than listing 10k entries),
and the rendering both paths share (cli/contents.py's files_cmd is the typer command).

    fast_files(argv) -> exit code | None     None: not a command line this parser takes (typer then)

Takes `[--root R] [--db D] [-v] files [-l|--long] [--layers] [--format json] IMAGE [PATH]`;
anything else (--help, an unknown option, a missing IMAGE) goes to typer, which prints its usage.
stdlib imports only, and the engine's facade.
"""

from __future__ import annotations

import stat            # (loaded by os already)
import sys

TYPE_CHECKING = False        # (mypy reads this block as true; typing, json and datetime cost `files` 6 ms)
if TYPE_CHECKING:
    from typing import Any

TYPE_NAME = {"f": "file", "h": "hardlink", "d": "directory", "l": "symlink", "c": "char", "b": "block",
             "p": "fifo"}
_TYPE_CHAR = {"f": "-", "h": "-", "d": "d", "l": "l", "c": "c", "b": "b", "p": "p"}


def _mode(n) -> str:
    """ls -l's mode column ("drwxr-xr-x")."""
    return _TYPE_CHAR.get(n.type, "?") + stat.filemode(n.mode)[1:]


def _mtime(sec: int) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def node_json(n, layer_ids: tuple[str, ...]) -> dict[str, Any]:
    return {"path": n.path, "type": TYPE_NAME.get(n.type, n.type), "mode": f"{n.mode:04o}", "uid": n.uid,
            "gid": n.gid, "size": n.size, "mtime": n.mtime, "link": n.link,
            "xattrs": n.xattrs.split(",") if n.xattrs else [], "sha256": n.sha256, "layer": n.position,
            "diff_id": layer_ids[n.position] if n.position < len(layer_ids) else None}


def render_files(diff_ids: tuple[str, ...], nodes, *, long: bool, layers: bool, fmt: str | None) -> str:
    """The text `files` prints (no trailing newline; "" for nothing)."""
    out: list[str] = []
    if fmt == "json":
        import json

        out = [json.dumps(node_json(n, diff_ids), separators=(",", ":")) for n in nodes]
    elif not long:
        out = [f"{n.position}\t{n.path}" if layers else n.path for n in nodes]
    else:
        w_own = max((len(f"{n.uid}/{n.gid}") for n in nodes), default=3)
        w_size = max((len(str(n.size)) for n in nodes), default=1)
        for n in nodes:
            tail = f" -> {n.link}" if n.type == "l" else f" link to {n.link}" if n.type == "h" else ""
            line = (f"{_mode(n)} {f'{n.uid}/{n.gid}':<{w_own}} {n.size:>{w_size}} {_mtime(n.mtime)} "
                    f"{n.path}{tail}")
            out.append(f"{n.position}\t{line}" if layers else line)
    return "\n".join(out)


def _parse(args: list[str]) -> tuple[dict, dict] | None:
    from .containers import TyperFallback, parse_globals

    try:
        g, i = parse_globals(args, "files")
    except TyperFallback:
        return None
    kw: dict = {"long": False, "layers": False, "fmt": None, "pos": []}
    rest = args[i + 1:]
    j = 0
    while j < len(rest):
        a = rest[j]
        if a in ("-l", "--long"):
            kw["long"] = True
        elif a == "--layers":
            kw["layers"] = True
        elif a == "--format" and j + 1 < len(rest):
            kw["fmt"] = rest[j + 1]
            j += 1
        elif a.startswith("--format="):
            kw["fmt"] = a.partition("=")[2]
        elif a.startswith("-") and a != "-":
            return None
        else:
            kw["pos"].append(a)
        j += 1
    if not 1 <= len(kw["pos"]) <= 2 or kw["fmt"] not in (None, "json"):
        return None
    return g, kw


def fast_files(args: list[str]) -> int | None:
    if "files" not in args:
        return None
    parsed = _parse(args)
    if parsed is None:
        return None
    g, kw = parsed
    from container.engine.service import Engine

    try:
        pos = kw["pos"]
        diff_ids, nodes = Engine(g["root"], g["db"]).files(pos[0], pos[1] if len(pos) > 1 else None,
                                                        detail=kw["long"] or kw["fmt"] == "json")
        text = render_files(diff_ids, nodes, long=kw["long"], layers=kw["layers"], fmt=kw["fmt"])
        if text:
            sys.stdout.write(text + "\n")
        return 0
    except BrokenPipeError:
        return 0
    except (Exception, KeyboardInterrupt) as e:
        from .errors import report

        return report(e)
