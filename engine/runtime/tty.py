"""The pty of `run -t` and `exec -t` and its supervisor's side: a pty pair from a container's own
devpts (so the slave is a /dev/pts/N in there, as docker's and podman's), its window size, the
stdin/stdout pump that follows our terminal's size, and the handing of a master between processes.

run (namespaces): the container's init opens the pair from its /dev/pts/ptmx once /dev is mounted
(runtime/child.py), sets the caller's window size on it and sends the master to the supervisor
over the report socket (send_master/recv_report, SCM_RIGHTS). exec: the supervisor opens the pair
through the container's root (open_pty_in) before the fork. A chroot container has no devpts of
its own: both keep the host's pty (os.openpty) that runtime/isolate.py opens first.

Imported before the fork for -t only (runtime/isolate.start): the container's init runs after
pivot_root, where the stdlib is out of reach, so what it calls imports nothing later.
"""

from __future__ import annotations

import _socket                  # (not socket: its enums cost ~5 ms of every run -t)
import fcntl
import os
import stat
import struct
import sys
import termios

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    try:                        # the signal module without its enum wrappers, as runtime/isolate.py
        import _signal as signal
    except ImportError:         # pragma: no cover (not CPython)
        import signal

TIOCSPTLCK = 0x40045431         # <asm-generic/ioctls.h>: (un)lock the slave
TIOCGPTPEER = 0x5441            # open the slave through the master, no path lookup (Linux 4.13+)


def open_pty(ptmx: str) -> tuple[int, int] | None:
    """(master, slave) from the devpts whose ptmx is at `ptmx`; None when that is no devpts ptmx."""
    try:
        master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


def open_pty_in(root: int) -> tuple[int, int] | None:
    """exec -t: a pair from the devpts mounted at <root>/dev/pts (root an fd on the container's /);
    None when there is none (a chroot container), then the caller takes one of ours."""
    return open_pty(f"/proc/self/fd/{root}/dev/pts/ptmx")


def socket_pair() -> tuple[int, int]:
    """The report channel of a -t spawn (runtime/isolate.py): two connected close-on-exec fds."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def send_master(sock: int, master: int) -> None:
    """The container's init: `master` to the supervisor over the report socket (then closed here)."""
    s = _socket.socket(fileno=sock)
    try:
        s.sendmsg([b"T\n"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", master))])
    finally:
        s.detach()
    os.close(master)


def recv_report(sock: int) -> tuple[bytes, int | None]:
    """The supervisor: everything said on the report socket until EOF (the execve), and the master
    sent with it if any; closes the socket."""
    s = _socket.socket(fileno=sock)
    data = b""
    master = None
    try:
        while True:
            try:
                chunk, ancdata, _, _ = s.recvmsg(4096, _socket.CMSG_SPACE(struct.calcsize("i")))
            except InterruptedError:
                continue
            for level, kind, payload in ancdata:
                if level != _socket.SOL_SOCKET or kind != _socket.SCM_RIGHTS:
                    continue
                n = len(payload) // 4
                for fd in struct.unpack(f"{n}i", payload[:n * 4]):
                    if master is None:
                        master = fd
                        os.set_inheritable(fd, False)
                    else:
                        os.close(fd)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data, master


def own_pty(w: int, slave: int, uid: int) -> int:
    """-t, once /dev is mounted: a pty from the container's own devpts, so that the process's
    terminal is its /dev/pts/0, sized as the caller's and owned by its user (group tty, as runc
    leaves it); its master goes to the supervisor over the report socket.
    Without one, the host's `slave` that the supervisor opened."""
    pair = open_pty("/dev/pts/ptmx")
    if pair is None:
        return slave
    master, own = pair
    copy_winsize(own)
    try:
        os.fchown(own, uid, -1)
    except OSError:                   # (a user namespace without that uid: root's it stays)
        pass
    try:
        send_master(w, master)
    except OSError:
        os.close(own)
        return slave
    os.close(slave)
    return own


def copy_winsize(fd: int) -> None:
    """Our terminal's size (stdin's) onto the pty of `fd` (its master or slave); nothing without one."""
    try:
        ws = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, ws)
    except (OSError, ValueError):
        pass


def pump_tty(master: int, interactive: bool, log=None) -> None:
    """Copy stdin -> pty and pty -> stdout until the container's side closes (raw mode on a tty);
    what the pty says is also written to `log` (a runtime/logs.LogWriter) as stdout. Our terminal
    resized (SIGWINCH), the pty follows: the kernel signals the container's foreground."""
    import select
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
    try:
        old = signal.signal(signal.SIGWINCH, lambda signum, frame: copy_winsize(master))
        follow = True
    except ValueError:          # not the main thread: no signal handlers there
        follow = False
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
