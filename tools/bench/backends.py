"""8 concurrent pulls, then 8 concurrent runs, with the metadata in SQLite (ROOT/metadata.db) and in
PostgreSQL (a throwaway local server, tests/pgserver.py), on a loopback registry.

    .venv/bin/python tools/bench/backends.py [--rounds 3]      # as root; prints a markdown table

Each round: a fresh ROOT (and a fresh PostgreSQL database), the 8 pulls started together (8 images,
some sharing layers), then 8 `run --rm IMAGE true` together, then 8 more runs of the same, then the
same 8 runs one after another. Wall time of each batch, median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from tools import images as test_images  # noqa: E402
from tools.registry import Registry  # noqa: E402

import pgserver  # noqa: E402

PLAN = [("busybox", "b/busybox", "oci"), ("layered", "b/layered", "oci"), ("shared-a", "b/shared-a", "oci"),
        ("shared-b", "b/shared-b", "oci"), ("zstd", "b/zstd", "oci"), ("multiarch", "b/multiarch", "oci"),
        ("busybox", "b/busybox-v2s2", "v2s2"), ("multiarch-docker", "b/multiarch-docker", "oci")]
EXE = str(REPO / ".venv" / "bin" / "container")


def batch(argvs: list[list[str]], env: dict) -> float:
    def one(argv):
        r = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(argvs)) as ex:
        list(ex.map(one, argvs))
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    built = test_images.build_all(work / "images")
    reg = Registry(work / "storage", workdir=work / "reg")
    reg.start()
    pg = pgserver.PgServer().start()
    try:
        refs = [test_images.push(built[n], reg.host, repo, "latest", fmt).ref for n, repo, fmt in PLAN]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["CONTAINER_CONFIG"] = str(work / "empty.toml")
        (work / "empty.toml").write_text("")
        results: dict[str, dict[str, list[float]]] = {}
        for rnd in range(a.rounds):
            for backend in ("sqlite", "postgres"):
                root = work / f"root-{backend}-{rnd}"
                e = dict(env)
                if backend == "postgres":
                    e["CONTAINER_DB"] = pg.new_database()
                base = [EXE, "--root", str(root)]
                r = results.setdefault(backend, {"pull": [], "run (first)": [], "run (again)": [],
                                                 "run, one at a time": []})
                r["pull"].append(batch([base + ["pull", x] for x in refs], e))
                r["run (first)"].append(batch([base + ["run", "--rm", x, "true"] for x in refs], e))
                r["run (again)"].append(batch([base + ["run", "--rm", x, "true"] for x in refs], e))
                r["run, one at a time"].append(sum(batch([base + ["run", "--rm", x, "true"]], e) for x in refs))
        print(f"| 8 at once (median of {a.rounds}) | SQLite | PostgreSQL |")
        print("|---|---|---|")
        for k in ("pull", "run (first)", "run (again)", "run, one at a time"):
            s, p = (statistics.median(results[b][k]) for b in ("sqlite", "postgres"))
            print(f"| {k} | {s:.2f} s ({8 / s:.1f}/s) | {p:.2f} s ({8 / p:.1f}/s) |")
    finally:
        pg.stop()
        reg.stop()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
