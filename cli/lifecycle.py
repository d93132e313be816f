"""Detached containers' commands: start, stop, kill, restart, wait, logs, generate systemd
(docker's and podman's verbs and output). Registered by register(app); the engine side is
engine/runtime/control.py through the facade."""


import sys


def each_container(names, fn) -> None:
    """docker's shape for verbs over CONTAINER...: print each name as it is done, an error line
    for each failure, exit 1 if any failed."""
    import typer

    from container.engine.service import ContainerError

    from .output import err

    failed = False
    for n in names:
        try:
            fn(n)
            typer.echo(n)
        except ContainerError as e:
            err(str(e))
            failed = True
    if failed:
        raise typer.Exit(1)


def write_record(stream: str, text: str, when: str, timestamps: bool) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(f"{when} {text}" if timestamps else text)
    out.flush()


def register(app) -> None:
    from typing import Annotated, List, Optional

    import typer

    from .state import state

    names_arg = typer.Argument(metavar="CONTAINER...", help="Containers (name, id or id prefix).")

    @app.command("start")
    def start_cmd(ctx: typer.Context, containers: Annotated[List[str], names_arg],
                  attach: Annotated[bool, typer.Option("--attach", "-a", help="Follow its output; exit with its code.")] = False) -> None:
        """Start created or stopped containers (each under its own supervisor)."""
        engine = state(ctx).engine
        if not attach:
            each_container(containers, engine.start)
            return
        from container.engine.service import ContainerError

        from .errors import report

        if len(containers) != 1:
            raise typer.BadParameter("you cannot start and attach multiple containers at once")
        import time

        try:
            since = repr(time.time())          # its output from this start on, none of before
            engine.start(containers[0])
            for rec in engine.logs(containers[0], follow=True, since=since):
                write_record(*rec, timestamps=False)
            raise typer.Exit(engine.wait(containers[0]))
        except ContainerError as e:
            raise typer.Exit(report(e))

    @app.command("stop")
    def stop_cmd(ctx: typer.Context, containers: Annotated[List[str], names_arg],
                 time: Annotated[Optional[int], typer.Option("--time", "-t", help="Seconds to wait before SIGKILL (10; -1: no limit).")] = None) -> None:
        """Stop running containers: the image's StopSignal (SIGTERM), then SIGKILL after -t seconds."""
        engine = state(ctx).engine
        each_container(containers, lambda n: engine.stop(n, timeout=time))

    @app.command("kill")
    def kill_cmd(ctx: typer.Context, containers: Annotated[List[str], names_arg],
                 signal: Annotated[str, typer.Option("--signal", "-s", help="Signal name or number.")] = "KILL") -> None:
        """Send a signal (default SIGKILL) to running containers."""
        engine = state(ctx).engine
        each_container(containers, lambda n: engine.kill(n, signal=signal))

    @app.command("restart")
    def restart_cmd(ctx: typer.Context, containers: Annotated[List[str], names_arg],
                    time: Annotated[Optional[int], typer.Option("--time", "-t", help="Seconds to wait before SIGKILL (10; -1: no limit).")] = None) -> None:
        """Stop then start containers."""
        engine = state(ctx).engine

        def one(n: str) -> None:
            engine.stop(n, timeout=time)
            engine.start(n)
        each_container(containers, one)

    @app.command("wait")
    def wait_cmd(ctx: typer.Context, containers: Annotated[List[str], names_arg]) -> None:
        """Block until containers stop; print their exit codes."""
        from container.engine.service import ContainerError

        from .output import err

        failed = False
        for n in containers:
            try:
                typer.echo(state(ctx).engine.wait(n))
            except ContainerError as e:
                err(str(e))
                failed = True
        if failed:
            raise typer.Exit(1)

    @app.command("logs")
    def logs_cmd(ctx: typer.Context,
                 container: Annotated[str, typer.Argument(metavar="CONTAINER")],
                 follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until the container stops.")] = False,
                 tail: Annotated[str, typer.Option("--tail", "-n", help="Lines from the end (all).")] = "all",
                 since: Annotated[Optional[str], typer.Option("--since", help="10m, 1h, an RFC 3339 time or a Unix timestamp.")] = None,
                 timestamps: Annotated[bool, typer.Option("--timestamps", "-t", help="Show timestamps.")] = False) -> None:
        """Show a container's output (its json-file log)."""
        if tail != "all" and not tail.lstrip("-").isdigit():
            raise typer.BadParameter(f"invalid --tail {tail!r}: want a number or all")
        n = None if tail == "all" or int(tail) < 0 else int(tail)
        try:
            for rec in state(ctx).engine.logs(container, follow=follow, tail=n, since=since):
                write_record(*rec, timestamps=timestamps)
        except BrokenPipeError:
            raise typer.Exit(0)

    generate = typer.Typer(help="Generate files for other tools (systemd units).", no_args_is_help=True)
    app.add_typer(generate, name="generate")

    @generate.command("systemd")
    def systemd_cmd(ctx: typer.Context, container: Annotated[str, typer.Argument(metavar="CONTAINER")],
                    time: Annotated[int, typer.Option("--time", "-t", help="Stop timeout in seconds.")] = 10) -> None:
        """A systemd unit that starts CONTAINER at boot (restart policies do not survive a reboot)."""
        import os
        import shutil

        exe = os.path.abspath(sys.argv[0])
        if not os.path.isfile(exe):
            exe = shutil.which("container") or "container"
        typer.echo(state(ctx).engine.systemd_unit(container, executable=exe, timeout=time), nl=False)
