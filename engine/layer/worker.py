"""A layer unpacked in a process of its own, so that two layers' extractors do not share one GIL.

    stats, diff_id = unpack_in_worker(src, media_type, dest, objects_dir)   # unpack_blob's contract
    use_worker(size, layers)          # whether a pull gives this layer a process (see below)

The parent keeps what it did (reading `src`: the download, the blob's sha256, the ingest write)
and feeds those bytes to a `python -c` running this module's _main through a pipe; the worker runs
engine/layer/stream.unpack_blob on them (the same extractor, limits, index and dedupe) and answers
on its stdout with the pickled (stats, diff_id), or the error it raised (class and message: the
parent raises the same ContainerError subclass, or the OSError), with its log records (logged
again in the parent: -v shows a rootless unpack's notes as in-process). When the parent stops feeding
(an abort, a failed read) it closes the pipe: the worker sees a truncated stream, undoes what its
unpack_blob undoes on failure (the objects its files created) and ends; the parent waits for it
before returning or raising, so the caller may remove `dest` then (and when it stopped after the
worker had everything, it takes the objects of that unpack back out itself). The worker runs in
a process group of its own (a terminal's ^C reaches the parent only) and ignores SIGINT: the
parent decides, as it does for its threads.

A pull of several big layers on threads spends much of its CPU handing the GIL between their
extractors (docs/benchmarks.md): a process per big layer costs ~30 ms of CPU to start and none of
that. The largest layer is the pull's critical path: the others' processes run niced (BEHIND).
Small layers, a pull of one layer, a pull without the index (CONTAINER_INDEX=0), and load stay
in-process. CONTAINER_UNPACK_PROCESS_MIN: the compressed size from which a layer gets a process
(default 4 MiB; -1: never, and no merge process either).

    merge_in_worker(layers, dest)     # engine/layer/snapshot.merge_layers in a process (merge_in_process)
    merge_in_worker(layers, dest, onto=entries)      # engine/layer/merge.merge_onto in a process

The same process runs a pull's snapshot merge when the pull records many index rows: the merge
and the record's bulk insert then run side by side instead of sharing one GIL.
"""

from __future__ import annotations

import os
import sys

from container.engine.tunables import env_number

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from container.engine.layer.unpack import LayerStats

MIN_SIZE = env_number("CONTAINER_UNPACK_PROCESS_MIN", 4 << 20, int, minimum=-1)
CHUNK = 1 << 20
# the niceness added to the processes of a pull's smaller layers: on two cores, a cold pull of the
# bench app image (three big layers) 1.39 -> 1.28 s (12 alternating rounds; +5: half the gain)
BEHIND = 10
# the index rows from which a pull's snapshot merges in a process (merge_in_process): a cold pull of
# the bench app image (12.9k rows) records its image in ~half the time
MERGE_ROWS = 2000
_PIPE_SIZE = 1 << 20         # F_SETPIPE_SZ: fewer wake-ups than the 64 KiB default (best effort)


def use_worker(size: int, big_layers: int) -> bool:
    """A process for a layer of `size` compressed bytes in a pull that unpacks `big_layers` layers of
    at least MIN_SIZE (one alone has no other extractor to share the GIL with)."""
    from container.engine.layer import index

    # (without the index and dedupe a layer's extractor does too little for a process to pay)
    return _big(size) and big_layers >= 2 and bool(sys.executable) and index.enabled()


def merge_in_process(rows: int) -> bool:
    """Whether a pull that records `rows` new index rows merges its snapshot in a process
    (merge_in_worker): from MERGE_ROWS on; never with CONTAINER_UNPACK_PROCESS_MIN=-1."""
    return MIN_SIZE >= 0 and rows >= MERGE_ROWS and bool(sys.executable)


def big_layers(sizes) -> int:
    return sum(1 for s in sizes if _big(s))


def _big(size: int) -> bool:
    return MIN_SIZE >= 0 and size >= MIN_SIZE


def unpack_in_worker(src: Any, media_type: str, dest: Path, objects_dir: Path | None,
                     behind: bool = False) -> tuple[LayerStats, str]:
    """unpack_blob's contract, in a process. `behind`: not the pull's largest layer; its process
    runs at a lower priority (nice +BEHIND), so that the largest one, the pull's critical path,
    gets the CPU it wants and the others use what is left."""
    p = _spawn([media_type, os.fspath(dest), os.fspath(objects_dir) if objects_dir is not None else ""])
    if behind:
        try:
            os.setpriority(os.PRIO_PROCESS, p.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + BEHIND))
        except OSError:
            pass
    try:
        import fcntl

        fcntl.fcntl(p.stdin.fileno(), 1031, _PIPE_SIZE)      # F_SETPIPE_SZ
    except (OSError, ImportError):
        pass
    done = False
    try:
        w = p.stdin
        while True:
            b = src.read(CHUNK)
            if not b:
                break
            try:
                w.write(b)
            except BrokenPipeError:       # the worker failed and stopped reading: its answer says why
                break                     # (the caller reads the rest where it checks the digest, as in-process)
        done = True
    finally:
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        msg, rc = _collect(p)
        if not done and msg is not None and msg[0] == "ok" and objects_dir is not None:
            # the parent stopped (an abort) after the worker had the whole stream: the caller
            # removes the tree, so its new objects go now, as unpack_blob's own failure path does
            from container.engine.layer import dedupe

            dedupe.forget_new(objects_dir, getattr(msg[1], "dedupe", None), links=2)
    if msg is None:
        raise _no_answer("layer unpack", rc)
    if msg[0] == "ok":
        return msg[1], msg[2]
    raise _error(msg)


_BOOT = "import sys; from container.engine.layer.worker import _main; sys.exit(_main(sys.argv[1:]))"


def _worker_env() -> dict[str, str]:
    """The worker's environment: ours, and glibc's malloc told to keep the memory it frees (the
    inflater's 1 MiB chunks came back from the kernel page by page: ~10k page faults a layer)
    unless the user set those knobs."""
    env = dict(os.environ)
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 << 20))
    return env


def merge_in_worker(layers: list[Path], dest: Path, onto: int | None = None) -> tuple[int, int]:
    """engine/layer/snapshot.merge_layers(layers, dest) in a process of its own (with `onto`, the
    entries dest holds: engine/layer/merge.merge_onto): a pull records the image (a bulk insert of
    its index rows) while the snapshot merges, and on one interpreter the two handed the GIL back
    and forth for every row inserted (the record took twice its time); a pull merges the layers it
    has while one extractor of the layers it downloads runs in-process."""
    # stdin: a pipe we hold open until the answer is in; the process ends when it reads its end
    # (we died, however: it must not write into the store once our pull, and its lock, are gone)
    how = ["merge"] if onto is None else ["onto", str(onto)]
    p = _spawn([*how, os.fspath(dest), *(os.fspath(x) for x in layers)])
    try:
        msg, rc = _collect(p)
    finally:
        p.stdin.close()
    if msg is None:
        raise _no_answer("snapshot merge", rc)
    if msg[0] == "ok":
        return msg[1]
    raise _error(msg, "merging the snapshot")


def _spawn(args: list[str]):
    """A worker process running _main(args), with stdin and stdout pipes."""
    import subprocess

    # -P: the working directory is not put on sys.path (a ./container of the user's is not imported);
    # -c, not -m: runpy and importlib.util cost a worker ~5 ms of its start; its own process group:
    # a terminal's ^C reaches the parent only, which decides (as for its threads)
    p = subprocess.Popen([sys.executable, "-P", "-c", _BOOT, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         close_fds=True, process_group=0, env=_worker_env())
    assert p.stdin is not None and p.stdout is not None
    return p


def _collect(p) -> tuple[tuple | None, int]:
    """The worker's answer (None: none that unpickles) and exit status; its log records logged here."""
    import pickle

    answer = p.stdout.read()
    p.stdout.close()
    rc = p.wait()
    try:
        msg = pickle.loads(answer)
    except Exception:
        return None, rc
    _relog(msg[-1])
    return msg, rc


def _no_answer(what: str, rc: int) -> BaseException:
    from container.engine.errors import ContainerError

    return ContainerError(f"the {what} process ended without an answer (exit status {rc})")


def _relog(notes: list[tuple[str, int, str]]) -> None:
    """The worker's log records (rootless notes: dropped setuid bits, skipped devices), logged here
    as the in-process unpack logs them (shown by -v)."""
    if not notes:
        return
    import logging

    for name, level, text in notes:
        logging.getLogger(name).log(level, "%s", text)


def _error(msg: tuple, what: str = "unpacking a layer") -> BaseException:
    from container.engine import errors

    if msg[0] == "os":
        return OSError(msg[1], msg[2], msg[3]) if msg[3] is not None else OSError(msg[1], msg[2])
    cls = getattr(errors, msg[1], None)
    if isinstance(cls, type) and issubclass(cls, errors.ContainerError):
        return cls(msg[2], exit_code=msg[3])
    return errors.ContainerError(f"{what} failed: {msg[1]}: {msg[2]}")


def _answer(e: BaseException, notes: list) -> tuple:
    from container.engine.errors import ContainerError

    if isinstance(e, OSError) and e.errno is not None:
        return ("os", e.errno, e.strerror, e.filename, notes)
    if isinstance(e, ContainerError):
        return ("err", type(e).__name__, str(e), e.exit_code, notes)
    return ("err", type(e).__name__, str(e), None, notes)


def _end_with_parent() -> None:
    """Wait for the end of stdin (the parent closes it once it has the answer, or it died): a
    merge whose parent is gone stops at once (its temp dir is the crash debris gc removes)."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os._exit(1)


def _main(argv: list[str]) -> int:
    # _signal and _pickle, not signal and pickle: those import enum and re (~6 ms of this start)
    import _pickle
    import _signal
    import gc

    gc.disable()          # a short-lived process that makes no garbage cycles worth collecting
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    from container.engine import lazylog

    notes = lazylog.capture()            # (the container loggers' records, for the answer; no logging)
    msg: tuple
    try:
        if argv[0] in ("merge", "onto"):   # merge DEST LAYER... | onto ENTRIES DEST LAYER... (merge_in_worker)
            import threading
            from pathlib import Path

            threading.Thread(target=_end_with_parent, daemon=True).start()
            if argv[0] == "merge":
                from container.engine.layer.snapshot import merge_layers

                msg = ("ok", merge_layers([Path(x) for x in argv[2:]], Path(argv[1])), notes)
            else:
                from container.engine.layer.merge import merge_onto

                msg = ("ok", merge_onto([Path(x) for x in argv[3:]], Path(argv[2]), int(argv[1])), notes)
        else:                             # MEDIA_TYPE DEST OBJECTS_DIR, the blob on stdin (unpack_in_worker)
            from container.engine.layer.stream import unpack_blob

            media_type, dest, objects = argv
            stats, diff_id = unpack_blob(sys.stdin.buffer, media_type, dest, objects or None)
            msg = ("ok", stats, diff_id, notes)
    except BaseException as e:
        msg = _answer(e, notes)
    try:
        sys.stdout.buffer.write(_pickle.dumps(msg, protocol=5))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":          # (python -m container.engine.layer.worker: the same)
    sys.exit(_main(sys.argv[1:]))
