"""Assertions and store probes shared by the tests (import them: `from checks import one_error`).

    one_error(r)        a failed command: non-zero exit, exactly one "Error:" line, last on stderr,
                        no traceback (progress lines may come before it, as with docker); the line
    no_traceback(r)
    store_state(root)   what a pull may leave behind: (blob names, layer dirs, DB row counts)
    open_store(root)    an engine Store on root, its database open
    tree(root)          path -> (type, mode, uid, gid, size, sha256 | link target) below root
    json_lines(text)    `--format json` output as docker prints it: one JSON object a line
    FAST                env for quick registry retries
    pty_run(argv, env, steps)  argv run on a new pty as a terminal user runs it, fed `steps`
    set_winsize(fd, rows, cols)
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

FAST = {"CONTAINER_REGISTRY_BACKOFF": "0.01"}


def json_lines(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_error(r) -> str:
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    errs = [x for x in lines if x.startswith("Error:")]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(errs) == 1 and lines[-1] == errs[0], r.stderr
    return errs[0]


def no_traceback(r) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def open_store(root):
    from container.engine.store import Store

    s = Store(root)
    s.db()
    return s


def store_state(root):
    from container.schema import Blob, Image, ImageLayer, Layer, Tag

    blobs = sorted(p.name for p in (root / "blobs" / "sha256").glob("*")) if (root / "blobs").exists() else []
    layers = sorted(p.name for p in (root / "layers").glob("*")) if (root / "layers").exists() else []
    rows = {}
    if (root / "metadata.db").exists():
        s = open_store(root)
        rows = {m.__name__: m.select().count() for m in (Blob, Layer, Image, ImageLayer, Tag)}
        s.close()
    return blobs, layers, rows


def tree(root: Path, *, content=True) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISREG(st.st_mode) and content:
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            else:
                what = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if stat.S_ISREG(st.st_mode) else 0, what)
    return out


def set_winsize(fd, rows, cols):
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def pty_run(argv, env, steps, timeout=30):
    """argv on a new pty (as a terminal user runs it), fed `steps`: (bytes to wait for, then
    bytes to type, or a (rows, cols) resize). (exit status, everything it printed)."""
    import pty
    import select
    import time

    pid, master = pty.fork()
    if pid == 0:
        set_winsize(0, 33, 101)                 # (before the exec: what the command first sees)
        os.execve(argv[0], argv, env)
    out = b""
    steps = list(steps)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while steps and steps[0][0] in out:
            _, action = steps.pop(0)
            if isinstance(action, tuple):
                set_winsize(master, *action)       # the kernel sends SIGWINCH to the pty's foreground
            else:
                os.write(master, action)
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    else:
        os.kill(pid, 9)                         # still running at the deadline: the status says so
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
