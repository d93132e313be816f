"""`container pull`: its progress display (plain lines off a terminal, rich bars on one), its
output, and a typer-free way in. Imports no typer: cli/app.py's main() offers the command line
to fast_pull() (after containers.fast_main), which parses `[GLOBALS] pull [OPTIONS] IMAGE` by
hand (the spellings click accepts; anything else, help included, goes back to typer) and calls
the same pull_image() as the typer command. typer and click are ~20% of a pull's imports: a
second pull that fetches one layer is mostly startup.
"""

from __future__ import annotations

import sys
import threading

from container.engine.service import PullListener

from .output import err, is_tty


class PlainProgress(PullListener):
    """Off a terminal: one line per layer when it settles, like `docker pull` piped. The `header`
    ("latest: Pulling from library/busybox") comes once, when the image has resolved to layers (so
    an early failure stays a one-line error); the resolved digest, the ImageInfo and whether
    anything was new are kept for the summary lines."""

    def __init__(self, verbose: bool, quiet: bool, header: str = ""):
        self.verbose, self.quiet = verbose, quiet
        self._lock = threading.Lock()
        self.header = header
        self._header_shown = False
        self.digest: str | None = None
        self.image = None                   # the ImageInfo, when done
        self.updated = True

    def _line(self, s: str, *, always: bool = False) -> None:
        if self.quiet and not always:
            return
        from .output import one_line

        with self._lock:
            sys.stderr.write(one_line(s) + "\n")      # -v relays registry text (Warning headers...)
            sys.stderr.flush()

    def _show_header(self) -> None:
        if not self.quiet and not self._header_shown:
            self._header_shown = True
            self._line(self.header)

    def info(self, msg: str) -> None:
        if self.verbose:
            self._line(msg)

    def warning(self, msg: str) -> None:
        self._line(f"WARNING: {msg}", always=True)       # also with -q: stderr, one line

    def resolved(self, ref: str, digest: str) -> None:
        self.digest = digest
        if self.verbose:
            self._line(f"{ref}: resolved to {digest}")

    def layer(self, digest: str, size: int, status: str) -> None:
        self._show_header()
        if status == "Already exists":
            self._line(f"{digest[7:19]}: Already exists")

    def layer_status(self, digest: str, status: str) -> None:
        if status in ("Pull complete", "Already exists"):
            self._line(f"{digest[7:19]}: {status}")

    def done(self, info, updated: bool) -> None:
        self._show_header()
        self.image, self.updated = info, updated


class RichProgress(PlainProgress):
    """On a terminal: one bar per layer (bytes, speed), statuses like docker's."""

    def __init__(self, verbose: bool, header: str = ""):
        super().__init__(verbose, False, header)
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.console = Console(stderr=True)
        self.p = Progress(TextColumn("{task.fields[short]}: {task.fields[status]:<16}"), BarColumn(bar_width=40),
                          DownloadColumn(), TransferSpeedColumn(), console=self.console, transient=False,
                          refresh_per_second=8)
        self.tasks: dict[str, int] = {}
        self.p.start()

    def _line(self, s: str, *, always: bool = False) -> None:
        self.console.print(s, highlight=False, markup=False)

    def warning(self, msg: str) -> None:
        from .output import one_line

        self._line("WARNING: " + one_line(msg))

    def layer(self, digest: str, size: int, status: str) -> None:
        self._show_header()
        done = size if status == "Already exists" else 0
        self.tasks[digest] = self.p.add_task("", total=size or None, completed=done, short=digest[7:19],
                                             status=status)

    def layer_status(self, digest: str, status: str) -> None:
        t = self.tasks.get(digest)
        if t is None:
            return
        if status in ("Pull complete", "Already exists"):
            total = self.p.tasks[t].total if t < len(self.p.tasks) else None
            self.p.update(t, status=status, completed=total or 0)
        else:
            self.p.update(t, status=status)

    def advance(self, digest: str, n: int) -> None:
        t = self.tasks.get(digest)
        if t is not None:
            self.p.advance(t, n)

    def stop(self) -> None:
        self.p.stop()


def pull_image(engine, image: str, *, platform: str | None = None, quiet: bool = False,
               no_snapshot: bool = False, verbose: bool = False) -> int:
    """Pull `image` as `docker pull` does, printing its progress and summary; the exit status
    (130 when interrupted). Engine errors propagate (the caller reports them)."""
    ref = engine.parse_reference(image)
    tty = is_tty(sys.stderr) and not quiet
    head = f"{ref.tag if ref.tag and not ref.digest else ref.digest[7:19]}: Pulling from " + (
        ref.path if ref.domain == "docker.io" else ref.repository)
    prog = RichProgress(verbose, head) if tty else PlainProgress(verbose, quiet, head)
    try:
        info = engine.pull(ref, platform=platform, listener=prog, snapshot=False if no_snapshot else None)
    except KeyboardInterrupt:
        if tty:
            prog.stop()
            tty = False
        err("interrupted (partial downloads are kept for the next pull)")
        return 130
    finally:
        if tty:
            prog.stop()
    digest = prog.digest or info.id
    if quiet:
        _echo(digest)
        return 0
    name = str(ref) if ref.domain != "docker.io" else (
        f"{ref.familiar}:{ref.tag}" if ref.tag and not ref.digest else f"{ref.familiar}@{ref.digest}")
    _echo(f"Digest: {digest}")
    status = "Downloaded newer image for" if prog.updated else "Image is up to date for"
    _echo(f"Status: {status} {name}")
    _echo(str(ref) if not (ref.tag and ref.digest) else f"{ref.repository}@{ref.digest}")
    return 0


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# pull's options: name -> (dest, takes a value)
PULL_OPTIONS = {"--platform": ("platform", True), "-q": ("quiet", False), "--quiet": ("quiet", False),
                "--no-snapshot": ("no_snapshot", False)}


def parse_pull(args: list[str]) -> tuple[dict, dict] | None:
    """(globals, pull kwargs) for `[--root R] [--db D] [-v] pull [OPTIONS] IMAGE [OPTIONS]`, or
    None for anything typer should parse (help, unknown or malformed options, no or two IMAGEs)."""
    from .containers import TyperFallback, parse_globals

    try:
        g, i = parse_globals(args, "pull")
    except TyperFallback:
        return None
    kw: dict = {"platform": None, "quiet": False, "no_snapshot": False}
    images = []
    i += 1
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            images += args[i:]
            break
        if not a.startswith("-") or a == "-":
            images.append(a)
            continue
        name, eq, value = a.partition("=")
        if name not in PULL_OPTIONS or (eq and not name.startswith("--")):
            return None
        dest, val = PULL_OPTIONS[name]
        if not val:
            if eq:
                return None
            kw[dest] = True
        elif eq:
            kw[dest] = value
        elif i < len(args):
            kw[dest] = args[i]
            i += 1
        else:
            return None
    if len(images) != 1:
        return None
    kw["image"] = images[0]
    return g, kw


def fast_pull(args: list[str]) -> int | None:
    """`container pull` without typer; None when the command line is not one we take."""
    parsed = parse_pull(args)
    if parsed is None:
        return None
    g, kw = parsed
    from container.engine.service import Engine

    import gc

    # what this process holds now (modules, the engine) lives until it exits: the ~100 collections
    # a pull's allocations set off (its index rows) no longer scan it (~20 ms of a cold pull)
    gc.freeze()
    engine = Engine(g["root"], g["db"])
    try:
        return pull_image(engine, kw.pop("image"), verbose=g["verbose"], **kw)
    except (Exception, KeyboardInterrupt) as e:
        from .errors import report

        return report(e)
    finally:
        # main() leaves with os._exit(): close the database here, as the typer path's interpreter
        # exit does (SQLite checkpoints the WAL into the database file on the last close)
        engine.close()
