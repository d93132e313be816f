"""Root of the CLI: global options, command registration, error-to-exit-code mapping.

Command modules import nothing heavy at module level (the engine, requests,
rich progress are imported inside the commands), so `container run` pays only
for what it uses. typer itself is imported only when the typer app is built
(`app` is created on first access): main() first offers the command line to
cli/containers.py's fast_main(), which runs `container run` without typer/click
(~50 ms less) and returns None for anything else.
"""

import os
import sys

_app = None


def _build_app():
    from pathlib import Path
    from typing import Annotated, Optional

    import typer

    from . import containers, contents, exec, images, info, lifecycle, system, transfer, volumes
    from .state import CliState

    app = typer.Typer(
        name="container",
        help="A daemonless container tool: pull, run, list, inspect, prune.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _version(value: bool) -> None:
        if value:
            from importlib.metadata import version

            typer.echo(f"container {version('container')}")
            raise typer.Exit()

    @app.callback()
    def _global(
        ctx: typer.Context,
        root: Annotated[Optional[Path], typer.Option("--root", envvar="CONTAINER_ROOT",
                                                      help="Store root (default /var/lib/container as root, "
                                                           "else the XDG data dir).")] = None,
        db: Annotated[Optional[str], typer.Option("--db", help="Database URL (default: SQLite in ROOT).")] = None,
        storage: Annotated[Optional[list[str]], typer.Option(
            "--storage", metavar="ro:DIR", help="A read-only store to use images from (repeatable; default: "
                                                "the config's [storage] readonly).")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more.")] = False,
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="Print the version.")] = False,
    ) -> None:
        ctx.obj = CliState(root=root, db=db, verbose=verbose, storage=storage or None)
        if verbose:
            verbose_notes()

    images.register(app)
    containers.register(app)
    lifecycle.register(app)
    exec.register(app)
    system.register(app)
    info.register(app, system.system_app)
    transfer.register(app)
    volumes.register(app)
    contents.register(app)
    return app


def verbose_notes() -> None:
    """-v: the engine's notes (logging INFO of the "container" loggers: a rootless unpack's dropped
    setuid bits and skipped device nodes...) on stderr."""
    import logging

    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("note: %(message)s"))
    lg = logging.getLogger("container")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)


def __getattr__(name: str):
    """`from container.cli.app import app` (tests, CliRunner) builds the typer app on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    raise AttributeError(name)


def _command(args: list[str]) -> str | None:
    """The command word of a command line (after the global options and their values)."""
    it = iter(args)
    for a in it:
        if a in ("--root", "--db", "--storage"):
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: engine errors become one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if os.geteuid() != 0 and _command(args) != "exec":    # rootless: every command in the user's
        from container.engine.service import Engine      # own namespace; exec joins its container's

        Engine.enter_user_namespace()
    from .containers import fast_main

    code = fast_main(args)
    if code is None and "pull" in args:
        from .pulling import fast_pull

        code = fast_pull(args)
    if code is None and "files" in args:
        from .files_fast import fast_files

        code = fast_files(args)
    if code is not None:
        _exit(code)
    from .errors import report

    try:
        __getattr__("app")(args=argv, standalone_mode=True)
    except SystemExit as e:
        # typer turns a Ctrl-C inside a command into a silent exit 130; say it in one line.
        if e.code == 130 and _interrupted(e):
            report(KeyboardInterrupt())
        raise
    except BaseException as e:
        sys.exit(report(e))


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)       # skips interpreter teardown (~20 ms); everything is flushed and closed


def _interrupted(e: BaseException) -> bool:
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False
