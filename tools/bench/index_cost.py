"""What the contents index costs: a cold pull of bench/app:1 with and without it, the DB's growth
per 10k entries, and `container files` on it. docs/benchmarks.md ("Contents index") has the numbers.

    .venv/bin/python tools/bench/index_cost.py [--rounds 7] [--base /dev/shm/index-bench] [--container BIN]

The installed CLI (.venv/bin/container, or BIN: a non-editable install measures what users run) against a loopback registry (tools/bench/bench.py's images,
built once and cached), a fresh store on tmpfs per pull, `sync` before each; the two modes
alternate (CONTAINER_INDEX=0 turns the recorder off), their order rotating each round; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tools.bench import bench  # noqa: E402

CONTAINER = str(REPO / ".venv" / "bin" / "container")


def pull(root: Path, ref: str, index: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the pull process and its children)"""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["sync"], check=True)
    env = dict(os.environ, CONTAINER_INDEX="1" if index else "0")
    cfg = root.parent / "config.toml"
    cfg.write_text(f'[registries."{ref.split("/")[0]}"]\ninsecure = true\n')
    env["CONTAINER_CONFIG"] = str(cfg)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([CONTAINER, "--root", str(root), "pull", "-q", ref], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def timed(argv: list[str]) -> tuple[float, float]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def db_facts(root: Path) -> dict:
    db = root / "metadata.db"
    with sqlite3.connect(db) as c:
        c.execute("VACUUM")
        files = c.execute("SELECT COUNT(*) FROM file").fetchone()[0]
        pk = c.execute("SELECT COUNT(*) FROM layer_package").fetchone()[0] + \
            c.execute("SELECT COUNT(*) FROM package").fetchone()[0]
        try:
            per_table = dict(c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.OperationalError:
            per_table = {}
    return {"bytes": db.stat().st_size, "file_rows": files, "package_rows": pk, "tables": per_table}


def main() -> int:
    global CONTAINER
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--base", default="/dev/shm/index-bench")
    ap.add_argument("--image", default="app1")
    ap.add_argument("--container", default=CONTAINER)
    a = ap.parse_args()
    CONTAINER = a.container
    cache = Path(os.environ.get("CONTAINER_BENCH_CACHE", Path.home() / ".cache" / "container-bench"))
    cache.mkdir(parents=True, exist_ok=True)
    reg = bench.start_registry(cache)
    try:
        names = bench.prepare_images(reg, cache, 64 << 20)["names"]
        ref = f"{reg.host}/{names[a.image]}"
        base = Path(a.base)
        times: dict[bool, list[float]] = {True: [], False: []}
        cpus: dict[bool, list[float]] = {True: [], False: []}
        for r in range(a.warmup + a.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for mode in order:
                t, c = pull(base / "root", ref, mode)
                if r >= a.warmup:
                    times[mode].append(t)
                    cpus[mode].append(c)
                print(f"round {r} index={int(mode)} {t:.2f}s cpu {c:.2f}s", file=sys.stderr, flush=True)
        facts = {}
        for mode in (False, True):
            pull(base / "root", ref, mode)
            facts[mode] = db_facts(base / "root")
        ft = [timed([CONTAINER, "--root", str(base / "root"), "files", ref]) for _ in range(10)]
        images = [timed([CONTAINER, "--root", str(base / "root"), "images"]) for _ in range(10)]
        nop = [timed([sys.executable, "-c", "pass"]) for _ in range(10)]
        listed = len(subprocess.run([CONTAINER, "--root", str(base / "root"), "files", ref],
                                    capture_output=True, text=True, check=True).stdout.splitlines())
        shutil.rmtree(base, ignore_errors=True)
    finally:
        reg.stop()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    grow = facts[True]["bytes"] - facts[False]["bytes"]
    out = {
        "image": names[a.image], "rounds": a.rounds,
        "pull_with_index": {"median": on, "min": min(times[True]), "max": max(times[True])},
        "pull_without_index": {"median": off, "min": min(times[False]), "max": max(times[False])},
        "overhead": on / off - 1,
        "cpu_with_index": statistics.median(cpus[True]), "cpu_without_index": statistics.median(cpus[False]),
        "cpu_overhead": statistics.median(cpus[True]) / statistics.median(cpus[False]) - 1,
        "db_bytes_without": facts[False]["bytes"], "db_bytes_with": facts[True]["bytes"],
        "file_rows": facts[True]["file_rows"], "package_rows": facts[True]["package_rows"],
        "bytes_per_10k_entries": grow * 10_000 / max(1, facts[True]["file_rows"]),
        "tables": facts[True]["tables"],
        "files_cmd": {"wall": statistics.median(t for t, _ in ft), "cpu": statistics.median(c for _, c in ft)},
        "images_cmd": {"wall": statistics.median(t for t, _ in images),
                       "cpu": statistics.median(c for _, c in images)},
        "python_pass": {"wall": statistics.median(t for t, _ in nop), "cpu": statistics.median(c for _, c in nop)},
        "entries_listed": listed,
        "load": os.getloadavg(),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
