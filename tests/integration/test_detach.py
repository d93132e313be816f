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


@pytest.fixture(autouse=True)
def _no_leftovers(cli, root):
    """Whatever a test leaves running is removed (and its supervisors killed) at teardown: pytest
    deletes old temporary roots, and a supervisor must not outlive its store."""
    yield
    r = cli("ps", "-aq")
    ids = r.stdout.split()
    if ids:
        cli("rm", "-f", *ids)
    for pid in _procs_with(f"runtime.supervisor --root {root} "):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_httpd_serves_the_host(cli, root, pushed):
    port = _free_port()
    script = (f"mkdir -p /www && echo 'served from the container' > /www/index.html && "
              f"echo listening on {port} && exec httpd -f -vv -p 127.0.0.1:{port} -h /www")
    cid = cli("run", "-d", "--init", "--name", "httpd", pushed["busybox"].ref, "sh", "-c", script, check=True).stdout.strip()

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return None
    assert _until(get, what="httpd") == "served from the container\n"
    out = _until(lambda: (lambda r: r if "url:/index.html" in r.stderr else None)(cli("logs", "-t", "httpd")),
                 what="httpd's request log")
    first = out.stdout.splitlines()[0]
    assert first.endswith(f"listening on {port}") and first[:4].isdigit() and "T" in first.split()[0]
    t0 = time.monotonic()
    cli("stop", "httpd", check=True)          # --init forwards SIGTERM, httpd dies of it: no 10 s wait
    assert time.monotonic() - t0 < 5
    assert _ps(cli, "httpd")["Status"].startswith("Exited (143)")
    assert get() is None
    # start again: same container, same rootfs (its /www is still there), the log goes on
    assert cli("start", "httpd", check=True).stdout == "httpd\n"
    assert _until(get, what="httpd again") == "served from the container\n"
    assert cli("logs", "httpd", check=True).stdout.count("listening on") == 2
    assert cli("rm", "-f", "httpd", check=True).returncode == 0
    assert get() is None and not (root / "containers" / cid).exists() and not _mounts_under(root)


def test_start_failures_exit_like_run(cli, root, pushed):
    bb = pushed["busybox"]
    r = cli("run", "-d", bb.ref, "no-such-command")
    assert r.returncode == 127 and "executable file not found" in one_error(r)
    r = cli("run", "-d", bb.ref, "/etc/passwd")
    assert r.returncode == 126 and "permission denied" in one_error(r)
    r = cli("run", "-d", "--user", "nobody-here", bb.ref, "true")
    assert r.returncode == 125
    r = cli("run", "-d", "--restart", "sometimes", bb.ref, "true")
    assert r.returncode == 125 and "restart policy" in one_error(r)
    r = cli("run", "-d", "--rm", "--restart", "always", bb.ref, "true")
    assert r.returncode == 125 and "Conflicting options" in one_error(r)
    assert cli("ps", "-aq", check=True).stdout == ""           # nothing left behind
    assert os.listdir(root / "containers") == []
    r = cli("stop", "nothing-here")
    assert r.returncode == 1 and "No such container" in one_error(r)


def test_exit_codes_wait_and_rm(cli, root, pushed):
    bb = pushed["busybox"]
    cid = cli("run", "-d", "--name", "three", bb.ref, "sh", "-c", "exit 3", check=True).stdout.strip()
    assert cli("wait", "three", check=True).stdout == "3\n"
    assert _ps(cli, "three")["Status"].startswith("Exited (3)")
    assert cli("kill", "three").returncode == 1               # not running: docker's error
    # --rm: removed by its supervisor when it exits
    cid = cli("run", "-d", "--rm", "--name", "gone", bb.ref, "sh", "-c", "echo bye; sleep 0.3", check=True).stdout.strip()
    _until(lambda: not (root / "containers" / cid).exists(), what="--rm")
    assert _ps(cli, "gone") is None
    # kill -s: the signal reaches the process (a trap), a SIGKILL ends it with 137
    cli("run", "-d", "--name", "trap", bb.ref, "sh", "-c",
        "trap 'echo got USR1' USR1; echo ready; while true; do sleep 0.1; done", check=True)
    _until(lambda: "ready" in cli("logs", "trap").stdout, what="trap ready")
    assert cli("kill", "-s", "USR1", "trap", check=True).stdout == "trap\n"
    _until(lambda: "got USR1" in cli("logs", "trap").stdout, what="USR1 delivered")
    assert cli("kill", "-s", "NOPE", "trap").returncode == 1
    cli("kill", "trap", check=True)
    assert cli("wait", "trap", check=True).stdout == "137\n"


@pytest.fixture
def cpu_load():
    """Two busy loops for the length of a test: a loaded machine, where a follower and the
    supervisor get descheduled at the worst moments."""
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


def test_wait_prints_the_exit_code_of_a_container_removed_meanwhile(cli, root, pushed):
    """docker wait on a --rm container (or one rm -f'd while waited for) prints its exit code."""
    bb = pushed["busybox"]
    cli("run", "-d", "--rm", "--name", "brief", bb.ref, "sh", "-c", "sleep 1; exit 7", check=True)
    r = cli("wait", "brief", timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, "7\n", "")
    assert _ps(cli, "brief") is None
    for name, rm in (("long", ["--rm"]), ("kept", [])):
        cli("run", "-d", *rm, "--name", name, bb.ref, "sleep", "1000", check=True)
        p = subprocess.Popen([str(cli.exe), "--root", str(root), "wait", name], env=cli.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)                                  # (it waits)
        assert p.poll() is None
        cli("rm", "-f", name, check=True)
        out, err = p.communicate(timeout=30)
        assert (p.returncode, out, err) == (0, "137\n", ""), name
    r = cli("wait", "brief")                             # gone before the wait: docker's error
    assert r.returncode == 1 and "No such container" in one_error(r)


def test_volumes_of_a_detached_container_survive_stop_start_and_restart(cli, root, pushed, tmp_path):
    """run -d -v NAME:/data -v HOST:/h:ro --mount type=tmpfs: the supervisor mounts them from the
    container's config, at every start (start after stop, restart, a restart policy's)."""
    bb = pushed["busybox"]
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "f").write_text("from-host\n")
    script = "echo run >> /data/runs; grep -c ' /run/t tmpfs' /proc/mounts >> /data/runs; exec sleep 1000"
    cli("run", "-d", "--name", "vols", "-v", "data:/data", "-v", f"{host}:/h:ro", "--mount", "type=tmpfs,dst=/run/t",
        bb.ref, "sh", "-c", script, check=True)
    runs = lambda: cli("exec", "vols", "cat", "/data/runs").stdout    # noqa: E731
    _until(lambda: runs() == "run\n1\n", what="the first start's mounts")
    assert cli("exec", "vols", "cat", "/h/f").stdout == "from-host\n"
    assert cli("exec", "vols", "touch", "/h/x").returncode != 0 and not (host / "x").exists()
    cli("stop", "-t", "0", "vols", check=True)
    cli("start", "vols", check=True)
    _until(lambda: runs() == "run\n1\n" * 2, what="the mounts after start")
    assert cli("exec", "vols", "cat", "/h/f").stdout == "from-host\n"
    cli("restart", "-t", "0", "vols", check=True)
    _until(lambda: runs() == "run\n1\n" * 3, what="the mounts after restart")
    assert cli("exec", "vols", "touch", "/h/x").returncode != 0
    cli("rm", "-f", "vols", check=True)
    assert "data" in cli("volume", "ls", "-q", check=True).stdout.split()     # a named volume outlives it
    # a restart policy's restarts mount them too
    flaky = "echo try >> /data/tries; [ $(wc -l < /data/tries) -ge 3 ] && exec sleep 1000; exit 1"
    cli("run", "-d", "--name", "again", "--restart", "on-failure:5", "-v", "data:/data", bb.ref, "sh", "-c", flaky,
        check=True)
    _until(lambda: (_ps(cli, "again") or {}).get("State") == "running" and
           cli("exec", "again", "wc", "-l", "/data/tries").stdout.split()[:1] == ["3"], what="three tries")
    assert cli("exec", "again", "cat", "/data/runs").stdout == "run\n1\n" * 3        # the same volume
    cli("rm", "-f", "again", check=True)


def test_stop_with_a_negative_timeout_waits_for_the_container(cli, root, pushed):
    """docker stop -t -1: the stop signal, then wait as long as it takes (no SIGKILL)."""
    bb = pushed["busybox"]
    cli("run", "-d", "--name", "slow", bb.ref, "sh", "-c",
        "trap 'sleep 2; exit 0' TERM; echo ready; while true; do sleep 0.1; done", check=True)
    _until(lambda: "ready" in cli("logs", "slow").stdout, what="the trap")
    t0 = time.monotonic()
    assert cli("stop", "-t", "-1", "slow", check=True).stdout == "slow\n"
    assert time.monotonic() - t0 >= 2
    assert cli("wait", "slow", check=True).stdout == "0\n"           # its own exit, not SIGKILL's 137


def test_logs_tail_since_follow(cli, root, pushed):
    bb = pushed["busybox"]
    cli("run", "-d", "--name", "talk", bb.ref, "sh", "-c",
        "for i in 1 2 3 4 5; do echo line $i; done; sleep 4; echo late; sleep 0.5", check=True)
    _until(lambda: "line 5" in cli("logs", "talk").stdout, what="5 lines")
    t0 = time.monotonic()
    r = cli("logs", "-f", "--tail", "1", "talk", check=True, timeout=30)   # ends when the container stops
    assert r.stdout == "line 5\nlate\n" and time.monotonic() - t0 < 10
    assert cli("logs", "--tail", "2", "talk", check=True).stdout == "line 5\nlate\n"
    assert cli("logs", "--since", "1h", "talk", check=True).stdout.startswith("line 1\n")
    assert cli("logs", "--since", str(time.time() + 60), "talk", check=True).stdout == ""
    assert cli("logs", "--since", "yesterday-ish", "talk").returncode == 1


def test_log_rotation_and_follow_across_it(cli, root, pushed, cpu_load):
    bb = pushed["busybox"]
    burst = "sleep 1; i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done; sleep 0.5"
    cid = cli("run", "-d", "--name", "noisy", "--log-opt", "max-size=4k", "--log-opt", "max-file=12", bb.ref,
              "sh", "-c", burst, check=True).stdout.strip()
    r = cli("logs", "-f", "noisy", check=True, timeout=60)
    lines = r.stdout.splitlines()
    first = int(lines[0].split()[1])                        # (-f starts at the end: what it saw, all of it)
    assert lines == [f"line {i}" for i in range(first, 400)] and len(lines) > 200     # across rotations
    cdir = root / "containers" / cid
    files = [p for p in cdir.iterdir() if p.name.startswith("container.log")]
    assert 6 <= len(files) <= 12 and all(p.stat().st_size <= 4096 for p in files)
    assert cli("logs", "noisy", check=True).stdout.splitlines() == [f"line {i}" for i in range(400)]
    # max-file caps what is kept: the oldest lines go
    cid = cli("run", "-d", "--name", "capped", "--log-opt", "max-size=4k,max-file=2", bb.ref, "sh", "-c", burst,
              check=True).stdout.strip()
    assert cli("wait", "capped", check=True).stdout == "0\n"
    kept = cli("logs", "capped", check=True).stdout.splitlines()
    assert kept[-1] == "line 399" and 50 < len(kept) < 120
    assert sorted(p.name for p in (root / "containers" / cid).iterdir() if p.name.startswith("container.log")) \
        == ["container.log", "container.log.1"]
    r = cli("run", "-d", "--log-opt", "max-size=lots", bb.ref, "true")
    assert r.returncode == 125 and "invalid size" in one_error(r)


def test_follow_from_mid_burst_under_load_misses_nothing(cli, root, pushed, cpu_load):
    """logs -f started while the container writes fast (and rotates): every record once, in order,
    the last ones too (the follower reads what was there and goes on from the same open files)."""
    bb = pushed["busybox"]
    n = 30000
    burst = (f"i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); "
             f"[ $((i % 500)) = 0 ] && sleep 0.05; done; sleep 0.2")        # ~3 s of output
    cli("run", "-d", "--name", "burst", "--log-opt", "max-size=32k,max-file=400", bb.ref, "sh", "-c", burst,
        check=True)
    _until(lambda: "line 50\n" in cli("logs", "burst").stdout, what="the burst under way")
    r = cli("logs", "-f", "burst", check=True, timeout=120)
    lines = r.stdout.splitlines()
    assert len(lines) == n and lines == [f"line {i}" for i in range(n)]
    assert cli("logs", "burst", check=True).stdout.splitlines() == lines


def test_output_still_in_the_pipe_after_the_exit_is_logged(cli, root, pushed):
    """The supervisor stalls (SIGSTOP: a loaded machine) after it saw the container exit, for
    longer than it waits for stragglers' output: what is in the pipe when it resumes is logged."""
    bb = pushed["busybox"]
    script = ("touch /dev/null; "                      # (ash's & wants one; chroot's /dev is empty)
              "(sleep 0.5; i=0; while [ $i -lt 300 ]; do echo late $i; i=$((i+1)); done) & echo early")
    cid = cli("run", "-d", "--isolation", "chroot", "--name", "bg", bb.ref, "sh", "-c", script,
              check=True).stdout.strip()
    cdir = root / "containers" / cid
    _until(lambda: b"early" in (cdir / "container.log").read_bytes(), what="the first line", timeout=10)
    time.sleep(0.1)                                     # (it has seen its init exit by now)
    sup = int((cdir / "supervisor.pid").read_text())
    os.kill(sup, signal.SIGSTOP)
    time.sleep(2.0)                                     # the straggler writes meanwhile and ends
    os.kill(sup, signal.SIGCONT)
    assert cli("wait", "bg", check=True).stdout == "0\n"
    assert cli("logs", "bg", check=True).stdout.splitlines() == ["early"] + [f"late {i}" for i in range(300)]


def test_restart_on_failure_counts_and_always_until_stop(cli, root, pushed):
    bb = pushed["busybox"]
    cli("run", "-d", "--name", "flaky", "--restart", "on-failure:2", bb.ref, "sh", "-c", "echo try; exit 1", check=True)
    _until(lambda: (_ps(cli, "flaky") or {}).get("State") == "exited" and
           cli("logs", "flaky").stdout.count("try") == 3, timeout=30, what="3 tries")
    time.sleep(1)
    assert cli("logs", "flaky", check=True).stdout.count("try") == 3        # 1 + 2 retries, then no more
    [doc] = json.loads(cli("inspect", "flaky", check=True).stdout)
    assert doc["State"]["ExitCode"] == 1
    # on-failure does not restart a success
    cli("run", "-d", "--name", "fine", "--restart", "on-failure", bb.ref, "sh", "-c", "echo ok", check=True)
    assert cli("wait", "fine", check=True).stdout == "0\n"
    time.sleep(0.5)
    assert cli("logs", "fine", check=True).stdout == "ok\n"
    # always: restarts after exits and a kill of the init from outside, stops for good on `stop`
    cli("run", "-d", "--name", "forever", "--restart", "always", bb.ref, "sh", "-c", "echo up; sleep 0.2", check=True)
    _until(lambda: cli("logs", "forever").stdout.count("up") >= 3, timeout=30, what="restarts")
    cli("stop", "-t", "2", "forever", check=True)
    n = cli("logs", "forever", check=True).stdout.count("up")
    time.sleep(1)
    assert cli("logs", "forever", check=True).stdout.count("up") == n
    assert _ps(cli, "forever")["State"] == "exited"
    assert cli("ps", "-q", check=True).stdout == ""


def test_init_reaps_and_forwards(cli, root, pushed):
    bb = pushed["busybox"]
    # without --init, sleep as pid 1 ignores SIGTERM: stop waits for the SIGKILL (137)
    cli("run", "-d", "--name", "bare", bb.ref, "sleep", "1000", check=True)
    t0 = time.monotonic()
    cli("stop", "-t", "1", "bare", check=True)
    assert time.monotonic() - t0 >= 1 and cli("wait", "bare", check=True).stdout == "137\n"
    # with --init: pid 1 is the reaper, the command is its child and dies of the forwarded SIGTERM
    cli("run", "-d", "--init", "--name", "inited", bb.ref, "sh", "-c",
        "(sleep 0.1 &) ; sleep 0.5; ps -o pid,stat,args; exec sleep 1000", check=True)
    out = _until(lambda: (lambda s: s if "sleep 1000" in s or "PID" in s else None)(cli("logs", "inited").stdout),
                 what="ps output")
    _until(lambda: "PID" in cli("logs", "inited").stdout, what="ps")
    out = cli("logs", "inited", check=True).stdout
    assert " Z " not in out                                   # the orphaned sleep was reaped
    t0 = time.monotonic()
    cli("stop", "inited", check=True)
    assert time.monotonic() - t0 < 5
    assert cli("wait", "inited", check=True).stdout == "143\n"


def test_kill_9_supervisor_init_and_rm_f(cli, root, pushed):
    bb = pushed["busybox"]
    cid = cli("run", "-d", "--name", "victim", bb.ref, "sleep", "1000", check=True).stdout.strip()
    cdir = root / "containers" / cid
    sup = int((cdir / "supervisor.pid").read_text())
    init = _ps(cli, "victim")["Pid"]
    os.kill(sup, signal.SIGKILL)
    _until(lambda: _ps(cli, "victim")["State"] == "exited", what="exited after the supervisor's kill -9")
    assert _ps(cli, "victim")["Status"].startswith("Exited (unknown)")
    _until(lambda: not os.path.exists(f"/proc/{init}"), what="the container's processes gone")
    assert cli("stop", "victim", check=True).returncode == 0                # stop of a dead one: fine
    cli("start", "victim", check=True)                                      # and it starts again
    assert _ps(cli, "victim")["State"] == "running"
    # the container's init killed from outside: the supervisor records 137
    os.kill(_ps(cli, "victim")["Pid"], signal.SIGKILL)
    assert cli("wait", "victim", check=True).stdout == "137\n"
    assert _ps(cli, "victim")["Status"].startswith("Exited (137)")
    cli("start", "victim", check=True)
    sup = int((cdir / "supervisor.pid").read_text())
    assert cli("rm", "-f", "victim", check=True).returncode == 0
    assert not cdir.exists() and not _mounts_under(root)
    _until(lambda: not os.path.exists(f"/proc/{sup}"), what="supervisor gone")


def test_kill_9_of_the_cli_leaves_a_truthful_state(cli, root, pushed):
    bb = pushed["busybox"]
    exe = str(cli.exe)       # (not `from conftest import`: tests/rootless has a conftest of its own)
    for delay in (0.0, 0.05, 0.15, 0.3, 0.6):
        p = subprocess.Popen([exe, "--root", str(root), "run", "-d", "--name", f"k{int(delay * 100)}", bb.ref,
                              "sleep", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        p.kill()
        p.wait()
    time.sleep(1)
    for row in json_lines(cli("ps", "-a", "--format", "json", check=True).stdout):
        assert row["State"] in ("running", "created", "exited")
        if row["State"] == "running":
            assert os.path.exists(f"/proc/{row['Pid']}")
    for row in json_lines(cli("ps", "-a", "--format", "json", check=True).stdout):
        assert cli("rm", "-f", row["Names"]).returncode == 0
    assert cli("ps", "-aq", check=True).stdout == ""
    assert not _mounts_under(root)
    assert not [p for p in _procs_with(str(root)) if p != os.getpid()]


def test_generate_systemd(cli, root, pushed):
    cli("create", "--name", "svc", pushed["busybox"].ref, "sleep", "1000", check=True)
    unit = cli("generate", "systemd", "svc", check=True).stdout
    assert "[Service]" in unit and "Type=forking" in unit and f"--root {root}" in unit
    assert " start " in unit and " stop -t 10 " in unit and "PIDFile=" in unit
    assert cli("generate", "systemd", "nope").returncode == 1


@pytest.mark.slow
def test_fifty_in_parallel(cli, root, pushed):
    from concurrent.futures import ThreadPoolExecutor

    bb = pushed["busybox"]
    cli("pull", bb.ref, check=True)
    with ThreadPoolExecutor(50) as ex:
        rs = list(ex.map(lambda i: cli("run", "-d", "--name", f"c{i}", bb.ref, "sleep", "1000", timeout=300),
                         range(50)))
    assert [r.returncode for r in rs] == [0] * 50, [r.stderr for r in rs if r.returncode]
    import resource

    exe = str(cli.exe)       # (not `from conftest import`: tests/rootless has a conftest of its own)

    def cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime
    c0 = cpu()
    out = subprocess.run([exe, "--root", str(root), "ps", "--format", "{{.Names}} {{.State}}"],
                         capture_output=True, text=True, check=True).stdout
    took = cpu() - c0                  # CPU seconds: the wall clock is the other tests' on a busy machine
    assert sorted(out.split("\n")[:-1]) == sorted(f"c{i} running" for i in range(50))
    assert took < 0.6, took
    pids = [r["Pid"] for r in json_lines(cli("ps", "--format", "json", check=True).stdout)]
    with ThreadPoolExecutor(25) as ex:
        rs = list(ex.map(lambda i: cli("stop", "-t", "1", f"c{i}", timeout=300), range(50)))
    assert [r.returncode for r in rs] == [0] * 50
    assert cli("ps", "-q", check=True).stdout == ""
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert not _mounts_under(root)
    from container.cas.lock import is_held

    assert not any(is_held(p / "lock") for p in (root / "containers").iterdir())
    assert cli("container", "prune", "-f", check=True).returncode == 0
    assert os.listdir(root / "containers") == []


def test_foreground_output_is_recorded(cli, root, pushed):
    bb = pushed["busybox"]
    cli("pull", bb.ref, check=True)
    r = cli("run", "--name", "fg", bb.ref, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")        # shown as before ...
    lg = cli("logs", "fg", check=True)
    assert (lg.stdout, lg.stderr) == ("out\n", "err\n")                        # ... and recorded
    r = cli("run", "-t", "--name", "fgt", bb.ref, "sh", "-c", "echo tty-out")
    assert r.returncode == 0 and "tty-out" in r.stdout
    assert "tty-out" in cli("logs", "fgt", check=True).stdout
    # --rm keeps nothing (its log would go with it), and its output is unchanged
    r = cli("run", "--rm", bb.ref, "sh", "-c", "echo gone")
    assert r.stdout == "gone\n"


def test_same_as_podman(cli, root, pushed, podman):
    """run -d / logs / wait / stop / kill / --init: the same exit codes and output as podman's."""
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    bb = pushed["busybox"]
    p = podman("pull", "-q", "--tls-verify=false", bb.ref)
    if p.returncode != 0:
        pytest.skip(f"podman pull failed: {p.stderr.strip()[-200:]}")
    cli("pull", bb.ref, check=True)

    has_catatonit = any(os.path.exists(p) for p in ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit"))

    def pm(*args):          # (this machine refuses podman's default rlimits)
        if args[0] == "run":
            args = ("run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", *args[1:])
        return podman(*args)

    def scenario(tool, run):
        out = {}
        run("run", "-d", "--name", "a", bb.ref, "sh", "-c", "echo out; echo err >&2; exit 3")
        out["wait"] = run("wait", "a").stdout.strip()
        lg = run("logs", "a")
        out["logs"] = (lg.stdout, lg.stderr)
        out["tail"] = run("logs", "--tail", "1", "a").stdout + run("logs", "--tail", "1", "a").stderr
        run("run", "-d", "--name", "b", bb.ref, "sleep", "1000")
        out["stop"] = run("stop", "-t", "1", "b").returncode
        out["stop-code"] = run("wait", "b").stdout.strip()
        if tool != "podman" or has_catatonit:    # (podman's --init is catatonit: not always installed)
            run("run", "-d", "--init", "--name", "c", bb.ref, "sleep", "1000")
            run("stop", "c")
            out["init-code"] = run("wait", "c").stdout.strip()
        else:
            out["init-code"] = "143"            # docker's with tini: SIGTERM forwarded, sleep dies of it
        run("run", "-d", "--name", "d", bb.ref, "sleep", "1000")
        out["kill"] = run("kill", "-s", "TERM", "d").returncode          # pid 1 ignores TERM: still up
        time.sleep(0.5)
        out["kill-state"] = run("inspect", "--format", "{{.State.Status}}", "d").stdout.strip() \
            if tool == "podman" else _ps(cli, "d")["State"]
        run("kill", "d")
        out["kill-code"] = run("wait", "d").stdout.strip()
        out["kill-stopped"] = run("kill", "d").returncode != 0
        r = run("run", "-d", bb.ref, "no-such-command")
        out["enoent"] = r.returncode
        for n in "abcd":
            run("rm", "-f", n)
        return out

    ours = scenario("container", cli)
    theirs = scenario("podman", pm)
    assert ours == theirs, (ours, theirs)


@pytest.mark.slow
def test_stop_and_restart_timings_as_podman(cli, root, pushed, podman):
    """stop -t N / restart -t N of a pid 1 that ignores SIGTERM take N seconds, then SIGKILL (137);
    one that handles SIGTERM stops at once; -t 0 kills at once; restart of an exited container
    starts it. Each command's time, less the tool's own start-up (`ps`), is podman's within 0.8 s."""
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    bb = pushed["busybox"]
    if podman("pull", "-q", "--tls-verify=false", bb.ref).returncode != 0:
        pytest.skip("podman pull failed")
    cli("pull", bb.ref, check=True)

    def pm(*args):          # (this machine refuses podman's default rlimits)
        if args[0] == "run":
            args = ("run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", *args[1:])
        return podman(*args)

    def scenario(run):
        out, took = {}, {}

        def timed(key, *args):
            t0 = time.monotonic()
            r = run(*args)
            took[key] = time.monotonic() - t0
            out[key] = (r.returncode, r.stdout)

        timed("base", "ps", "-q")
        run("run", "-d", "--name", "s", bb.ref, "sleep", "1000")
        timed("stop-t2", "stop", "-t", "2", "s")
        out["stop-code"] = run("wait", "s").stdout
        timed("restart-exited", "restart", "s")
        timed("restart-t1", "restart", "-t", "1", "s")
        out["restart-code"] = run("inspect", "--format", "{{.State.Status}}", "s").stdout if run is pm \
            else _ps(cli, "s")["State"] + "\n"
        timed("stop-t0", "stop", "-t", "0", "s")
        timed("stop-stopped", "stop", "-t", "3", "s")
        run("run", "-d", "--name", "trap", bb.ref, "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
        time.sleep(0.5)
        timed("stop-trap", "stop", "trap")
        out["trap-code"] = run("wait", "trap").stdout
        run("rm", "-f", "s", "trap")
        return out, took

    ours, our_t = scenario(cli)
    theirs, their_t = scenario(pm)
    assert ours == theirs, (ours, theirs)
    assert ours["stop-code"] == "137\n" and ours["trap-code"] == "0\n" and ours["restart-code"] == "running\n"
    assert our_t["stop-t2"] >= 2 and our_t["restart-t1"] >= 1, our_t
    extra = {k: round((our_t[k] - our_t["base"]) - (their_t[k] - their_t["base"]), 2) for k in our_t}
    assert all(abs(v) < 0.8 for v in extra.values()), (extra, our_t, their_t)


def test_log_options_from_the_config_file(cli, root, pushed):
    cli.config_path.write_text('[log]\nmax-size = "2k"\nmax-file = 2\n')
    cid = cli("run", "-d", pushed["busybox"].ref, "sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
              check=True).stdout.strip()
    assert cli("wait", cid, check=True).stdout == "0\n"
    files = sorted(p.name for p in (root / "containers" / cid).iterdir() if p.name.startswith("container.log"))
    assert files == ["container.log", "container.log.1"]
    assert all((root / "containers" / cid / f).stat().st_size <= 2048 for f in files)
    cli.config_path.write_text('[log]\nmax-file = "many"\n')
    r = cli("run", "-d", pushed["busybox"].ref, "true")
    assert r.returncode == 125 and "max-file" in one_error(r)
    assert [x for x in cli("ps", "-aq", check=True).stdout.split()] == [cid[:12]]


def test_gc_and_prune_keep_running_and_restarting_containers(cli, root, pushed):
    bb = pushed["busybox"]
    up = cli("run", "-d", "--name", "up", bb.ref, "sh", "-c", "echo x > /kept; exec sleep 1000", check=True).stdout.strip()
    cli("run", "-d", "--name", "again", "--restart", "always", bb.ref, "sh", "-c", "sleep 0.3; exit 1", check=True)
    done = cli("run", "-d", "--name", "done", bb.ref, "true", check=True).stdout.strip()
    cli("wait", "done", check=True)
    assert cli("container", "prune", "-f", check=True).returncode == 0
    assert cli("gc", check=True).returncode == 0
    assert cli("rmi", "-f", bb.ref).returncode in (0, 1)
    assert cli("gc", check=True).returncode == 0
    names = sorted(r["Names"] for r in json_lines(cli("ps", "-a", "--format", "json", check=True).stdout))
    assert names == ["again", "up"] and not (root / "containers" / done).exists()
    assert _ps(cli, "up")["State"] == "running" and (root / "containers" / up / "upper" / "kept").exists()
    _until(lambda: _ps(cli, "again")["State"] in ("running", "restarting"), what="again")
    cli("stop", "-t", "1", "again", "up", check=True)


@pytest.mark.parametrize("isolation", ["chroot"])
def test_kill_9_supervisor_chroot(cli, root, pushed, isolation):
    cid = cli("run", "-d", "--isolation", isolation, "--name", "ch", pushed["busybox"].ref, "sleep", "1000",
              check=True).stdout.strip()
    init = _ps(cli, "ch")["Pid"]
    os.kill(int((root / "containers" / cid / "supervisor.pid").read_text()), signal.SIGKILL)
    _until(lambda: not os.path.exists(f"/proc/{init}"), what="the container dies with its supervisor")
    assert _ps(cli, "ch")["State"] == "exited"
    cli("start", "ch", check=True)
    assert _ps(cli, "ch")["State"] == "running"
    cli("rm", "-f", "ch", check=True)
    assert not (root / "containers" / cid).exists()


def test_detached_tty_and_stdin(cli, root, pushed):
    bb = pushed["busybox"]
    cli("run", "-d", "-t", "--name", "dt", bb.ref, "sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; echo term=$TERM", check=True)
    assert cli("wait", "dt", check=True).stdout == "0\n"
    out = cli("logs", "dt", check=True).stdout.replace("\r", "")
    assert out == "is-a-tty\nterm=xterm\n"
    cli("run", "-d", "-i", "--name", "di", bb.ref, "cat", check=True)       # stdin open: cat waits
    time.sleep(0.5)
    assert _ps(cli, "di")["State"] == "running"
    cli("stop", "-t", "1", "di", check=True)


def test_after_a_reboot_nothing_is_running(cli, root, pushed):
    """A row that says "running" with nobody holding its lock (what a reboot leaves, its pid now
    someone else's): ps says exited, and neither stop nor rm -f signals that pid."""
    import sqlite3

    cid = cli("create", "--name", "rebooted", pushed["busybox"].ref, "sleep", "1000", check=True).stdout.strip()
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        with sqlite3.connect(root / "metadata.db") as db:
            db.execute("UPDATE container SET status = 'running', pid = ?, started = '2026-01-01 00:00:00' "
                       "WHERE id = ?", (bystander.pid, cid))
        row = _ps(cli, "rebooted")
        assert row["State"] == "exited" and row["Status"].startswith("Exited (unknown)")
        assert cli("ps", "-q", check=True).stdout == ""
        assert cli("stop", "rebooted", check=True).returncode == 0
        assert cli("kill", "rebooted").returncode == 1
        assert cli("start", "rebooted", check=True).returncode == 0           # starts again after the "reboot"
        assert _ps(cli, "rebooted")["State"] == "running"
        assert cli("rm", "-f", "rebooted", check=True).returncode == 0
        assert bystander.poll() is None                                      # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_start_attach_and_restart(cli, root, pushed):
    bb = pushed["busybox"]
    cli("create", "--name", "att", bb.ref, "sh", "-c", "echo attached; echo to-err >&2; exit 5", check=True)
    r = cli("start", "-a", "att")
    assert (r.returncode, r.stdout, r.stderr) == (5, "attached\n", "to-err\n")
    r = cli("start", "-a", "att")                    # a second start: only this run's output
    assert (r.returncode, r.stdout) == (5, "attached\n")
    assert cli("logs", "att", check=True).stdout == "attached\nattached\n"
    cli("run", "-d", "--init", "--name", "rs", bb.ref, "sh", "-c", "echo start; exec sleep 1000", check=True)
    pid = _ps(cli, "rs")["Pid"]
    assert cli("restart", "rs", check=True).stdout == "rs\n"
    row = _ps(cli, "rs")
    assert row["State"] == "running" and row["Pid"] != pid
    _until(lambda: cli("logs", "rs").stdout == "start\nstart\n", what="two starts")
    assert cli("start", "rs", check=True).stdout == "rs\n"                     # already running: a no-op
    assert _ps(cli, "rs")["Pid"] == row["Pid"]
