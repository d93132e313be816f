"""`container exec`: run a command in a running container (docker exec). Registered by register(app)."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .state import state


def register(app: typer.Typer) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_cmd(
        ctx: typer.Context,
        container: Annotated[str, typer.Argument(metavar="CONTAINER", help="Container (name, id or id prefix).")],
        command: Annotated[List[str], typer.Argument(metavar="COMMAND [ARG...]", help="Command and arguments.")],
        interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
        tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-TTY.")] = False,
        detach: Annotated[bool, typer.Option("--detach", "-d", help="Run the command in the background.")] = False,
        env: Annotated[Optional[List[str]], typer.Option("--env", "-e", help="Set K=V (or K from the caller's env).")] = None,
        env_files: Annotated[Optional[List[str]], typer.Option("--env-file", help="Read K=V lines from a file.")] = None,
        workdir: Annotated[Optional[str], typer.Option("--workdir", "-w", help="Working directory (default: the container's).")] = None,
        user: Annotated[Optional[str], typer.Option("--user", "-u", help="name|uid[:group|gid] (default: the container's).")] = None,
    ) -> None:
        """Run a command in a running container (docker exec; exit status is the command's)."""
        engine = state(ctx).engine
        opts = engine.exec_options(container=container, command=list(command), interactive=interactive, tty=tty,
                                   detach=detach, env=list(env or []), env_files=list(env_files or []),
                                   workdir=workdir, user=user)
        raise typer.Exit(engine.exec(opts))
