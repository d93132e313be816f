"""The supervisor's side of `run -t` and `exec -t`: the pty (for exec, from the container's own
devpts), its window size, and the stdin/stdout pump."""

from __future__ import annotations

import fcntl
import os
import sys


TIOCSPTLCK = 0x40045431         # <asm-generic/ioctls.h>: (un)lock the slave
TIOCGPTPEER = 0x5441            # open the slave through the master, no path lookup (Linux 4.13+)


def open_pty_in(root: int) -> tuple[int, int] | None:
    """A pty pair from the devpts mounted at <root>/dev/pts (a container's, root an fd on its /),
    so the slave is a /dev/pts/N inside the container, as docker's and podman's exec -t give; None
    when there is none (a chroot container), then the caller takes one of ours (os.openpty)."""
    import stat
    import struct

    try:
        master = os.open(f"/proc/self/fd/{root}/dev/pts/ptmx",
                         os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (5, 2):
            os.close(master)                # not a devpts ptmx: not what we open for the container
            return None
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        return None
    return master, slave


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
            ttymod.setraw(stdin, termios.TCSANOW)     # (not TCSAFLUSH: what was typed ahead is kept)
        except termios.error:
            saved = None
    fds = [master, stdin] if interactive else [master]
    follow = threading.current_thread() is threading.main_thread()     # (signals: the main thread's)
    if follow:
        old = signal.signal(signal.SIGWINCH, lambda signum, frame: copy_winsize(master))
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
        if follow:
            signal.signal(signal.SIGWINCH, signal.SIG_DFL if old is None else old)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
