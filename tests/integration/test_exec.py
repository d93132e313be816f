"""container exec: a new process in a running container's namespaces and root (docker exec).

Most containers are foreground `run`s started in the background by the test: exec depends only on
the Container row (pid, isolation, config) and /proc. The last tests enter real detached ones
(`run -d`, its supervisor's row; after a restart; --init; chroot).
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from checks import json_lines, one_error, pty_run
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="container exec needs root on Linux"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, pushed):
    base = tmp_path_factory.mktemp("execstore")
    root = base / "root"
    root.mkdir()
    c = ContainerCli(root, base)
    c("pull", "-q", pushed["busybox"].ref, check=True)
    c.bb = pushed["busybox"].ref
    return c


def _ps(store, name):
    for c in json_lines(store("ps", "-a", "--format", "json").stdout):
        if c["Names"] == name:
            return c
    return None


class Running:
    def __init__(self, proc, doc):
        self.proc, self.doc = proc, doc
        self.pid = int(doc["Pid"])          # the container's init, as the row records it


@contextlib.contextmanager
def running(store, name, *opts, cmd=("sleep", "120")):
    """A foreground `container run` in the background, yielded once `ps` shows it running."""
    argv = [str(store.exe), "--root", str(store.root), "run", "--name", name, *opts, store.bb, *cmd]
    p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            c = _ps(store, name)
            if c is not None and c["State"] == "running":
                break
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.05)
        yield Running(p, c)
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        store("rm", "-f", name)


def _ns(pid, kind="pid"):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def in_container(pid_ns: str) -> list[int]:
    """The host pids of the processes in a PID namespace."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/ns/pid") == pid_ns:
                    out.append(int(d))
            except OSError:
                pass
    return sorted(out)


def settle(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------- the container's view
def test_exec_sees_the_containers_namespaces_and_root(store):
    marker = "sh -c 'echo from-init > /tmp/marker; exec sleep 120'"
    with running(store, "view", "--hostname", "box", "--network", "none", cmd=["sh", "-c", marker[7:-1]]) as c:
        assert settle(lambda: store("exec", "view", "cat", "/tmp/marker").stdout == "from-init\n")
        assert store("exec", "view", "hostname").stdout == "box\n"
        assert os.uname().nodename != "box"
        assert store("exec", "view", "cat", "/proc/1/cmdline").stdout == "sleep\x00120\x00"
        r = store("exec", "view", "ls", "/")
        assert r.returncode == 0, r.stderr
        assert r.stdout == store("run", "--rm", store.bb, "ls", "/").stdout
        assert r.stdout != "\n".join(sorted(os.listdir("/"))) + "\n"
        # every namespace the init has; its very mount table (same root: same paths)
        script = ("for n in pid mnt uts ipc net; do [ $(readlink /proc/1/ns/$n) = $(readlink /proc/self/ns/$n) ] "
                  "|| echo differs $n; done; cmp /proc/1/mountinfo /proc/self/mountinfo && echo same-mounts; "
                  "ls /sys/class/net; echo $$")
        r = store("exec", "view", "sh", "-c", script)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:2] == ["same-mounts", "lo"], r.stdout
        assert 1 < int(lines[2]) < 100                    # a pid of the container's namespace
        # docker's masked and read-only paths hold in there too
        script = "wc -c < /proc/interrupts; echo 1 > /proc/sys/kernel/ns_last_pid; echo $?"
        r = store("exec", "view", "sh", "-c", script)
        assert r.stdout == "0\n1\n" and "Read-only file system" in r.stderr, (r.stdout, r.stderr)
        # a file the exec writes is the container's
        assert store("exec", "view", "sh", "-c", "echo from-exec > /tmp/x").returncode == 0
        assert store("exec", "view", "cat", "/tmp/x").stdout == "from-exec\n"
        assert in_container(_ns(c.pid)) == [c.pid]        # nothing left behind in there


def test_env_workdir_and_user_default_to_the_containers(store, tmp_path):
    with running(store, "envs", "-e", "FOO=bar", "-e", "KEEP=1", "-w", "/tmp", "-u", "app"):
        r = store("exec", "envs", "sh", "-c", "id; pwd; env | sort")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:2] == [store("run", "--rm", "-u", "app", store.bb, "id").stdout.strip(), "/tmp"]
        assert lines[0].startswith("uid=1000(app) gid=1000(app) ")
        env = lines[2:]
        assert {"FOO=bar", "KEEP=1", "HOME=/home/app"} <= set(env)
        assert any(x.startswith("HOSTNAME=") for x in env) and not any(x.startswith("TERM=") for x in env)

        envfile = tmp_path / "env"
        envfile.write_text("# a comment\nFROM_FILE=yes\nFOO=from-file\n")
        r = store("exec", "--env-file", str(envfile), "-e", "FOO=override", "-e", "NEW=1", "-w", "/", "-u", "root",
                  "envs", "sh", "-c", "id -u; pwd; env | sort")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:2] == ["0", "/"]
        assert {"FOO=override", "KEEP=1", "NEW=1", "FROM_FILE=yes", "HOME=/root"} <= set(lines[2:])
        assert store("exec", "-u", "1000:50", "envs", "id").stdout == "uid=1000(app) gid=50(staff) groups=50(staff)\n"
        assert store("exec", "-e", "HOME=/elsewhere", "-u", "root", "envs", "sh", "-c", "echo $HOME").stdout == \
            "/elsewhere\n"
        assert "TERM=xterm" in store("exec", "-t", "envs", "env").stdout.splitlines()


# ---------------------------------------------------------------------------------------- exit codes and errors
def test_exit_codes_as_docker_exec(store):
    with running(store, "codes"):
        assert store("exec", "codes", "sh", "-c", "exit 7").returncode == 7
        assert store("exec", "codes", "sh", "-c", "kill -TERM $$").returncode == 143
        r = store("exec", "codes", "no-such-command")
        assert r.returncode == 127
        assert one_error(r) == 'Error: exec: "no-such-command": executable file not found in $PATH'
        r = store("exec", "codes", "/etc/passwd")
        assert r.returncode == 126 and "permission denied" in one_error(r)
        r = store("exec", "-u", "nosuch", "codes", "id")
        assert r.returncode == 126
        assert one_error(r) == "Error: unable to find user nosuch: no matching entries in passwd file"
        r = store("exec", "-w", "/no/such/dir", "codes", "pwd")
        assert r.returncode == 126 and "/no/such/dir" in one_error(r)
        r = store("exec", "-w", "tmp", "codes", "pwd")
        assert r.returncode == 126 and "absolute path" in one_error(r)
        r = store("exec", "--env-file", "/no/such/file", "codes", "true")
        assert r.returncode != 0 and "/no/such/file" in one_error(r)
        assert store("exec", "codes").returncode == 2             # no command: a usage error


def test_exec_into_a_missing_stopped_or_created_container(store):
    r = store("exec", "nope", "true")
    assert r.returncode == 1 and one_error(r) == "Error: No such container: nope"
    assert store("run", "--name", "done", store.bb, "true").returncode == 0
    r = store("exec", "done", "true")
    assert r.returncode == 1 and one_error(r) == "Error: container done is not running"
    assert store("create", "--name", "made", store.bb, "true").returncode == 0
    r = store("exec", "made", "true")
    assert r.returncode == 1 and one_error(r) == "Error: container made is not running"
    store("rm", "done", "made")


def test_a_hostile_etc_passwd_does_not_hang_or_escape(store):
    """The user is resolved in the running container's /etc/passwd, which its root may replace: a
    fifo is skipped (no user file: numeric ids only), a symlink resolves inside the container."""
    cmd = ["sh", "-c", "mv /etc/passwd /etc/p; mkfifo /etc/passwd; touch /tmp/ready; exec sleep 120"]
    with running(store, "fifo", cmd=cmd):
        assert settle(lambda: store("exec", "fifo", "ls", "/tmp/ready").returncode == 0)
        r = store("exec", "-u", "1000", "fifo", "grep", "^Uid:", "/proc/self/status", timeout=20)
        assert (r.returncode, r.stdout.split()) == (0, ["Uid:"] + ["1000"] * 4), r.stderr
        r = store("exec", "-u", "app", "fifo", "id", timeout=20)
        assert r.returncode == 126 and "unable to find user app" in one_error(r)
        assert store("exec", "fifo", "sh", "-c", "rm /etc/passwd; ln -s /../../../etc/p /etc/passwd").returncode == 0
        assert store("exec", "-u", "app", "fifo", "id", "-u").stdout == "1000\n"


def test_stdin_only_with_i(store):
    with running(store, "in"):
        r = store("exec", "-i", "in", "sh", "-c", "cat; echo end", input="piped\n")
        assert (r.returncode, r.stdout) == (0, "piped\nend\n")
        r = store("exec", "in", "sh", "-c", "cat; echo end", input="not read\n")
        assert (r.returncode, r.stdout) == (0, "end\n")


# ---------------------------------------------------------------------------------------- tty, signals, processes
def test_exec_t_gets_a_tty(store):
    with running(store, "tty") as c:
        r = store("exec", "-t", "tty", "tty")
        assert r.returncode == 0 and r.stdout.startswith("/dev/pts/"), (r.stdout, r.stderr)
        r = store("exec", "tty", "tty")
        assert (r.returncode, r.stdout) == (1, "not a tty\n")
        argv = [str(store.exe), "--root", str(store.root), "exec", "-it", "tty", "sh"]
        code, out = pty_run(argv, store.env, [(b"# ", b"stty size; tty; echo $((6*7))\n"),
                                               (b"42", (40, 120)), (b"42", b"stty size; exit 3\n")])
        assert code == 3, out
        assert "33 101" in out and "/dev/pts/" in out and "42" in out, out
        assert "40 120" in out, out                       # a resize reaches the container's pty
        assert in_container(_ns(c.pid)) == [c.pid]


def test_signals_reach_the_process_and_nothing_leaks(store):
    with running(store, "sig") as c:
        ns = _ns(c.pid)
        argv = [str(store.exe), "--root", str(store.root), "exec", "sig", "sleep", "100"]
        p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL)
        assert settle(lambda: len(in_container(ns)) == 2)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 143
        assert settle(lambda: in_container(ns) == [c.pid])
        # the CLI killed -9: its children die with it (no monitor keeps them)
        p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL)
        assert settle(lambda: len(in_container(ns)) == 2)
        p.kill()
        p.wait()
        assert settle(lambda: in_container(ns) == [c.pid])
        # the container ends under an exec: the exec'd process goes with it (SIGKILL, 137)
        p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL)
        assert settle(lambda: len(in_container(ns)) == 2)
        os.kill(c.pid, signal.SIGKILL)
        assert p.wait(timeout=10) == 137
        assert settle(lambda: in_container(ns) == [])


def test_detach_runs_in_the_background_until_the_container_ends(store):
    with running(store, "bg") as c:
        ns = _ns(c.pid)
        t0 = time.monotonic()
        r = store("exec", "-d", "bg", "sh", "-c", "sleep 4; echo done > /tmp/d; exec sleep 100")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert time.monotonic() - t0 < 4                      # it did not wait for the command
        assert settle(lambda: store("exec", "bg", "cat", "/tmp/d").stdout == "done\n", timeout=15)
        assert len(in_container(ns)) == 2
    assert settle(lambda: in_container(ns) == [])                # gone with the container


# ---------------------------------------------------------------------------------------- isolation and rows
def test_chroot_container_is_entered_in_its_rootfs(store):
    cmd = ["sh", "-c", "echo chrooted > /tmp/marker; exec sleep 120"]
    with running(store, "chr", "--isolation", "chroot", cmd=cmd):
        assert _ps(store, "chr")["Isolation"] == "chroot"
        assert settle(lambda: store("exec", "chr", "cat", "/tmp/marker").stdout == "chrooted\n")
        assert store("exec", "-u", "app", "chr", "id", "-u").stdout == "1000\n"
        assert store("exec", "chr", "ls", "/").stdout == store("run", "--rm", store.bb, "ls", "/").stdout
        assert store("exec", "chr", "sh", "-c", "exit 5").returncode == 5


def _set_row(store, name, **fields):
    db = sqlite3.connect(store.root / "metadata.db")
    with db:
        db.execute(f"UPDATE container SET {', '.join(k + ' = ?' for k in fields)} WHERE name = ?",
                   [*fields.values(), name])
    db.close()


def test_row_pid_of_a_supervisor_is_followed_to_the_init(store):
    """A detached container's row may name its supervisor: exec finds the init below it."""
    with running(store, "sup") as c:
        _set_row(store, "sup", pid=c.proc.pid)           # the `container run` process, two levels up
        assert store("exec", "sup", "cat", "/proc/1/cmdline").stdout == "sleep\x00120\x00"


def test_a_recycled_pid_is_never_entered(store):
    with running(store, "old"):
        _set_row(store, "old", started="2001-01-01 00:00:00")   # the init started long after that
        r = store("exec", "old", "true")
        assert r.returncode == 1 and "is not running" in one_error(r)


# ---------------------------------------------------------------------------------------- side by side with podman
PODMAN_RUN = ["run", "-d", "--name", "pm", "--network", "none", "--ulimit", "nofile=1024:1024",
              "--ulimit", "nproc=1024:1024"]
SIDE_BY_SIDE = [
    [], ["-u", "app"], ["-u", "1000:1000"], ["-u", "app:staff"], ["-w", "/tmp"], ["-e", "X=1"],
]


@pytest.mark.slow
def test_same_as_podman(store, podman):
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    p = podman("pull", "-q", "--tls-verify=false", store.bb)
    if p.returncode != 0:
        pytest.skip(f"podman pull failed: {p.stderr.strip()[-200:]}")
    p = podman(*PODMAN_RUN, store.bb, "sleep", "120")
    if p.returncode != 0:
        pytest.skip(f"podman run does not work here: {p.stderr.strip()[-200:]}")
    try:
        cases = [(o, ["sh", "-c", "id -u; id -g; pwd; echo $HOME $X"]) for o in SIDE_BY_SIDE] + [
            ([], ["cat", "/proc/1/cmdline"]), ([], ["sh", "-c", "exit 7"]), ([], ["sh", "-c", "kill -TERM $$"]),
            ([], ["no-such-command"]), ([], ["/etc/passwd"]), ([], ["ls", "/sys/class/net"]),
            ([], ["tty"]), (["-t"], ["sh", "-c", "tty | cut -c1-9"]), (["-e", "PATH=/bin"], ["printenv", "PATH"]),
        ]
        with running(store, "ours", "--network", "none"):
            for opts, args in cases:
                ours = store("exec", *opts, "ours", *args)
                theirs = podman("exec", *opts, "pm", *args)
                assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), \
                    (opts, args, ours.stderr, theirs.stderr)
            # both refuse a container that is not running, and one that does not exist
            assert podman("exec", "nope", "true").returncode != 0 and store("exec", "nope", "true").returncode == 1
    finally:
        podman("rm", "-f", "-t", "0", "pm")


def test_exec_on_both_backends(db_cli, pushed):
    """The row exec reads (pid, started, config) as SQLite and PostgreSQL return it."""
    db_cli("pull", "-q", pushed["busybox"].ref, check=True)
    db_cli.bb = pushed["busybox"].ref
    with running(db_cli, "both", "-e", "WHERE=db"):
        r = db_cli("exec", "both", "sh", "-c", "echo $WHERE; cat /proc/1/cmdline")
        assert (r.returncode, r.stdout) == (0, "db\nsleep\x00120\x00"), r.stderr
    assert one_error(db_cli("exec", "both", "true")) == "Error: No such container: both"


# ---------------------------------------------------------------------------------------- detached containers
@contextlib.contextmanager
def detached(store, name, *opts, cmd=("sleep", "120")):
    """`container run -d`: a real supervisor, its row as the supervisor writes it."""
    r = store("run", "-d", "--name", name, *opts, store.bb, *cmd)
    assert r.returncode == 0, r.stderr
    try:
        yield r.stdout.strip()
    finally:
        store("rm", "-f", name)


def test_exec_into_a_detached_container(store):
    opts = ["--hostname", "dbox", "--network", "none", "-e", "FOO=bar", "-w", "/tmp", "-u", "app"]
    with detached(store, "det", *opts):
        doc = _ps(store, "det")
        assert doc["State"] == "running"
        assert store("exec", "det", "hostname").stdout == "dbox\n"
        assert store("exec", "det", "cat", "/proc/1/cmdline").stdout == "sleep\x00120\x00"
        assert store("exec", "det", "ls", "/").stdout == store("run", "--rm", store.bb, "ls", "/").stdout
        r = store("exec", "det", "sh", "-c", "id -u; pwd; echo $FOO $HOME; readlink /proc/1/ns/pid; readlink /proc/self/ns/pid")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:3] == ["1000", "/tmp", "bar /home/app"] and lines[3] == lines[4]
        assert lines[3] == os.readlink(f"/proc/{doc['Pid']}/ns/pid") != os.readlink("/proc/self/ns/pid")
        r = store("exec", "-u", "root", "-w", "/", "-e", "FOO=over", "det", "sh", "-c", "id -u; pwd; echo $FOO")
        assert (r.returncode, r.stdout) == (0, "0\n/\nover\n"), r.stderr
        assert store("exec", "det", "sh", "-c", "exit 7").returncode == 7
        assert store("exec", "det", "sh", "-c", "kill -TERM $$").returncode == 143
        assert store("exec", "det", "no-such-command").returncode == 127
        assert store("exec", "det", "/etc/passwd").returncode == 126
        r = store("exec", "-t", "det", "tty")
        assert r.returncode == 0 and r.stdout.startswith("/dev/pts/"), (r.stdout, r.stderr)
        r = store("exec", "-i", "det", "sh", "-c", "cat; echo end", input="piped\n")
        assert (r.returncode, r.stdout) == (0, "piped\nend\n")
        assert store("exec", "det", "sh", "-c", "echo kept > /tmp/f").returncode == 0
        assert in_container(_ns(doc["Pid"])) == [doc["Pid"]]          # nothing left behind
        # after a restart: the new init, the same files
        store("restart", "-t", "0", "det", check=True)
        new = _ps(store, "det")
        assert new["State"] == "running" and new["Pid"] != doc["Pid"]
        assert store("exec", "det", "cat", "/tmp/f").stdout == "kept\n"
        assert store("exec", "det", "cat", "/proc/1/cmdline").stdout == "sleep\x00120\x00"
    r = store("exec", "det", "true")
    assert r.returncode == 1 and one_error(r) == "Error: No such container: det"


def test_exec_into_a_stopped_detached_container_and_with_init_and_chroot(store):
    with detached(store, "stp"):
        store("stop", "-t", "0", "stp", check=True)
        r = store("exec", "stp", "true")
        assert r.returncode == 1 and one_error(r) == "Error: container stp is not running"
    with detached(store, "ini", "--init", "--hostname", "ibox"):
        assert store("exec", "ini", "hostname").stdout == "ibox\n"
        r = store("exec", "ini", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o pid,comm | grep -c sleep")
        assert r.returncode == 0 and r.stdout.splitlines()[1] == "1", (r.stdout, r.stderr)
        assert store("exec", "ini", "sh", "-c", "exit 4").returncode == 4
    with detached(store, "dch", "--isolation", "chroot", cmd=("sh", "-c", "echo c > /tmp/m; exec sleep 120")):
        assert settle(lambda: store("exec", "dch", "cat", "/tmp/m").stdout == "c\n")
        assert store("exec", "-u", "app", "-w", "/tmp", "dch", "sh", "-c", "id -u; pwd").stdout == "1000\n/tmp\n"
        assert store("exec", "dch", "sh", "-c", "exit 5").returncode == 5
