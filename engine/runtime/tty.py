"""The supervisor's side of `run -t`: the pty's window size and the stdin/stdout pump."""

from __future__ import annotations

import fcntl
import os
import sys


def copy_winsize(slave: int) -> None:
    try:
        import termios
        ws = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, ws)
    except (OSError, ValueError):
        pass


def pump_tty(master: int, interactive: bool, log=None) -> None:
    """Copy stdin -> pty and pty -> stdout until the container's side closes (raw mode on a tty);
    what the pty says is also written to `log` (a runtime/logs.LogWriter) as stdout."""
    import select
    import termios
    import tty as ttymod

    stdin = sys.stdin.fileno()
    saved = None
    if interactive and os.isatty(stdin):
        try:
            saved = termios.tcgetattr(stdin)
            ttymod.setraw(stdin)
        except termios.error:
            saved = None
    fds = [master, stdin] if interactive else [master]
    try:
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
                if log is not None:
                    log.write("stdout", data)
            if stdin in ready:
                try:
                    data = os.read(stdin, 65536)
                except OSError:
                    data = b""
                if not data:
                    fds.remove(stdin)
                else:
                    os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
