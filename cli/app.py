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

    from . import containers, images, system
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
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more.")] = False,
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="Print the version.")] = False,
    ) -> None:
        ctx.obj = CliState(root=root, db=db, verbose=verbose)

    images.register(app)
    containers.register(app)
    system.register(app)
    return app


def __getattr__(name: str):
    """`from container.cli.app import app` (tests, CliRunner) builds the typer app on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = _build_app()
        return _app
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: engine errors become one line on stderr and an exit code."""
    from .containers import fast_main

    try:
        code = fast_main(sys.argv[1:] if argv is None else list(argv))
    except Exception as e:
        if not _database_error(e):
            raise
        _db_failed(e, 125)
    if code is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)       # skips interpreter teardown (~20 ms); everything is flushed and closed
    from container.engine.errors import ContainerError

    from .output import err

    try:
        __getattr__("app")(args=argv, standalone_mode=True)
    except ContainerError as e:
        err(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(130)
    except SystemExit as e:
        # typer turns a Ctrl-C inside a command into a silent exit 130; say it in one line.
        if e.code == 130 and _interrupted(e):
            err("interrupted")
        raise
    except Exception as e:
        if not _database_error(e):
            raise
        _db_failed(e, 1)


def _interrupted(e: BaseException) -> bool:
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _database_error(e: BaseException) -> bool:
    """An SQL error from a metadata.db that is damaged or not ours (tables/columns missing, pages
    corrupt) that open_database's checks could not see: one line, not a traceback."""
    import sqlite3

    if isinstance(e, sqlite3.DatabaseError) or _cas_error(e):
        return True
    peewee = sys.modules.get("peewee")
    return peewee is not None and isinstance(e, peewee.DatabaseError)


def _cas_error(e: BaseException) -> bool:
    """A content-store error that reached the top: a digest from a tampered row that is not a
    digest, a blob the database promises but the disk lacks, a guarded delete that refused."""
    cas = [sys.modules.get(f"container.cas.{m}") for m in ("digest", "store", "fsutil")]
    kinds = tuple(getattr(m, n) for m in cas if m is not None
                  for n in ("InvalidDigest", "BlobNotFound", "DigestMismatch", "SizeMismatch", "UnsafeDelete")
                  if hasattr(m, n))
    return bool(kinds) and isinstance(e, kinds)


def _db_failed(e: BaseException, code: int) -> None:
    from .output import err

    msg = (str(e).splitlines() or [type(e).__name__])[0]
    if _cas_error(e):
        err(f"the store is damaged: {msg} (see `container fsck`)")
    else:
        err(f"metadata database error: {msg} (the database is damaged, or was not written by this "
            "version of container)")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
