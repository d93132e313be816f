"""run -t: the container's terminal is a pty of its own devpts, /dev/pts/0, as docker's and podman's.

Its window size is the caller's and follows it, -it is interactive through it, the exit status
comes through, and the output is recorded for `logs`: by the foreground run's pump, and by the
supervisor of `run -d -t`. A chroot container (no devpts of its own) keeps the host's pty.
"""

import os
import sys

import pytest

from checks import pty_run
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="container run needs root on Linux"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, pushed):
    base = tmp_path_factory.mktemp("ttystore")
    root = base / "root"
    root.mkdir()
    c = ContainerCli(root, base)
    c("pull", "-q", pushed["busybox"].ref, check=True)
    c.bb = pushed["busybox"].ref
    return c


def argv(store, *args):
    return [str(store.exe), "--root", str(store.root), *args]


def test_run_t_is_the_containers_dev_pts_0(store):
    r = store("run", "--rm", "-t", store.bb, "tty")
    assert (r.returncode, r.stdout) == (0, "/dev/pts/0\n"), r.stderr
    # the process's stdio is that pty, which the container's own /dev/pts lists
    r = store("run", "--rm", "-t", store.bb, "sh", "-c",
              "for n in 0 1 2; do readlink /proc/self/fd/$n; done; ls /dev/pts")
    assert r.stdout.replace("\r", "").split() == ["/dev/pts/0"] * 3 + ["0", "ptmx"], r.stdout
    r = store("run", "--rm", store.bb, "tty")
    assert (r.returncode, r.stdout) == (1, "not a tty\n")
    r = store("run", "--rm", "-t", "--init", store.bb, "tty")
    assert (r.returncode, r.stdout) == (0, "/dev/pts/0\n"), r.stderr


def test_exit_status_and_user_through_the_pty(store):
    assert store("run", "--rm", "-t", store.bb, "sh", "-c", "exit 7").returncode == 7
    assert store("run", "--rm", "-t", "--init", store.bb, "sh", "-c", "kill -TERM $$").returncode == 143
    r = store("run", "--rm", "-t", "-u", "1000:1000", store.bb, "sh", "-c", "tty; stat -c %u /dev/pts/0")
    assert (r.returncode, r.stdout) == (0, "/dev/pts/0\n1000\n"), r.stderr
    r = store("run", "--rm", "-t", store.bb, "no-such-command")
    assert r.returncode == 127 and "no-such-command" in r.stderr


def test_window_size_is_the_callers_and_follows_it(store):
    code, out = pty_run(argv(store, "run", "--rm", "-t", store.bb, "sh", "-c", "stty size"), store.env, [])
    assert (code, out.split()) == (0, ["33", "101"]), out
    # -it: typed input reaches the shell; a resize of our terminal reaches the container's pty
    code, out = pty_run(argv(store, "run", "--rm", "-it", store.bb, "sh"), store.env,
                        [(b"# ", b"stty size; tty; echo $((6*7))\n"), (b"42", (40, 120)),
                         (b"42", b"stty size; exit 3\n")])
    assert code == 3, out
    assert "33 101" in out and "/dev/pts/0" in out and "40 120" in out, out


def test_it_reads_what_is_typed_until_eof(store):
    # typed before the container is up: kept for it, not flushed by the switch to raw mode
    code, out = pty_run(argv(store, "run", "--rm", "-it", store.bb, "sh", "-c", "read x; echo got-$x"),
                        store.env, [(b"", b"hello\n")])
    assert code == 0 and "got-hello" in out, out
    # ^D on an empty line: the container's cat sees the end of its input
    code, out = pty_run(argv(store, "run", "--rm", "-it", store.bb, "sh", "-c", "echo ready; cat; echo end"),
                        store.env, [(b"ready", b"abc\n"), (b"abc\r\nabc\r\n", b"\x04")])
    assert code == 0 and out.replace("\r", "").endswith("abc\nabc\nend\n"), out


def test_foreground_and_detached_t_are_recorded_for_logs(store):
    r = store("run", "--name", "fg", "-t", store.bb, "sh", "-c", "tty; echo fg-done")
    assert (r.returncode, r.stdout) == (0, "/dev/pts/0\nfg-done\n"), r.stderr
    assert store("logs", "fg").stdout == "/dev/pts/0\nfg-done\n"
    r = store("run", "-d", "-t", "--name", "bg", store.bb, "sh", "-c", "tty; stty size; echo bg-done")
    assert r.returncode == 0, r.stderr
    assert store("wait", "bg", timeout=60).stdout == "0\n"
    out = store("logs", "bg").stdout
    assert out.startswith("/dev/pts/0\n") and out.endswith("bg-done\n"), out
    # started again, the same container gets a new pty of its new devpts
    assert store("start", "bg").returncode == 0
    assert store("wait", "bg", timeout=60).stdout == "0\n"
    assert store("logs", "bg").stdout.count("/dev/pts/0\n") == 2
    store("rm", "-f", "fg", "bg")


def test_chroot_keeps_a_pty_of_the_host(store):
    r = store("run", "--rm", "-t", "--isolation", "chroot", store.bb, "sh", "-c",
              "test -t 0 && test -t 1 && echo tty; exit 4")
    assert (r.returncode, r.stdout) == (4, "tty\n"), r.stderr
    code, out = pty_run(argv(store, "run", "--rm", "-t", "--isolation", "chroot", store.bb, "stty", "size"),
                        store.env, [])
    assert (code, out.split()) == (0, ["33", "101"]), out


@pytest.mark.slow
def test_same_as_podman(store, podman):
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    p = podman("pull", "-q", "--tls-verify=false", store.bb)
    if p.returncode != 0:
        pytest.skip(f"podman pull failed: {p.stderr.strip()[-200:]}")
    cases = [["tty"], ["sh", "-c", "ls /dev/pts; readlink /proc/self/fd/1; stat -c '%u %g %a' /dev/pts/0"],
             ["sh", "-c", "exit 5"]]
    for args in cases:
        for opts in (["-t"], ["-t", "-u", "1000:1000"]):
            ours = store("run", "--rm", *opts, store.bb, *args)
            theirs = podman("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                            "--ulimit", "nproc=1024:1024", *opts, store.bb, *args)
            if theirs.returncode == 125:
                pytest.skip(f"podman run does not work here: {theirs.stderr.strip()[-200:]}")
            assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), \
                (opts, args, ours.stderr, theirs.stderr)
