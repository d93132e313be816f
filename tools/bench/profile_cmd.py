"""Profile one `container` command (all its threads) or one snapshot build with cProfile.

    python tools/bench/profile_cmd.py [--top N] -- --root R pull REF      # like `container ...`
    python tools/bench/profile_cmd.py [--top N] --snapshot ROOT REF       # engine.layer.snapshot only

Prints the wall time, then the functions with the most own time (tottime) merged over every
thread that ran Python code (pull downloads/unpacks layers in worker threads).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time


def main(argv: list[str]) -> int:
    top = 20
    if argv[:1] == ["--top"]:
        top, argv = int(argv[1]), argv[2:]
    profs: list[cProfile.Profile] = []
    lock = threading.Lock()

    def per_thread(frame, event, arg):  # first event in a new thread: give it its own profiler
        sys.setprofile(None)
        p = cProfile.Profile()
        with lock:
            profs.append(p)
        p.enable()

    main_prof = cProfile.Profile()
    profs.append(main_prof)
    rc = 0
    if argv[:1] == ["--snapshot"]:
        root, ref = argv[1], argv[2]
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        import snapshot_driver
        t0 = [0.0]

        def around(fn):
            threading.setprofile(per_thread)
            t0[0] = time.perf_counter()
            main_prof.enable()
            try:
                return fn()
            finally:
                main_prof.disable()
        snapshot_driver.main(root, ref, around=around)
        t0 = t0[0]
    else:
        if argv[:1] == ["--"]:
            argv = argv[1:]
        sys.argv = ["container", *argv]
        from container.cli.app import main as cli_main

        def run_cli():
            # cli.app.main() without its os._exit() after the typer-free `run` fast path
            try:
                from container.cli.containers import fast_main
            except ImportError:
                fast_main = None
            code = fast_main(list(argv)) if fast_main else None
            if code is not None:
                raise SystemExit(code)
            cli_main(list(argv))
        threading.setprofile(per_thread)
        t0 = time.perf_counter()
        main_prof.enable()
        try:
            run_cli()
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            main_prof.disable()
    wall = time.perf_counter() - t0
    threading.setprofile(None)
    out = io.StringIO()
    stats = None
    for p in profs:
        try:
            p.create_stats()
        except Exception:
            continue
        if not getattr(p, "stats", None):
            continue
        if stats is None:
            stats = pstats.Stats(p, stream=out)
        else:
            stats.add(p)
    if stats is not None:
        # Waiting is not work: drop lock/queue/sleep/select waits (threads blocked on each other).
        waits = ("acquire' of '_thread.lock", "get' of '_queue.SimpleQueue", "built-in method time.sleep",
                 "select.poll", "select.select", "method 'wait'", "posix.waitpid", "posix.read")
        for key in [k for k in stats.stats if any(w in k[2] for w in waits)]:
            del stats.stats[key]
        stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    # keep the table, drop pstats' preamble of file names
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    head = next((line.strip() for line in lines if "function calls" in line), "")
    print(f"wall {wall:.3f} s; {head}", file=sys.stderr)
    sys.stdout.write("\n".join(lines[start:]).rstrip() + "\n")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
