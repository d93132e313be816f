"""Detached containers (issue 13): run -d under a supervisor process, logs, stop/kill/start/restart/
wait, restart policies, --init, state after kill -9, many at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from checks import json_lines, one_error


def _ps(cli, name):
    rows = [r for r in json_lines(cli("ps", "-a", "--format", "json", check=True).stdout) if r["Names"] == name]
    return rows[0] if rows else None


def _until(pred, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _mounts_under(path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def _procs_with(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(int(p))
        except OSError:
            pass
    return out


def test_run_d_prints_id_logs_and_stop(cli, root, pushed):
    bb = pushed["busybox"]
    r = cli("run", "-d", "--name", "web", bb.ref, "sh", "-c", "echo hello; echo oops >&2; exec sleep 1000")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64
    row = _ps(cli, "web")
    assert row["State"] == "running" and row["Status"].startswith("Up ")
    _until(lambda: "hello" in cli("logs", "web").stdout, what="logs")
    lg = cli("logs", "web", check=True)
    assert lg.stdout == "hello\n" and lg.stderr == "oops\n"
    raw = (root / "containers" / cid / "container.log").read_text().splitlines()
    rec = json.loads(raw[0])
    assert set(rec) == {"log", "stream", "time"} and rec["stream"] in ("stdout", "stderr")
    t0 = time.monotonic()
    assert cli("stop", "-t", "1", "web", check=True).stdout == "web\n"
    assert time.monotonic() - t0 < 5
    row = _ps(cli, "web")
    assert row["State"] == "exited" and row["Status"].startswith("Exited (137)")
    assert cli("wait", "web", check=True).stdout == "137\n"
    assert not _mounts_under(root)
    assert cli("rm", "web", check=True).returncode == 0
