"""A foreground run's output, shown and recorded: the container's stdout/stderr go through pipes
that a thread copies to ours and into the container's json-file log (runtime/logs.py), so that
`container logs` works for it as for a detached one. (With -t, the pty pump records instead:
runtime/tty.py.) Not used for `run --rm`, whose log would be removed with it at exit.

redirect() before the spawn puts the pipes on fds 1 and 2 (the container inherits them), restore()
after it puts ours back; start() runs the copying thread; finish() waits for the container's side
to close (at most a second after the exit: a process it left behind may hold a pipe) and closes
the log.
"""

from __future__ import annotations

import os
import threading


class Tee:
    def __init__(self, log):
        self.log = log                              # a logs.LogWriter
        self.pipes: dict[int, tuple[str, int]] = {}  # read end -> (stream, our fd it is copied to)
        self.saved: list[int] = []
        self.thread: threading.Thread | None = None

    def redirect(self) -> None:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            saved = os.dup(fd)
            os.set_inheritable(saved, False)
            rd, wr = os.pipe2(os.O_CLOEXEC)
            os.dup2(wr, fd)
            os.close(wr)
            self.saved.append(saved)
            self.pipes[rd] = (name, saved)

    def restore(self) -> None:
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._copy, name="tee", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        import select

        lock = threading.Lock()
        fds = list(self.pipes)
        while fds:
            ready, _, _ = select.select(fds, [], [])
            for rd in ready:
                name, out = self.pipes[rd]
                try:
                    data = os.read(rd, 65536)
                except OSError:
                    data = b""
                if not data:
                    fds.remove(rd)
                    continue
                try:
                    os.write(out, data)
                except OSError:
                    pass                               # our reader went away; keep recording
                with lock:
                    self.log.write(name, data)

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(1.0)
            if self.thread.is_alive():
                return                  # a leftover process holds a pipe: the thread keeps its fds
        for rd in self.pipes:
            os.close(rd)
        for saved in self.saved:
            os.close(saved)
        self.log.close()
