"""Container commands: run, ps, rm, and a container's `inspect` JSON. Registered by register(app).

`container run` latency matters (goal <= 60 ms), so this module imports nothing heavy at module
level, and cli/app.py's main() tries `fast_main()` first: it parses the global options and
`run`'s options by hand, without typer/click, and calls the same `do_run()` as the typer
command. It accepts exactly the spellings click would (long `--opt value` / `--opt=value`,
short `-e value` / `-evalue`, clustered flags `-it`, `--`, options before IMAGE only) and
hands anything else (help, unknown or malformed options, a missing value) back to typer,
so errors and help text come from one place and the result is the same either way.
"""

import os
import sys

# run's options: (names, dest, takes a value, repeatable)
RUN_OPTIONS = [
    (("--name",), "name", True, False),
    (("--rm",), "rm", False, False),
    (("--hostname",), "hostname", True, False),
    (("-e", "--env"), "env", True, True),
    (("--env-file",), "env_files", True, True),
    (("-w", "--workdir"), "workdir", True, False),
    (("-u", "--user"), "user", True, False),
    (("--entrypoint",), "entrypoint", True, False),
    (("-i", "--interactive"), "interactive", False, False),
    (("-t", "--tty"), "tty", False, False),
    (("--read-only",), "read_only", False, False),
    (("--pull",), "pull", True, False),
    (("--isolation",), "isolation", True, False),
    (("--network", "--net"), "network", True, False),
    (("--platform",), "platform", True, False),
    (("-d", "--detach"), "detach", False, False),
    (("--restart",), "restart", True, False),
    (("--init",), "init", False, False),
    (("--log-opt",), "log_opts", True, True),
]
_BY_NAME = {n: (dest, val, rep) for names, dest, val, rep in RUN_OPTIONS for n in names}


class TyperFallback(Exception):
    """parse_run() saw something it does not handle: typer parses the whole command line instead."""


def parse_globals(args: list[str], verb: str) -> tuple[dict, int]:
    """The global options before `verb` ({root, db, verbose}, the verb's index); TyperFallback for
    anything else (cli/files_fast.py uses it too)."""
    g: dict = {"root": None, "db": None, "verbose": False}
    i = 0
    while i < len(args):
        a = args[i]
        if a == verb:
            break
        if a in ("--root", "--db"):
            if i + 1 >= len(args):
                raise TyperFallback
            g[a[2:]] = args[i + 1]
            i += 2
        elif a.startswith(("--root=", "--db=")):
            k, _, v = a[2:].partition("=")
            g[k] = v
            i += 1
        elif a in ("-v", "--verbose"):
            g["verbose"] = True
            i += 1
        else:
            raise TyperFallback
    else:
        raise TyperFallback
    return g, i


def parse_run(args: list[str]) -> tuple[dict, dict]:
    """(globals, run kwargs) for `[--root R] [--db D] [-v] run [OPTIONS] IMAGE [COMMAND...]`."""
    g, i = parse_globals(args, "run")
    i += 1
    kw: dict = {"env": [], "env_files": [], "log_opts": []}

    def put(dest, val, rep, value):
        if rep:
            kw[dest].append(value)
        else:
            kw[dest] = value

    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if name not in _BY_NAME:
                raise TyperFallback
            dest, val, rep = _BY_NAME[name]
            if val:
                if not eq:
                    if i + 1 >= len(args):
                        raise TyperFallback
                    value = args[i + 1]
                    i += 1
                put(dest, val, rep, value)
            else:
                if eq:
                    raise TyperFallback
                put(dest, val, rep, True)
            i += 1
            continue
        # short cluster: -it, -e K=V, -eK=V, -ite K=V
        j = 1
        while j < len(a):
            name = "-" + a[j]
            if name not in _BY_NAME:
                raise TyperFallback
            dest, val, rep = _BY_NAME[name]
            if not val:
                put(dest, val, rep, True)
                j += 1
                continue
            rest = a[j + 1:]
            if rest:
                put(dest, val, rep, rest)
            else:
                if i + 1 >= len(args):
                    raise TyperFallback
                put(dest, val, rep, args[i + 1])
                i += 1
            break
        i += 1
    if i >= len(args):
        raise TyperFallback                      # no IMAGE: typer prints the usage error
    kw["image"] = args[i]
    kw["command"] = list(args[i + 1:])
    return g, kw


def do_run(kw: dict, engine, create: bool = False):
    """docker run's exit status: the command's, or 125 when we fail before it starts (an unknown
    image or a failed pull included), 126 cannot execute, 127 not found. create: docker create,
    the container made and not started (its id)."""
    from container.engine.service import RunListener

    class Progress(RunListener):
        def image_missing(self, ref: str) -> None:
            sys.stderr.write(f"Unable to find image '{ref}' locally\n")
            sys.stderr.flush()

        def warning(self, msg: str) -> None:          # the pull's (a platform not the host's...)
            from .output import one_line

            sys.stderr.write(f"WARNING: {one_line(msg)}\n")
            sys.stderr.flush()

    if create:
        return engine.create(engine.run_options(**kw), listener=Progress())
    if kw.get("detach"):
        sys.stdout.write(engine.run_detached(engine.run_options(**kw), listener=Progress()) + "\n")
        return 0
    return engine.run(engine.run_options(**kw), listener=Progress())


def _warn(msg: str) -> None:
    """The engine's warnings (a read-only store of the config skipped), as cli/state.warn says them."""
    from .output import one_line

    sys.stderr.write(f"WARNING: {one_line(msg)}\n")


def fast_main(args: list[str]) -> int | None:
    """`container run` without typer; None when the command line is not one we take."""
    if "run" not in args:
        return None
    if os.environ.get("CONTAINER_TRACE"):
        import time

        t = time.perf_counter()
        t0 = os.environ.setdefault("CONTAINER_TRACE_T0", repr(t))     # (a caller's t=0 is kept)
        sys.stderr.write(f"trace {(t - float(t0)) * 1000:7.2f} ms  (cpu {time.process_time() * 1000:6.1f})  "
                         f"run's command line reached\n")
    try:
        g, kw = parse_run(args)
    except TyperFallback:
        return None
    if g["verbose"]:
        from .app import verbose_notes

        verbose_notes()
    from container.engine.service import Engine

    try:
        return do_run(kw, Engine(g["root"], g["db"], warn=_warn))
    except (Exception, KeyboardInterrupt) as e:
        from .errors import report       # (only on failure: cli/output's imports cost run 4 ms)

        return report(e)
    # The database is not closed: main() leaves with os._exit() right after, and closing the
    # last connection of a WAL database runs a checkpoint (~10-30 ms) that SQLite's
    # auto-checkpoint does anyway on a later commit. Every transaction is committed by then.


def _iso(t) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"
    if hasattr(t, "isoformat"):
        return t.isoformat() + "Z"
    return str(t)


def _restart_policy(spec: str) -> dict:
    name, _, count = spec.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count) if count.isdigit() else 0}


def inspect_json(c) -> dict:
    """`container inspect` of a container (an engine ContainerInfo), in docker inspect's shape."""
    from .volumes import mounts_json

    cfg = c.config
    argv = c.command
    d = c.path
    graph = {"Name": c.rootfs_mode, "Data": {}}
    if c.rootfs_mode == "overlay":
        graph["Data"] = {"LowerDir": cfg.get("lower", ""), "UpperDir": f"{d}/upper",
                         "WorkDir": f"{d}/work", "MergedDir": f"{d}/rootfs"}
    elif c.rootfs_mode == "copy":
        graph["Data"] = {"RootDir": f"{d}/rootfs"}
    return {
        "Id": c.id,
        "Created": _iso(c.created),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": {
            "Status": c.status,
            "Running": c.status == "running",
            "Restarting": c.status == "restarting",
            "OOMKilled": bool((cfg.get("state") or {}).get("oom_killed")),
            "Pid": (c.pid or 0) if c.status == "running" else 0,
            "ExitCode": c.exit_code if c.exit_code is not None else 0,
            "StartedAt": _iso(c.started),
            "FinishedAt": _iso(c.finished),
        },
        "Image": c.image_id or "",
        "Name": "/" + c.name,
        "Config": {
            "Hostname": cfg.get("hostname", ""),
            "User": cfg.get("user", ""),
            "Env": cfg.get("env", []),
            "Cmd": cfg.get("cmd"),
            "Entrypoint": cfg.get("entrypoint"),
            "Image": c.image,
            "WorkingDir": cfg.get("workdir", "/"),
            "Tty": bool(cfg.get("tty")),
            "OpenStdin": bool(cfg.get("interactive")),
        },
        "HostConfig": {
            "AutoRemove": bool(cfg.get("rm")),
            "RestartPolicy": _restart_policy(cfg.get("restart") or "no"),
            "Init": bool(cfg.get("init")),
            "ReadonlyRootfs": bool(cfg.get("read_only")),
            "NetworkMode": cfg.get("network", "host"),
            "Isolation": c.isolation,
            "Binds": [f"{m['name'] or m['source']}:{m['target']}" + (f":{m['mode']}" if m.get("mode") else "")
                      for m in cfg.get("mounts") or [] if m["type"] != "tmpfs" and not m["anonymous"]] or None,
            "Tmpfs": {m["target"]: m.get("data") or "" for m in cfg.get("mounts") or [] if m["type"] == "tmpfs"}
            or None,
            "UsernsMode": cfg.get("userns", ""),       # rootless: ranges | single
        },
        "RestartCount": int((cfg.get("state") or {}).get("restarts") or 0),
        "GraphDriver": graph,
        "Mounts": mounts_json(cfg),
        "SnapshotChainId": c.chain_id or "",
    }


def _status(c) -> str:
    from .output import humanize_age

    if c.status == "created":
        return "Created"
    if c.status == "running":
        age = humanize_age(c.started)
        return "Up " + (age[:-4] if age.endswith(" ago") else age)
    code = "unknown" if c.exit_code is None else str(c.exit_code)
    when = c.finished or c.started or c.created
    if c.status == "restarting":
        return f"Restarting ({code}) {humanize_age(when)}"
    return f"Exited ({code}) {humanize_age(when)}"


def _command(argv: list[str]) -> str:
    s = " ".join(argv)
    if len(s) > 20:
        s = s[:19] + "…"
    return f'"{s}"'


PS_HEADS = {"ID": "CONTAINER ID", "RunningFor": "CREATED"}


def ps_rows(cs, *, no_trunc: bool = False) -> list[dict]:
    """docker ps's --format fields (strings, as docker prints them) and ours: ImageID, ExitCode,
    Pid, Isolation, RootfsMode, FullID, Argv (the command as a list)."""
    from .output import go_time, humanize_age
    from .volumes import mounts_field

    rows = []
    for c in cs:
        labels = dict(c.config.get("labels") or {})
        rows.append({
            "ID": c.id if no_trunc else c.short_id, "Image": c.image,
            "Command": f'"{" ".join(c.command)}"' if no_trunc else _command(c.command),
            "CreatedAt": go_time(c.created), "RunningFor": humanize_age(c.created), "Status": _status(c),
            "State": c.status, "Names": c.name, "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "Label": (lambda k, _l=labels: _l.get(k, "")), "Mounts": mounts_field(c.config), "Ports": "", "Size": "0B",
            "Networks": c.config.get("network", "host"), "LocalVolumes": "0",
            "ImageID": c.image_id, "ExitCode": c.exit_code, "Pid": c.pid, "Isolation": c.isolation,
            "RootfsMode": c.rootfs_mode, "FullID": c.id, "Argv": list(c.command),
        })
    return rows


def register(app) -> None:
    from typing import Annotated, List, Optional

    import typer

    from .state import state

    @app.command("run", context_settings={"allow_interspersed_args": False})
    def run_cmd(
        ctx: typer.Context,
        image: Annotated[str, typer.Argument(metavar="IMAGE", help="Image reference or id.")],
        command: Annotated[Optional[List[str]], typer.Argument(metavar="[COMMAND] [ARG...]", help="Command and arguments.")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="Container name.")] = None,
        rm: Annotated[bool, typer.Option("--rm", help="Remove the container when it exits.")] = False,
        hostname: Annotated[Optional[str], typer.Option("--hostname", help="Container host name.")] = None,
        env: Annotated[Optional[List[str]], typer.Option("--env", "-e", help="Set K=V (or K from the caller's env).")] = None,
        env_files: Annotated[Optional[List[str]], typer.Option("--env-file", help="Read K=V lines from a file.")] = None,
        workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory (created when missing).")] = None,
        user: Annotated[Optional[str], typer.Option("--user", "-u", help="name|uid[:group|gid].")] = None,
        entrypoint: Annotated[Optional[str], typer.Option("--entrypoint", help="Override the image's entrypoint (clears its Cmd).")] = None,
        interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
        tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-TTY.")] = False,
        read_only: Annotated[bool, typer.Option("--read-only", help="Mount the root filesystem read-only.")] = False,
        pull: Annotated[str, typer.Option("--pull", help="missing|always|never.")] = "missing",
        isolation: Annotated[str, typer.Option("--isolation", help="auto|namespaces|chroot.")] = "auto",
        network: Annotated[str, typer.Option("--network", "--net", help="host|none.")] = "host",
        platform: Annotated[Optional[str], typer.Option("--platform", help="os/arch[/variant] to pull.")] = None,
        detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background under its own supervisor; print the ID.")] = False,
        restart: Annotated[str, typer.Option("--restart", help="no|on-failure[:N]|always|unless-stopped.")] = "no",
        init: Annotated[bool, typer.Option("--init", help="Run a reaper as pid 1 that forwards signals.")] = False,
        log_opts: Annotated[Optional[List[str]], typer.Option("--log-opt", help="max-size=SIZE, max-file=N.")] = None,
        volume: Annotated[Optional[List[str]], typer.Option(
            "--volume", "-v", help="Bind mount or volume: /host:/ctr[:ro], NAME:/ctr[:ro], or /ctr (anonymous).")]
        = None,
        mount: Annotated[Optional[List[str]], typer.Option(
            "--mount", help="type=bind|volume|tmpfs,src=..,dst=..[,readonly][,tmpfs-size=..,tmpfs-mode=..].")]
        = None,
        tmpfs: Annotated[Optional[List[str]], typer.Option("--tmpfs", help="A tmpfs: /ctr[:size=64m,mode=1777].")]
        = None,
    ) -> None:
        """Run a command in a new container (docker run semantics; exit status is the command's)."""
        kw = dict(image=image, command=list(command or []), name=name, rm=rm, hostname=hostname,
                  env=list(env or []), env_files=list(env_files or []), workdir=workdir, user=user,
                  entrypoint=entrypoint, interactive=interactive, tty=tty, read_only=read_only, pull=pull,
                  isolation=isolation, network=network, platform=platform, detach=detach, restart=restart,
                  init=init, log_opts=list(log_opts or []), volumes=list(volume or []),
                  mounts=list(mount or []), tmpfs=list(tmpfs or []))
        code = do_run(kw, state(ctx).engine)
        raise typer.Exit(code)

    def create_cmd(ctx: typer.Context, image: str, command=None, **opts) -> None:
        """Create a new container (docker create: made as run makes it, not started); prints its id."""
        kw = dict(opts, image=image, command=list(command or []), env=list(opts.get("env") or []),
                  env_files=list(opts.get("env_files") or []), log_opts=list(opts.get("log_opts") or []),
                  detach=False)
        kw["volumes"] = list(kw.pop("volume", None) or [])
        kw["mounts"] = list(kw.pop("mount", None) or [])
        kw["tmpfs"] = list(kw.get("tmpfs") or [])
        typer.echo(do_run(kw, state(ctx).engine, create=True))

    import inspect

    create_cmd.__signature__ = inspect.signature(run_cmd)       # run's options, one list of them
    create_cmd.__annotations__ = dict(run_cmd.__annotations__)
    app.command("create", context_settings={"allow_interspersed_args": False})(create_cmd)

    @app.command("ps")
    def ps_cmd(
        ctx: typer.Context,
        all: Annotated[bool, typer.Option("--all", "-a", help="Show all containers (default: running).")] = False,
        last: Annotated[int, typer.Option("--last", "-n", help="The n last created containers (all states).")]
        = -1,
        latest: Annotated[bool, typer.Option("--latest", "-l", help="The latest created container.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show container IDs.")] = False,
        format: Annotated[Optional[str], typer.Option("--format", help="json, table or a Go template.")] = None,
        no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Don't truncate IDs and commands.")] = False,
        filter: Annotated[Optional[List[str]], typer.Option(
            "--filter", "-f", help="status=, name=, id=, ancestor=IMAGE, label=KEY[=VALUE], exited=CODE "
                                   "(repeatable)")] = None,
    ) -> None:
        """List containers (--format: json, table, or a Go template: '{{.ID}} {{.Status}}')."""
        from .format import parse_format, write
        from .output import print_table

        fmt = parse_format(format, headers=PS_HEADS, default="{{.ID}}\t{{.Image}}\t{{.Command}}\t"
                           "{{.RunningFor}}\t{{.Status}}\t{{.Names}}") if format is not None else None
        if latest:
            last = 1
        cs = state(ctx).engine.containers(all=all or last >= 0, filters=filter)   # newest first
        if last >= 0:
            cs = cs[:last]
        if quiet:
            for c in cs:
                typer.echo(c.id if no_trunc else c.short_id)
            return
        rows = ps_rows(cs, no_trunc=no_trunc)
        if fmt is not None:
            write(fmt, rows)
            return
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"],
                    [[r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Names"]] for r in rows])

    @app.command("rm")
    def rm_cmd(
        ctx: typer.Context,
        containers: Annotated[List[str], typer.Argument(metavar="CONTAINER...", help="Containers (name, id or id prefix).")],
        force: Annotated[bool, typer.Option("--force", "-f", help="Kill and remove a running container.")] = False,
        volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Remove its anonymous volumes too.")] = False,
    ) -> None:
        """Remove containers (their rootfs and their record)."""
        from .lifecycle import each_container

        each_container(containers, lambda c: state(ctx).engine.remove_container(c, force=force, volumes=volumes))
