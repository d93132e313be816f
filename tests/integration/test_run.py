"""container run / ps / rm against real images pulled from the loopback registry.

Needs root (mounts, namespaces). One store per module: the images are pulled once and every
test runs containers in it (tests that need an empty store use their own `cli`).
"""

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checks import json_lines
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="container run needs root on Linux"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, pushed):
    base = tmp_path_factory.mktemp("runstore")
    root = base / "root"
    root.mkdir()
    c = ContainerCli(root, base)
    for key in ("busybox", "layered"):
        c("pull", "-q", pushed[key].ref, check=True)
    c.bb = pushed["busybox"].ref
    c.layered = pushed["layered"].ref
    return c


def run(store, *args, **kw):
    return store("run", "--rm", *args, **kw)


def containers_dir(store) -> Path:
    return store.root / "containers"


def leftovers(store) -> list[str]:
    d = containers_dir(store)
    return sorted(os.listdir(d)) if d.exists() else []


# ---------------------------------------------------------------------------------------- basics
def test_echo(store):
    r = run(store, store.bb, "echo", "Hello Container!")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello Container!\n"
    assert r.stderr == ""


def test_default_cmd_and_env(store):
    r = run(store, store.bb, "env")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"
    assert len(env["HOSTNAME"]) == 12
    # docker's order: PATH, HOSTNAME, image env, then HOME added
    assert r.stdout.splitlines()[0].startswith("PATH=")
    assert r.stdout.splitlines()[1].startswith("HOSTNAME=")


def test_pwd_ls(store):
    r = run(store, store.bb, "pwd")
    assert r.stdout == "/\n"
    r = run(store, store.bb, "ls", "/")
    assert "bin" in r.stdout.split() and "etc" in r.stdout.split() and "proc" in r.stdout.split()


def test_exit_codes(store):
    assert run(store, store.bb, "true").returncode == 0
    assert run(store, store.bb, "false").returncode == 1
    assert run(store, store.bb, "sh", "-c", "exit 42").returncode == 42
    r = run(store, store.bb, "no-such-command")
    assert r.returncode == 127
    assert "no-such-command" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run(store, store.bb, "/etc/passwd")
    assert r.returncode == 126, r.stderr
    assert "permission denied" in r.stderr
    r = run(store, store.bb, "/no/such/file")
    assert r.returncode == 127
    assert leftovers(store) == []


def test_killed_by_signal_is_128_plus_n(store):
    # the process kills itself with a signal it does not handle... as PID 1 the kernel ignores
    # that, so run it as a child of sh: sh reports 128+n, which becomes our exit status
    r = run(store, store.bb, "sh", "-c", "sh -c 'kill -TERM $$'; exit $?")
    assert r.returncode == 143


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_forwarded(store, sig, code):
    argv = [str(store.exe), "--root", str(store.root), "run", "--rm", store.bb, "sleep", "30"]
    p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    # wait until the container is running (a row in status running)
    while time.monotonic() < deadline:
        ps = store("ps", "-q")
        if ps.stdout.strip():
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("container did not start")
    t = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=15)
    assert p.returncode == code, err
    assert time.monotonic() - t < 5
    assert leftovers(store) == []


def test_trapped_signal_is_handled_by_the_container(store):
    argv = [str(store.exe), "--root", str(store.root), "run", "--rm", store.bb, "sh", "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"]
    p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    assert p.returncode == 7, err
    assert "got-term" in out


# ---------------------------------------------------------------------------------------- docker's process rules
def test_layered_entrypoint_cmd_user_workdir_env(store):
    r = run(store, store.layered)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "entry: echo hello from layered\nhello from layered\n"
    r = run(store, store.layered, "sh", "-c", 'id; pwd; echo "$LAYERED|$EMPTY|$WITH_EQUALS|$SPACES|$HOME"')
    lines = r.stdout.splitlines()
    assert lines[0] == "entry: sh -c " + 'id; pwd; echo "$LAYERED|$EMPTY|$WITH_EQUALS|$SPACES|$HOME"'
    assert lines[1] == "uid=1000(app) gid=1000(app) groups=10(wheel),50(staff),1000(app)"
    assert lines[2] == "/home/app"
    assert lines[3] == "yes||a=b=c|two words|/home/app"


def test_entrypoint_override_clears_cmd(store):
    r = run(store, "--entrypoint", "echo", store.layered)
    assert r.stdout == "\n"          # docker: --entrypoint clears the image's Cmd
    r = run(store, "--entrypoint", "echo", store.layered, "a", "b")
    assert r.stdout == "a b\n"
    r = run(store, "--entrypoint", "", store.layered)       # "" resets the entrypoint only
    assert r.stdout == "hello from layered\n"


def test_env_override_and_files(store, tmp_path):
    ef = tmp_path / "env.list"
    ef.write_text("# comment\nFROM_FILE=1\nLAYERED=from-file\n\nPASSED\n")
    r = run(store, "--env-file", str(ef), "-e", "LAYERED=from-e", "-e", "NEW=x", "-e", "PASSED2",
            "-e", "UNSET_IN_CALLER", store.layered, "env", env={"PASSED": "p1", "PASSED2": "p2"})
    env = dict(line.split("=", 1) for line in r.stdout.splitlines()[1:])
    assert env["LAYERED"] == "from-e"
    assert env["FROM_FILE"] == "1" and env["NEW"] == "x"
    assert env["PASSED"] == "p1" and env["PASSED2"] == "p2"
    assert "UNSET_IN_CALLER" not in env
    r = run(store, "-e", "PATH=/bin", "-e", "HOME=/elsewhere", store.bb, "env")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["PATH"] == "/bin" and env["HOME"] == "/elsewhere"
    r = run(store, "--env-file", "/dev/zero", store.bb, "true")          # endless: bounded, one line
    assert r.returncode == 125 and r.stderr.strip() == "Error: env file /dev/zero is larger than 16 MiB"


def test_user_forms(store):
    assert run(store, store.bb, "id").stdout == "uid=0(root) gid=0(root) groups=10(wheel)\n"
    assert run(store, "-u", "root", store.bb, "id").stdout == "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    assert run(store, "-u", "1000:1000", store.bb, "id").stdout == \
        "uid=1000(app) gid=1000(app) groups=1000(app)\n"
    assert run(store, "-u", "app", store.bb, "id").stdout == \
        "uid=1000(app) gid=1000(app) groups=10(wheel),50(staff),1000(app)\n"
    assert run(store, "-u", "app:staff", store.bb, "id").stdout == \
        "uid=1000(app) gid=50(staff) groups=50(staff)\n"
    assert run(store, "-u", "4242", store.bb, "sh", "-c", "id; echo $HOME").stdout == \
        "uid=4242 gid=0(root) groups=0(root)\n/\n"
    assert run(store, "-u", "root", store.layered, "id", "-u").stdout.splitlines()[-1] == "0"
    r = run(store, "-u", "nosuchuser", store.bb, "id")
    assert r.returncode == 125
    assert r.stderr.strip() == "Error: unable to find user nosuchuser: no matching entries in passwd file"
    r = run(store, "-u", "app:nosuchgroup", store.bb, "id")
    assert r.returncode == 125 and "unable to find group nosuchgroup" in r.stderr
    assert leftovers(store) == []


def test_workdir(store):
    assert run(store, "-w", "/new/dir", store.bb, "pwd").stdout == "/new/dir\n"
    r = run(store, "-w", "/etc/passwd", store.bb, "pwd")
    assert r.returncode == 125 and r.stderr.count("\n") == 1
    r = run(store, "-w", "relative", store.bb, "pwd")
    assert r.returncode == 125 and "absolute" in r.stderr
    assert leftovers(store) == []


def test_hostname_and_proc(store):
    r = run(store, "--hostname", "box1", store.bb, "sh", "-c", "hostname; cat /etc/hostname")
    assert r.stdout.split() == ["box1", "box1"]
    r = run(store, store.bb, "cat", "/etc/resolv.conf", "/etc/hosts")
    host = b""
    for f in ("/etc/resolv.conf", "/etc/hosts"):
        if os.path.exists(f):
            host += Path(f).read_bytes()
    assert r.stdout.encode() == host        # host network: the host's files, as docker does
    r = run(store, "--network", "none", "--hostname", "box2", store.bb, "cat", "/etc/hosts")
    assert "localhost" in r.stdout and "box2" in r.stdout
    # PID namespace: only the container's processes; the command is PID 1
    r = run(store, store.bb, "sh", "-c", "ls /proc | grep -E '^[0-9]+$' | sort -n | head -1; echo $$")
    assert r.stdout.split() == ["1", "1"]
    r = run(store, store.bb, "ps")
    pids = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert pids[0] == "1" and len(pids) <= 2


def test_dev_and_sys(store):
    r = run(store, store.bb, "sh", "-c",
            "ls /dev; echo x > /dev/null; head -c 4 /dev/zero | wc -c; touch /sys/x 2>&1; true")
    names = r.stdout.split()
    for n in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"):
        assert n in names
    assert "4" in names
    assert "Read-only file system" in r.stdout


def test_read_only(store):
    r = run(store, "--read-only", store.bb, "sh", "-c", "touch /x; echo rc=$?; touch /dev/shm/ok && echo shm-ok")
    assert "Read-only file system" in r.stdout + r.stderr
    assert "rc=1" in r.stdout and "shm-ok" in r.stdout


def test_network_none(store):
    r = run(store, "--network", "none", store.bb, "ls", "/sys/class/net")
    assert r.stdout.split() == ["lo"]
    r = run(store, "--network", "none", store.bb, "cat", "/proc/net/dev")
    ifaces = [line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]]
    assert ifaces == ["lo"]


def test_stdin_without_i_is_empty_and_with_i_passes(store):
    r = run(store, store.bb, "cat", input="hello\n")
    assert r.stdout == ""
    r = run(store, "-i", store.bb, "cat", input="hello\n")
    assert r.stdout == "hello\n"


def test_tty(store):
    r = run(store, "-t", store.bb, "sh", "-c", "test -t 0 && test -t 1 && echo tty; echo $TERM")
    assert r.stdout.replace("\r", "") == "tty\nxterm\n"


def test_chroot_isolation(store):
    r = run(store, "--isolation", "chroot", store.bb, "sh", "-c", "echo hi; id -u")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n0\n"
    assert leftovers(store) == []


# ---------------------------------------------------------------------------------------- lifecycle
def test_ps_rm_inspect(store):
    r = store("run", "--name", "keeper", store.bb, "sh", "-c", "exit 3")
    assert r.returncode == 3
    ps = store("ps", "-a", "--format", "json")
    import json

    rows = [c for c in json_lines(ps.stdout) if c["Names"] == "keeper"]
    assert len(rows) == 1 and rows[0]["State"] == "exited" and rows[0]["ExitCode"] == 3
    assert rows[0]["RootfsMode"] in ("overlay", "copy") and rows[0]["Isolation"] == "namespaces"
    cid = rows[0]["FullID"]
    assert store("ps", "-q").stdout.strip() == ""            # not running
    assert cid[:12] in store("ps", "-a", "-q").stdout.split()
    table = store("ps", "-a").stdout
    assert "Exited (3)" in table and "keeper" in table
    assert (containers_dir(store) / cid).is_dir()
    r = store("run", "--name", "keeper", store.bb, "true")
    assert r.returncode == 125 and "already in use" in r.stderr
    insp = store("inspect", "keeper")
    assert insp.returncode == 0, insp.stderr
    [doc] = json.loads(insp.stdout)
    assert doc["Id"] == cid and doc["Name"] == "/keeper"
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 3
    assert doc["Path"] == "sh" and doc["Args"] == ["-c", "exit 3"]
    r = store("rm", "keeper")
    assert r.returncode == 0 and r.stdout.strip() == "keeper"
    assert not (containers_dir(store) / cid).exists()
    r = store("rm", "keeper")
    assert r.returncode == 1 and "No such container" in r.stderr


def test_rm_running_needs_force(store):
    argv = [str(store.exe), "--root", str(store.root), "run", "--name", "sleeper", store.bb, "sleep", "30"]
    p = subprocess.Popen(argv, env=store.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while "sleeper" not in store("ps").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = store("rm", "sleeper")
        assert r.returncode == 1 and "running" in r.stderr
        r = store("rm", "-f", "sleeper")
        assert r.returncode == 0, r.stderr
        p.wait(timeout=15)
        assert p.returncode == 137
        assert "sleeper" not in store("ps", "-a").stdout
    finally:
        if p.poll() is None:
            p.kill()
    assert leftovers(store) == []


def test_bad_input_leaves_nothing(cli, pushed, tmp_path):
    cli("pull", "-q", pushed["busybox"].ref, check=True)
    bb = pushed["busybox"].ref
    cases = [
        (["run", "--rm", "--pull", "never", "127.0.0.1:1/no/such:image", "true"], 125),
        (["run", "--rm", f"{pushed['busybox'].host}/no/such:image", "true"], 125),   # the pull fails
        (["run", "--env-file", str(tmp_path / "missing.env"), bb, "true"], 125),
        (["run", bb, "no-such-command"], 127),
        (["run", bb, "/etc"], 126),
        (["run", "-u", "ghost", bb, "true"], 125),
        (["run", "-w", "/etc/passwd/x", bb, "true"], 125),
        (["run", "--isolation", "bogus", bb, "true"], 125),
    ]
    for args, code in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert "Traceback" not in r.stderr and lines[-1].startswith("Error: "), r.stderr
        assert len([x for x in lines if not x.startswith("Unable to find image")]) == 1, r.stderr
        assert leftovers(cli) == [], args
        assert cli("ps", "-a", "-q").stdout.strip() == "", args


def test_run_pulls_missing_image(cli, pushed):
    r = cli("run", "--rm", pushed["busybox"].ref, "echo", "pulled")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("pulled\n")
    assert "Unable to find image" in r.stderr


# ---------------------------------------------------------------------------------------- invariant 5
def _tree_state(top: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            h = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                h = os.readlink(p)
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                                            st.st_mtime_ns, st.st_ctime_ns, st.st_ino, h)
    return out


@pytest.mark.parametrize("isolation,rootfs", [("namespaces", "overlay"), ("namespaces", "copy"),
                                              ("chroot", "copy")])
def test_never_writes_through_shared_trees(store, isolation, rootfs):
    assert run(store, store.bb, "true").returncode == 0        # the snapshot exists from here on
    before = {d: _tree_state(store.root / d) for d in ("layers", "snapshots")}
    assert before["layers"] and before["snapshots"]
    script = ("echo pwned >> /bin/busybox; "           # append to a file hardlinked into layers/
              "echo root2:x:0:0::/:/bin/sh >> /etc/passwd; "
              ": > /etc/group; "                        # truncate
              "chmod 777 /etc/passwd; chown 1000:1000 /bin/sh /etc/passwd; "
              "rm -f /bin/ls; rm -rf /usr; mkdir /newdir; touch -d 2001-01-01 /etc/hostname /bin/cat; "
              "ln /bin/cat /hl; echo done")
    r = store("run", "--name", "writer", "--isolation", isolation, store.bb, "/bin/busybox", "sh", "-c", script,
              env={"CONTAINER_ROOTFS": rootfs})
    assert r.returncode == 0, r.stderr

    doc = [c for c in json_lines(store("ps", "-a", "--format", "json").stdout) if c["Names"] == "writer"][0]
    assert (doc["Isolation"], doc["RootfsMode"]) == (isolation, rootfs)
    assert store("rm", "writer").returncode == 0
    assert r.stdout.strip().endswith("done")
    after = {d: _tree_state(store.root / d) for d in ("layers", "snapshots")}
    assert after == before
    # and a new container sees the pristine image
    r = run(store, store.bb, "sh", "-c", "grep -c root2 /etc/passwd; ls /bin/ls")
    assert r.stdout.split() == ["0", "/bin/ls"]


# ---------------------------------------------------------------------------------------- the sqlite3 fast path
def test_fast_path_sql_matches_the_models():
    """schema/lite.py names every table and column run's fast path uses: they must be the models'
    (a migration that renames, adds or drops one fails here), and the container row it writes
    is the whole row (a new column has no SQL default: peewee's defaults live in Python)."""
    from container.schema import ALL_MODELS, lite

    tables = {m._meta.table_name: {f.column_name for f in m._meta.sorted_fields} for m in ALL_MODELS}
    for table, cols in lite.TABLES.items():
        assert set(cols) <= tables[table], (table, set(cols) - tables[table])
    assert set(lite.CONTAINER_COLUMNS) == tables["container"]


def test_fast_path_imports_no_orm(store):
    """The fast path (a tagged image, its snapshot built) runs without peewee, hashlib, dataclasses
    or shutil: importing them is most of `container run`'s time. With --root, and with the default
    root ($CONTAINER_ROOT: engine.store.default_root())."""
    assert run(store, store.bb, "true").returncode == 0      # (the first run builds the snapshot)
    heavy = ("peewee", "hashlib", "dataclasses", "shutil", "typer")
    for where, env in (["--root", str(store.root)], {}), ([], {"CONTAINER_ROOT": str(store.root)}):
        code = ("import sys\n"
                "from container.cli.containers import fast_main\n"
                f"rc = fast_main({where + ['run', '--rm', store.bb, 'true']!r})\n"
                f"print(rc, sorted(m for m in {heavy!r} if m in sys.modules))\n")
        r = subprocess.run([sys.executable, "-c", code], env={**store.env, **env}, capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert r.stdout == "0 []\n", (where, r.stderr)


def test_fast_path_runs_on_the_stdlib_alone(store, tmp_path):
    """The fast path as a regular install runs it (`python -S`: no site, so nothing a .pth file
    imports and no site-packages: peewee, typer... cannot even be found), and what it imports
    stays off the costly modules: ctypes' package, functools/collections (which _sqlite3's own init
    would import), re, enum, json, datetime, pathlib, typing, dataclasses."""
    assert run(store, store.bb, "true").returncode == 0      # (the snapshot is built)
    src = Path(__file__).resolve().parents[2]
    pkg = tmp_path / "site" / "container"                     # the installed layout: container.cas...
    pkg.mkdir(parents=True)
    for sub in ("cas", "cli", "engine", "schema"):
        (pkg / sub).symlink_to(src / sub)
    heavy = ("ctypes", "functools", "collections", "re", "enum", "json", "datetime", "pathlib", "typing",
             "dataclasses", "types", "struct", "peewee", "hashlib", "shutil", "typer")
    code = ("import sys\n"
            f"sys.path.insert(0, {str(pkg.parent)!r})\n"
            "from container.cli.containers import fast_main\n"
            f"rc = fast_main(['--root', {str(store.root)!r}, 'run', '--rm', {store.bb!r}, 'sh', '-c', 'exit 3'])\n"
            f"print(rc, sorted(m for m in {heavy!r} if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-S", "-c", code], env=store.env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.stdout == "3 []\n", r.stderr
    assert leftovers(store) == []


def test_fast_path_sqlite_without_functools():
    """schema/lite's _sqlite3 (imported without functools): its connections' statement cache works
    past its size, and a later `import functools` is the real one."""
    src = Path(__file__).resolve().parents[2]
    code = ("import sys, types\n"
            "sys.modules['container'] = types.ModuleType('container')\n"
            f"sys.modules['container'].__path__ = [{str(src)!r}]\n"
            "from container.schema import lite\n"
            "assert 'functools' not in sys.modules, sorted(sys.modules)\n"
            "c = lite.sqlite3.connect(':memory:', cached_statements=4)\n"
            "c.execute('CREATE TABLE t (a)')\n"
            "for i in range(20):\n"
            "    c.execute(f'INSERT INTO t VALUES ({i % 7})')\n"
            "    c.execute('INSERT INTO t VALUES (?)', (i,))\n"
            "assert c.execute('SELECT count(*), sum(a) FROM t').fetchone() == (40, 57 + 190)\n"
            "import functools\n"
            "assert functools.lru_cache.__module__ == 'functools' and hasattr(functools, 'partial')\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "ok\n", r.stderr


def test_fast_and_orm_paths_write_the_same_rows(store):
    import sqlite3

    image_id = json_lines(store("images", "--format", "json").stdout)
    bb_id = [i for i in image_id if i["Repository"].endswith("busybox")][0]["ImageID"]
    # by tag: the sqlite3 fast path; by image id: the ORM path (ids are not served by the fast path)
    for name, ref in (("via-fast", store.bb), ("via-orm", bb_id)):
        r = store("run", "--name", name, ref, "echo", name, env={"CONTAINER_TRACE": "1"})
        assert r.returncode == 0 and r.stdout == name + "\n", r.stderr
    db = sqlite3.connect(store.root / "metadata.db")
    db.row_factory = sqlite3.Row
    rows = {r["name"]: dict(r) for r in db.execute("SELECT * FROM container WHERE name LIKE 'via-%'")}
    a, b = rows["via-fast"], rows["via-orm"]
    for k in ("image_id", "chain_id", "isolation", "rootfs_mode", "status", "exit_code"):
        assert a[k] == b[k], k
    for k in ("created", "started", "finished"):
        assert len(a[k]) == len(b[k]) == 26 and a[k][10] == b[k][10] == " ", (a[k], b[k])
    ps = {c["Names"]: c for c in json_lines(store("ps", "-a", "--format", "json").stdout)}
    assert ps["via-fast"]["State"] == ps["via-orm"]["State"] == "exited"
    assert store("rm", "via-fast", "via-orm").returncode == 0
    assert leftovers(store) == []


REF_SAMPLES = [
    "busybox", "busybox:latest", "busybox:1.36.1", "library/busybox", "docker.io/library/busybox:1",
    "docker.io/busybox", "index.docker.io/library/busybox", "user/app", "user/app:v1", "localhost/app",
    "localhost:5000/app:tag", "127.0.0.1:5055/test/busybox:latest", "registry.example.com/a/b/c:x_y",
    "a__b/c--d:e", "ghcr.io/o/r", "host:5000/x", "x.y/z", "quay.io/a.b/c-d_e:1.0-rc.1",
    # not taken by the fast path (or invalid): they must go to the full parser
    "Busybox", "busybox@sha256:" + "a" * 64, "a" * 64, "[::1]:5000/x", "busybox:", ":tag", "a//b",
    "UPPER.example.com/x", "-x", "x/", "busybox:" + "t" * 129, "a" * 300,
]


def test_fast_reference_agrees_with_the_parser():
    from hypothesis import given, settings, strategies as st

    from container.engine.runtime.fast import fast_reference
    from container.engine.errors import InvalidReference
    from container.engine.image.reference import parse

    def check(s):
        fast = fast_reference(s)
        if fast is None:
            return False
        ref = parse(s)                         # must not raise when the fast path accepts
        assert (ref.repository, ref.tag) == fast, s
        assert ref.digest is None
        return True

    taken = [s for s in REF_SAMPLES if check(s)]
    assert taken == REF_SAMPLES[:REF_SAMPLES.index("Busybox")]

    @settings(max_examples=3000, deadline=None)
    @given(st.text(alphabet="abcAB019._-/:@[]x", min_size=1, max_size=40))
    def fuzz(s):
        try:
            check(s)
        except InvalidReference:
            raise AssertionError(f"fast path accepted {s!r}, the parser rejects it")

    fuzz()


@pytest.mark.slow
def test_debian_stand_in_demo(debian_image, cli):
    """The issue's demo line for the distribution image (here the debootstrap stand-in)."""
    cli("pull", "-q", debian_image.ref, check=True)
    r = cli("run", "--rm", debian_image.ref, "/bin/sh", "-c", "ls -la /")
    assert r.returncode == 0, r.stderr
    assert " etc" in r.stdout and " usr" in r.stdout and "bin -> usr/bin" in r.stdout
    names = set(cli("run", "--rm", debian_image.ref, "ls", "-1", "/").stdout.split())
    assert {"bin", "etc", "usr", "var", "proc", "dev", "sys", "tmp"} <= names
    r = cli("run", "--rm", "-u", "nobody", "-w", "/tmp/x", debian_image.ref, "bash", "-c", "id -un; pwd; echo $HOME")
    assert r.stdout.split() == ["nobody", "/tmp/x", "/nonexistent"], r.stderr
    assert leftovers(cli) == []


def test_concurrent_runs(store):
    """Parallel runs share the store (shared lock, WAL, busy timeout): all succeed, names are
    unique, and a name asked for twice at once goes to exactly one of them."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return store("run", "--rm", store.bb, "sh", "-c", f"echo {i}")

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(16)))
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results]
    assert sorted(int(r.stdout) for r in results) == list(range(16))

    def named(_):
        return store("run", "--name", "twin", store.bb, "true")

    with ThreadPoolExecutor(2) as ex:
        a, b = ex.map(named, range(2))
    assert sorted([a.returncode, b.returncode]) == [0, 125], (a.stderr, b.stderr)
    assert "already in use" in (a.stderr + b.stderr)
    assert store("rm", "twin").returncode == 0
    assert leftovers(store) == []


FAST_PARSER_CASES = [
    ["run", "busybox"],
    ["run", "--rm", "-it", "busybox", "sh", "-c", "echo hi"],
    ["run", "-e", "A=1", "-eB=2", "--env", "C", "--env=D=4", "--env-file", "f1", "--env-file=f2", "img", "env"],
    ["run", "--name=x", "--network", "none", "-u", "1000:1000", "-w", "/w", "--entrypoint", "", "img", "--rm"],
    ["run", "-ti", "--read-only", "--pull", "never", "--isolation", "chroot", "img", "--", "-x"],
    ["run", "-ite", "K=V", "img"],
    ["--root", "/r", "-v", "run", "img", "ls", "-la"],
    ["run", "--hostname", "h", "--platform", "linux/amd64", "--net=host", "--workdir=/a", "--user=app", "img"],
    ["run", "--", "img", "-e", "x"],
]


@pytest.mark.parametrize("argv", FAST_PARSER_CASES, ids=lambda a: " ".join(a)[:40])
def test_fast_parser_matches_typer(argv, monkeypatch):
    """`container run` parsed without typer gives exactly what typer/click gives."""
    from typer.testing import CliRunner

    import container.cli.containers as cc
    from container.cli.app import app
    from container.engine.runtime.options import RunOptions

    seen = {}

    def fake_do_run(kw, engine):
        seen["kw"] = kw
        return 0

    monkeypatch.setattr(cc, "do_run", fake_do_run)
    g, kw = cc.parse_run(argv)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    clean = lambda d: RunOptions(**{k: v for k, v in d.items() if v is not None})  # noqa: E731
    assert clean(kw) == clean(seen["kw"])


@pytest.mark.parametrize("argv", [["run"], ["run", "--rm"], ["run", "--help"], ["run", "--bogus", "img"],
                                  ["run", "--rm=true", "img"], ["run", "-x", "img"], ["--version", "run", "img"],
                                  ["run", "--name"], ["ps", "run"]])
def test_fast_parser_hands_the_rest_to_typer(argv):
    import container.cli.containers as cc

    with pytest.raises(cc.TyperFallback):
        cc.parse_run(argv)


# ---------------------------------------------------------------------------------------- side by side with podman
PODMAN = ["podman", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
          "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="module")
def podman_images(store, pushed):
    import shutil

    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    refs = {}
    for key in ("busybox", "layered"):
        ref = pushed[key].ref
        p = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", ref], capture_output=True, text=True,
                           timeout=300)
        if p.returncode != 0:
            pytest.skip(f"podman pull failed: {p.stderr.strip()[-200:]}")
        refs[key] = ref
    probe = subprocess.run(PODMAN + [refs["busybox"], "true"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"podman run does not work here: {probe.stderr.strip()[-200:]}")
    yield refs
    subprocess.run(["podman", "rmi", "-f", *refs.values()], capture_output=True, timeout=120)


def _env_lines(out: str) -> list[str]:
    # HOSTNAME is per container; podman adds container=podman, and TERM=xterm even without -t
    # (docker sets TERM only with -t, as we do)
    return sorted(x for x in out.splitlines() if not x.startswith(("HOSTNAME=", "container=", "TERM=")))


SIDE_BY_SIDE = [
    ("layered", [], [], None),
    ("layered", [], ["sh", "-c", "id; pwd; echo $HOME"], None),
    ("layered", [], ["env"], _env_lines),
    ("layered", ["--entrypoint", "echo"], [], None),
    ("layered", ["--entrypoint", "echo"], ["a", "b"], None),
    ("layered", ["-u", "root", "-w", "/data"], ["sh", "-c", "id; pwd; echo $HOME"], None),
    ("layered", ["-e", "LAYERED=override", "-e", "NEW=1"], ["env"], _env_lines),
    ("busybox", [], ["id"], None),
    ("busybox", [], ["env"], _env_lines),
    ("busybox", ["-u", "root"], ["id"], None),
    ("busybox", ["-u", "app"], ["sh", "-c", "id; echo $HOME"], None),
    ("busybox", ["-u", "app:staff"], ["id"], None),
    ("busybox", ["-u", "1000:1000"], ["id"], None),
    ("busybox", ["-u", "nobody"], ["sh", "-c", "id; echo $HOME"], None),
    ("busybox", ["-u", "0:10"], ["id"], None),
    # (not compared: -w DIR missing from the image: docker and we create it, podman refuses)
    ("busybox", [], ["sh", "-c", "exit 7"], None),
    ("busybox", [], ["sh", "-c", "echo $$; cat /proc/1/cmdline; echo; hostname | wc -c"], None),
    ("busybox", ["--hostname", "box"], ["hostname"], None),
    ("busybox", [], ["/etc/passwd"], lambda s: s),
    ("busybox", [], ["no-such-command"], lambda s: s),
    # (--read-only: podman also mounts tmpfs on /tmp, /var/tmp, /run; docker and we do not)
    ("busybox", ["--read-only"], ["sh", "-c", "touch /x 2>/dev/null; echo $?; touch /dev/shm/y; echo $?"], None),
    ("busybox", [], ["ls", "/sys/class/net"], None),
]


@pytest.mark.parametrize("image,opts,args,norm", SIDE_BY_SIDE,
                         ids=[" ".join([i] + o + a)[:50] for i, o, a, _ in SIDE_BY_SIDE])
def test_same_as_podman(store, podman_images, image, opts, args, norm):
    ref = podman_images[image]
    ours = store("run", "--rm", "--network", "none", *opts, ref, *args)
    theirs = subprocess.run(PODMAN + opts + [ref] + args, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    norm = norm or (lambda s: s)
    assert (ours.returncode, norm(ours.stdout)) == (theirs.returncode, norm(theirs.stdout)), \
        (ours.stderr, theirs.stderr)


def test_auto_falls_back_to_chroot_without_namespaces(store):
    """Where unshare() is refused (here: CAP_SYS_ADMIN dropped from the bounding set, as in a
    locked-down container), --isolation auto runs with chroot on a private copy."""
    import shutil

    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    nocap = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"]

    def run_nocap(*args):
        argv = nocap + [str(store.exe), "--root", str(store.root), *args]
        return subprocess.run(argv, env=store.env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    r = run_nocap("run", "--name", "fallback", store.bb, "sh", "-c", "echo hi; id -u")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n0\n"
    doc = [c for c in json_lines(store("ps", "-a", "--format", "json").stdout) if c["Names"] == "fallback"][0]
    assert (doc["Isolation"], doc["RootfsMode"]) == ("chroot", "copy")
    assert store("rm", "fallback").returncode == 0
    r = run_nocap("run", "--rm", "--isolation", "namespaces", store.bb, "true")
    assert r.returncode == 125 and "cannot create namespaces" in r.stderr
    assert leftovers(store) == []


def test_env_file_from_stdin_is_read_once_on_the_orm_path(cli, store, pushed):
    """`run` chooses its path before it reads any input: an --env-file /dev/stdin reaches the
    container on the paths the sqlite3 fast path does not serve (a pull first; an image id)."""

    r = cli("run", "--rm", "--env-file", "/dev/stdin", pushed["busybox"].ref, "env", input="FROM_STDIN=pulled\n")
    assert r.returncode == 0, r.stderr
    assert "Unable to find image" in r.stderr
    assert "FROM_STDIN=pulled" in r.stdout.splitlines()
    images = json_lines(store("images", "--format", "json").stdout)
    bb_id = [i for i in images if i["Repository"].endswith("busybox")][0]["ImageID"]
    r = run(store, "--env-file", "/dev/stdin", bb_id, "env", input="FROM_STDIN=by-id\n")
    assert r.returncode == 0, r.stderr
    assert "FROM_STDIN=by-id" in r.stdout.splitlines()


def test_run_platform_pulls_when_the_stored_image_is_another(cli, pushed):
    """`run --platform P` with the tag stored for another platform pulls P's image and runs it
    (podman); with --pull=never it is docker's mismatch error, exit 125, and nothing changes."""
    from container.engine.image import platform as plat

    img = pushed["multiarch"]
    host = plat.host()
    here = f"{host.os}/{host.architecture}"
    other = next(p for p in img.platforms if not p.startswith(here + "/") and p != here)
    cli("pull", "-q", "--platform", other, img.ref, check=True)
    before = cli("images", "-q", "--no-trunc").stdout
    r = cli("run", "--rm", "--pull=never", "--platform", here, img.ref, "cat", "/etc/platform")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "does not match the specified platform" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("images", "-q", "--no-trunc").stdout == before
    r = cli("run", "--rm", "--platform", here, img.ref, "cat", "/etc/platform")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(here)
    # the tag now names the run's platform: a plain run serves it without pulling again
    r = cli("run", "--rm", "--pull=never", img.ref, "cat", "/etc/platform")
    assert r.returncode == 0 and r.stdout.startswith(here), r.stderr
