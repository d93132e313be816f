"""What file-level dedupe costs and saves: a cold pull of bench/app:1 with and without it, and the
bytes saved by a store holding bench/app:1, bench/app:2 and bench/debian:1. docs/benchmarks.md
("File-level dedupe") has the numbers.

    python tools/bench/dedupe_cost.py [--container BIN] [--rounds 9] [--base /dev/shm/dedupe-bench]

BIN: the CLI to measure (a non-editable install: `pip install .` into a venv of its own; default
.venv/bin/container). A loopback registry with tools/bench/bench.py's images (built once and
cached), a fresh store on tmpfs per pull, `sync` before each; CONTAINER_DEDUPE=1 and =0 alternate,
their order rotating each round; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tools.bench import bench  # noqa: E402


def _env(root: Path, host: str, dedupe: bool) -> dict:
    cfg = root.parent / "config.toml"
    cfg.write_text(f'[registries."{host}"]\ninsecure = true\n')
    return dict(os.environ, CONTAINER_DEDUPE="1" if dedupe else "0", CONTAINER_CONFIG=str(cfg))


def pull(cli: str, root: Path, refs: list[str], dedupe: bool, *, fresh: bool = True) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the pull processes) for pulling refs one after the other."""
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    subprocess.run(["sync"], check=True)
    env = _env(root, refs[0].split("/")[0], dedupe)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for ref in refs:
        subprocess.run([cli, "--root", str(root), "pull", "-q", ref], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def du(path: Path, *, without_db: bool = False) -> int:
    extra = ["--exclude=metadata.db*"] if without_db else []
    out = subprocess.run(["du", "-sB1", *extra, str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--base", default="/dev/shm/dedupe-bench")
    ap.add_argument("--container", default=str(REPO / ".venv" / "bin" / "container"))
    a = ap.parse_args()
    cache = Path(os.environ.get("CONTAINER_BENCH_CACHE", Path.home() / ".cache" / "container-bench"))
    cache.mkdir(parents=True, exist_ok=True)
    reg = bench.start_registry(cache)
    base = Path(a.base)
    root = base / "root"
    try:
        names = bench.prepare_images(reg, cache, 64 << 20)["names"]
        ref = {k: f"{reg.host}/{names[k]}" for k in ("app1", "app2", "debian")}
        times: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        for r in range(a.warmup + a.rounds):
            for mode in ((True, False) if r % 2 == 0 else (False, True)):
                t, c = pull(a.container, root, [ref["app1"]], mode)
                if r >= a.warmup:
                    times[mode].append(t)
                    cpus[mode].append(c)
                print(f"round {r} dedupe={int(mode)} {t:.2f}s cpu {c:.2f}s", file=sys.stderr, flush=True)
        saved: dict = {}
        for mode in (False, True):
            pull(a.container, root, [ref["app1"], ref["app2"], ref["debian"]], mode)
            rep = json.loads(subprocess.run([a.container, "--root", str(root), "df", "-v", "--format", "report"],
                                            capture_output=True, text=True, check=True,
                                            env=_env(root, reg.host, mode)).stdout)
            saved[mode] = {"du": du(root), "deduplicated": rep.get("deduplicated", 0),
                           "adds_up": rep["total"] + rep["metadata"] - rep["database"] == du(root, without_db=True),
                           "layers_row": next(r["size"] for r in rep["summary"] if r["type"] == "Layers"),
                           "objects": sum(len(fs) for d, _, fs in os.walk(root / "objects")
                                          if not d.endswith("trees"))}
        shutil.rmtree(base, ignore_errors=True)
    finally:
        reg.stop()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    out = {
        "cli": a.container, "rounds": a.rounds, "image": names["app1"],
        "pull_with_dedupe": {"median": on, "min": min(times[True]), "max": max(times[True])},
        "pull_without_dedupe": {"median": off, "min": min(times[False]), "max": max(times[False])},
        "overhead": on / off - 1,
        "cpu_with": statistics.median(cpus[True]), "cpu_without": statistics.median(cpus[False]),
        "cpu_overhead": statistics.median(cpus[True]) / statistics.median(cpus[False]) - 1,
        "three_images": {"without": saved[False], "with": saved[True],
                         "du_saved": saved[False]["du"] - saved[True]["du"]},
        "load": os.getloadavg(),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
