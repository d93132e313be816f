"""runtime/logs.py: docker's json-file records, rotation, --since; runtime/options.py: --restart, --log-opt."""

from __future__ import annotations

import json
import time

import pytest

from container.engine.errors import ContainerError, RunError
from container.engine.runtime.logs import (LogWriter, log_records, parse_rfc3339, parse_since, read_records,
                                           rfc3339)
from container.engine.runtime.options import log_options, parse_size, restart_policy


def test_records_are_docker_json_file_lines(tmp_path):
    w = LogWriter(str(tmp_path))
    w.write("stdout", b"hel")
    w.write("stdout", b"lo\nwor")
    w.write("stderr", b"oops\n")
    w.write("stdout", "ld \u00e9\n".encode())
    w.write("stdout", b"no newline at the end")
    w.close()
    lines = (tmp_path / "container.log").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [(r["stream"], r["log"]) for r in recs] == [
        ("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "world \u00e9\n"), ("stdout", "no newline at the end")]
    assert all(set(r) == {"log", "stream", "time"} for r in recs)
    t = recs[0]["time"]
    assert len(t) == 30 and t.endswith("Z") and t[10] == "T"      # RFC 3339, nanoseconds
    assert abs(parse_rfc3339(t) - time.time()) < 60


def test_long_lines_split_at_16k(tmp_path):
    w = LogWriter(str(tmp_path))
    w.write("stdout", b"x" * 40000 + b"\n")
    w.close()
    recs = read_records(str(tmp_path))
    assert [len(r[1]) for r in recs] == [16384, 16384, 40000 - 32768 + 1]


def test_rotation_keeps_max_file_files_of_max_size(tmp_path):
    w = LogWriter(str(tmp_path), max_size=1000, max_file=3)
    for i in range(200):
        w.write("stdout", f"line {i:03d}\n".encode())
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["container.log", "container.log.1", "container.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    texts = [r[1] for r in read_records(str(tmp_path))]
    assert texts[-1] == "line 199\n"
    assert texts == [f"line {i:03d}\n" for i in range(200 - len(texts), 200)]      # oldest first, contiguous
    assert [r[1] for r in read_records(str(tmp_path), tail=2)] == ["line 198\n", "line 199\n"]
    assert read_records(str(tmp_path), tail=0) == []


def test_since_and_times():
    now = time.time()
    assert abs(parse_since("10m") - (now - 600)) < 5
    assert abs(parse_since("1h30m") - (now - 5400)) < 5
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2026-12-01T15:30:00Z") == parse_rfc3339("2026-12-01T15:30:00.000000000Z")
    assert parse_rfc3339("2026-12-01T16:30:00.5+01:00") == parse_rfc3339("2026-12-01T15:30:00Z") + 0.5
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    with pytest.raises(ContainerError):
        parse_since("yesterday")


def test_restart_policies_and_log_options():
    assert restart_policy("no") == ("no", 0)
    assert restart_policy("always") == ("always", 0)
    assert restart_policy("on-failure") == ("on-failure", 0)
    assert restart_policy("on-failure:5") == ("on-failure", 5)
    for bad in ("sometimes", "always:3", "on-failure:x", ""):
        with pytest.raises(RunError):
            restart_policy(bad)
    assert parse_size("10k") == 10240 and parse_size("20m") == 20 << 20 and parse_size("1g") == 1 << 30
    assert parse_size("512") == 512 and parse_size("3MB") == 3 << 20
    for bad in ("", "m", "-1m", "1t", "0"):
        with pytest.raises(RunError):
            parse_size(bad)
    assert log_options([]) == {"max_size": 20 << 20, "max_file": 5}
    assert log_options(["max-size=1m,max-file=2"], {"max_file": 9}) == {"max_size": 1 << 20, "max_file": 2}
    assert log_options([], {"max_file": 9})["max_file"] == 9
    for bad in (["max-file=0"], ["color=red"], ["max-size"]):
        with pytest.raises(RunError):
            log_options(bad)


def _texts(recs) -> list[str]:
    return [r[1] for r in recs]


def test_follow_reads_what_came_with_the_stop_after_a_rotation(tmp_path):
    """The writer rotates, writes its last record into the new file and exits, all between the
    follower's last look and its check that the container still runs: the follower still gets it."""
    w = LogWriter(str(tmp_path), max_size=300, max_file=50)
    first = [f"line {i:02d}\n" for i in range(5)]
    for t in first:
        w.write("stdout", t.encode())
    calls = []

    def running() -> bool:
        calls.append(1)
        if len(calls) == 1:                    # the container's last words, then it is gone
            for i in range(5, 40):
                w.write("stdout", f"line {i:02d}\n".encode())
            w.close()
        return False

    got = _texts(log_records(str(tmp_path), follow=True, running=running, interval=0.01))
    assert got == [f"line {i:02d}\n" for i in range(40)]
    assert len(list(tmp_path.glob("container.log*"))) > 1


def test_follow_from_mid_stream_across_many_rotations(tmp_path):
    """A writer that rotates every few hundred records while the follower starts, and lags (a slow
    terminal): every record once and in order, from the first, until the writer stops."""
    import threading

    n = 20000
    w = LogWriter(str(tmp_path), max_size=16000, max_file=1000)
    for i in range(200):
        w.write("stdout", f"{i}\n".encode())
    done = threading.Event()

    def writer() -> None:
        for i in range(200, n):
            w.write("stdout", f"{i}\n".encode())
            if i % 500 == 0:
                time.sleep(0.002)
        w.close()
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    got = []
    try:
        for rec in log_records(str(tmp_path), follow=True, running=lambda: not done.is_set(), interval=0.001):
            got.append(rec[1])
            if len(got) < 200:
                time.sleep(0.0005)
    finally:
        t.join()
    assert len(list(tmp_path.glob("container.log.*"))) > 20
    assert got == [f"{i}\n" for i in range(n)]


def test_records_tail_and_follow_with_one_file(tmp_path):
    """max-file=1: each rotation starts the file afresh; the follower goes on with the new one."""
    w = LogWriter(str(tmp_path), max_size=200, max_file=1)
    for i in range(3):
        w.write("stdout", f"old {i}\n".encode())
    calls = []

    def running() -> bool:
        calls.append(1)
        if len(calls) == 1:
            w.write("stdout", b"x" * 150 + b"\n")
            w.write("stdout", b"y" * 150 + b"\n")        # truncates: only this one is left
            w.close()
        return False

    got = _texts(log_records(str(tmp_path), follow=True, tail=1, running=running, interval=0.01))
    assert got == ["old 2\n", "y" * 150 + "\n"]
    assert _texts(log_records(str(tmp_path))) == ["y" * 150 + "\n"]
