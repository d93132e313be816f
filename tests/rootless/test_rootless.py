"""Rootless: `container` as real unprivileged users (tests/rootless/conftest.py makes them), one
with subordinate id ranges (files keep their real owners) and one without (a single id).

Pull and run (echo, id, exit codes, env), the shared trees' write protection, the maintenance
commands, `info`, the refusal to mix root and rootless stores, the hostile unpack suite as a user,
and the Debian image's owners as podman rootless shows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

MODES = ("ranges", "single")


def tree_state(*roots: Path) -> dict:
    """Every entry under roots: type, mode, owner, size, mtime, nlink-independent content hash."""
    out = {}
    for top in roots:
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames + filenames:
                p = Path(dirpath) / n
                st = os.lstat(p)
                h = None
                if stat.S_ISREG(st.st_mode):
                    h = hashlib.sha256(p.read_bytes()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    h = os.readlink(p)
                out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, h)
    return out


def one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode != 0, r
    err = r.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_info_says_the_id_mode_and_why(users, kind):
    u = users[kind]
    r = u.container("info", "--format", "json", check=True)
    info = json.loads(r.stdout)
    assert info["store"]["root"] == str(u.store)
    assert info["store"]["db_backend"] == "sqlite"
    rl = info["rootless"]
    assert rl["rootless"] is True and rl["host_uid"] == u.uid
    if kind == "ranges":
        assert rl["id_mode"] == "subordinate ranges"
        assert "/etc/subuid" in rl["reason"] and "newuidmap" in rl["reason"]
        assert rl["uid_map"][0] == [0, u.uid, 1] and rl["uid_map"][1][2] == 65536
    else:
        assert rl["id_mode"] == "single id"
        assert f"no subordinate range for {u.name}" in rl["reason"]
        assert rl["uid_map"] == [[0, u.uid, 1]]
    assert info["runtime"]["isolation"] == "namespaces"
    assert info["runtime"]["rootfs"] in ("kernel overlay", "copy")
    assert info["runtime"]["rootfs_reason"]
    assert info["host"]["kernel"] == os.uname().release
    text = u.container("info", check=True).stdout
    assert "Rootless:" in text and "ID Mode:" in text and "Rootfs:" in text
    # info reads only: nothing was created
    assert not u.store.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_pull_and_run_in_the_default_store(users, pushed, kind):
    u = users[kind]
    ref = pushed["busybox"].ref
    tmp_before = {p for p in Path("/tmp").iterdir() if p.lstat().st_uid == u.uid}
    try:
        u.container("pull", "-q", ref, check=True)
        assert u.store.is_dir() and u.store.stat().st_uid == u.uid
        assert (u.store / "rootless").read_text().split() == [kind, str(u.uid)]
        r = u.container("run", "--rm", ref, "echo", "Hello Container!", check=True)
        assert r.stdout == "Hello Container!\n"
        r = u.container("run", "--rm", ref, "id", check=True)
        assert r.stdout.startswith("uid=0(root) gid=0(root)")
        r = u.container("run", "--rm", "-t", ref, "sh", "-c", "tty; exit 3")    # the container's own pty
        assert (r.returncode, r.stdout) == (3, "/dev/pts/0\n"), r.stderr
        for cmd, code in ((["true"], 0), (["sh", "-c", "exit 7"], 7), (["sh", "-c", "sh -c 'kill -9 $$'; exit $?"], 137),
                          (["/no/such"], 127)):
            assert u.container("run", "--rm", ref, *cmd).returncode == code, cmd
        r = u.container("run", "--rm", "-e", "NAME=world", ref, "sh", "-c", "echo hello $NAME; hostname")
        assert r.stdout.splitlines()[0] == "hello world"
        r = u.container("run", "--rm", "--network", "none", ref, "cat", "/proc/net/dev", check=True)
        assert [ln.split(":")[0].strip() for ln in r.stdout.splitlines()[2:]] == ["lo"]
        r = u.container("run", "--rm", ref, "sh", "-c",
                        "ls /dev; echo x > /dev/null && head -c4 /dev/zero | wc -c; "
                        "touch /sys/x 2>&1 | grep -c 'Read-only'; cat /proc/1/cmdline | tr '\\0' ' '", check=True)
        lines = r.stdout.split()
        for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm"):
            assert dev in lines
        assert "4" in lines and "1" in lines          # /dev/zero reads, /sys is read-only
        # nothing of the user's was written outside the store
        assert sorted(p.name for p in u.home.iterdir() if not p.name.startswith(".")) in ([], ["stores"])
        assert sorted(p.name for p in (u.home / ".local/share").iterdir()) == ["container"]
        assert {p for p in Path("/tmp").iterdir() if p.lstat().st_uid == u.uid} == tmp_before
    finally:
        u.run(["rm", "-rf", str(u.store)])
        if u.store.exists():
            import shutil

            shutil.rmtree(u.store)


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_a_container_writing_everywhere_never_changes_the_shared_trees(users, pushed, store_of, kind):
    u, root = users[kind], store_of(kind)
    ref = pushed["busybox"].ref
    u.container("pull", "-q", ref, root=root, check=True)
    before = tree_state(root / "layers", root / "snapshots")
    r = u.container("run", "--name", "vandal", ref, "sh", "-c",
                    "for f in $(find / -xdev \\( -type f -o -type d \\) 2>/dev/null); do "
                    "echo pwned >> $f 2>/dev/null; chmod 777 $f 2>/dev/null; chown 12:12 $f 2>/dev/null; "
                    "touch -d 2001-01-01 $f 2>/dev/null; done; rm -rf /bin /etc 2>/dev/null; echo done",
                    root=root, timeout=300)
    assert r.stdout.strip().endswith("done"), r
    assert tree_state(root / "layers", root / "snapshots") == before
    assert u.container("run", "--rm", ref, "ls", "/bin/sh", root=root).returncode == 0
    assert u.container("rm", "vandal", root=root).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_maintenance_commands(users, pushed, store_of, kind):
    u, root = users[kind], store_of(kind)
    a, b = pushed["busybox"].ref, pushed["layered"].ref
    for ref in (a, b):
        u.container("pull", "-q", ref, root=root, check=True)
    u.container("run", "--name", "c1", a, "true", root=root, check=True)
    imgs = u.container("images", "--format", "{{.Repository}}:{{.Tag}}", root=root, check=True).stdout.split()
    assert sorted(imgs) == sorted((a, b))
    ps = u.container("ps", "-a", "--format", "{{.Names}} {{.Status}}", root=root, check=True).stdout
    assert ps.startswith("c1 Exited (0)")
    ins = json.loads(u.container("inspect", "c1", root=root, check=True).stdout)[0]
    assert ins["HostConfig"]["UsernsMode"] == kind and ins["GraphDriver"]["Name"] == "overlay"
    assert "Images" in u.container("df", root=root, check=True).stdout
    r = u.container("fsck", "--deep", root=root)
    assert r.returncode == 0 and "no problems" in r.stdout, r
    r = u.container("sql", "SELECT COUNT(*) AS n FROM image", "--format", "csv", root=root, check=True)
    assert r.stdout.split() == ["n", "2"]
    assert u.container("rm", "c1", root=root).returncode == 0
    assert u.container("rmi", b, root=root).returncode == 0
    assert u.container("gc", root=root).returncode == 0
    assert u.container("system", "prune", "-a", "--force", root=root).returncode == 0
    assert u.container("images", "-q", root=root, check=True).stdout == ""
    # everything the store held is gone, as the user (owners in the user's ranges included)
    assert not any((root / "layers").iterdir()) and not any((root / "snapshots").iterdir())


@pytest.fixture
def root_store():
    """A store root made by root that other users may read (/var/tmp, 0755)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="ctr-rootstore-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_root_and_rootless_stores_never_mix(users, pushed, store_of, cli, root_store):
    ref = pushed["busybox"].ref
    root = root_store
    ranges, single = users["ranges"], users["single"]
    mine = store_of("ranges")
    ranges.container("pull", "-q", ref, root=mine, check=True)
    # root refuses the user's store (run's fast path included)
    for args in (("images",), ("run", "--rm", ref, "true"), ("gc",)):
        one_error(cli(*args, root=mine), "rootless store of uid", "root does not use it")
    # another user refuses it
    os.chmod(ranges.home, 0o755)
    one_error(single.container("images", root=mine), f"belongs to uid {ranges.uid}")
    # a user refuses root's store, readable or not
    cli("pull", "-q", ref, root=root, check=True)
    for u in (ranges, single):
        one_error(u.container("images", root=root), "was created by root")
        one_error(u.container("run", "--rm", ref, "true", root=root), "was created by root")
    one_error(single.container("images", root="/root/nope"), "cannot use store root")
    # the same user, its ranges gone: its ranges store is not used with a single id
    saved = {f: Path(f).read_text() for f in ("/etc/subuid", "/etc/subgid")}
    try:
        for f, text in saved.items():
            Path(f).write_text("".join(ln + "\n" for ln in text.splitlines() if not ln.startswith(ranges.name + ":")))
        one_error(ranges.container("images", root=mine), "made in ranges id mode", "single id mode")
    finally:
        for f, text in saved.items():
            Path(f).write_text(text)
    assert ranges.container("images", "-q", root=mine, check=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_debian_owners_as_podman_rootless_shows_them(users, debian_image, store_of, kind):
    u, root = users[kind], store_of(kind)
    cmd = ["sh", "-c", "id; ls -ln /etc/shadow /usr/bin/passwd"]
    r = u.container("run", "--rm", debian_image.ref, *cmd, root=root, timeout=300)
    assert r.returncode == 0, r
    out = r.stdout.splitlines()
    assert out[0].startswith("uid=0(root) gid=0(root)")
    shadow = out[1].split()
    passwd = out[2].split()
    if kind == "ranges":
        assert shadow[0] == "-rw-r-----" and shadow[2:4] == ["0", "42"]
        assert passwd[0] == "-rwsr-xr-x" and passwd[2:4] == ["0", "0"]
        assert "recorded" not in r.stderr
    else:
        assert shadow[0] == "-rw-r-----" and shadow[2:4] == ["0", "0"]
        assert passwd[0] == "-rwxr-xr-x"           # setuid dropped
        assert "recorded in user.rootlesscontainers" in r.stderr and "setuid/setgid dropped" in r.stderr
        layer = next(p for p in (root / "layers").glob("*/etc/shadow"))
        from container.engine.layer.owners import decode_resource

        assert decode_resource(os.getxattr(layer, "user.rootlesscontainers")) == (0, 42)
    # podman rootless, as the same user, on the same image
    if not os.path.exists("/usr/bin/podman") or kind != "ranges":
        return
    prun = Path(f"/tmp/pm-{u.uid}")
    u.run(["mkdir", "-p", "-m", "700", str(prun)], check=True)
    try:
        p = u.run(["podman", "--root", str(u.home / "pm-store"), "--runroot", str(prun), "--storage-driver", "vfs",
                   "--cgroup-manager", "cgroupfs", "--events-backend", "none", "run", "--rm", "--tls-verify=false",
                   "--net", "host", debian_image.ref, *cmd], env={"XDG_RUNTIME_DIR": str(prun)}, timeout=600)
        if p.returncode != 0:
            pytest.skip(f"podman rootless does not run here: {p.stderr.strip()[-300:]}")
        def owners(lines: list[str]) -> list[list[str]]:       # mode, uid, gid, path (not the link count:
            return [[f[0], f[2], f[3], f[-1]] for f in (ln.split() for ln in lines)]   # our snapshots hardlink)

        assert owners(p.stdout.splitlines()[1:]) == owners(out[1:])
        assert p.stdout.splitlines()[0].split()[:2] == out[0].split()[:2]
    finally:
        u.run(["podman", "--root", str(u.home / "pm-store"), "--runroot", str(prun), "--storage-driver", "vfs",
               "system", "reset", "--force"], env={"XDG_RUNTIME_DIR": str(prun)}, timeout=120)
        subprocess.run(["rm", "-rf", str(prun), str(u.home / "pm-store")])


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_hostile_unpack_suite_as_a_user(users, kind):
    """tests/hostile/test_unpack_hostile.py as the user, in its user namespace (the way pull
    unpacks): nothing escapes, every case behaves as the policy of that id mode says."""
    u = users[kind]
    repo = Path(__file__).resolve().parents[2]
    code = ("import os, sys; from container.engine.runtime.userns import enter; m = enter(); "
            f"assert m == {kind!r}, m; import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-x', '--basetemp', {str(u.home / 'pytest')!r}, "
            f"'--rootdir', {str(repo)!r}, {str(repo / 'tests/hostile/test_unpack_hostile.py')!r}]))")
    r = u.python(code, env={"PYTHONDONTWRITEBYTECODE": "1"}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_files_shows_the_layer_owners_indexed_at_pull_or_late(users, store_of, kind):
    """The owners a rootless unpack could not give a file (recorded in user.rootlesscontainers) are
    the layer's in the contents index, whether the layer was indexed at pull or later from its tree."""
    import tarmaker as tm

    u = users[kind]
    at_pull, late, lay = store_of(kind), store_of(kind), store_of(kind)
    layer = tm.tar(tm.dir("etc/"), tm.file("etc/root-owned", b"r"), tm.file("etc/in-range", b"i", uid=42, gid=42),
                   tm.file("etc/outside", b"o", uid=70000, gid=70001), tm.file("etc/half", b"h", uid=0, gid=70002))
    tm.oci_layout(lay / "img", [layer])
    idx = json.loads((lay / "img/index.json").read_text())
    idx["manifests"][0]["annotations"] = {"io.containerd.image.name": "example.com/owners:1"}
    (lay / "img/index.json").write_text(json.dumps(idx))
    u.container("load", "-i", str(lay / "img"), root=at_pull, check=True)
    u.container("load", "-i", str(lay / "img"), root=late, env={"CONTAINER_INDEX": "0"}, check=True)
    want = u.container("files", "-l", "example.com/owners:1", "/etc", root=at_pull, check=True).stdout
    owners = {ln.split()[-1]: ln.split()[1] for ln in want.splitlines()}
    assert owners == {"/etc": "0/0", "/etc/root-owned": "0/0", "/etc/in-range": "42/42",
                      "/etc/outside": "70000/70001", "/etc/half": "0/70002"}
    assert u.container("files", "-l", "example.com/owners:1", "/etc", root=late, check=True).stdout == want
    for root in (at_pull, late):
        r = u.container("fsck", "--deep", root=root)
        assert r.returncode == 0, r


@pytest.mark.slow
@pytest.mark.parametrize("kind", MODES)
def test_export_gives_the_layer_owners(users, store_of, kind):
    """A rootless export writes the owners the layer gave (those its unpack could not give a file are
    in user.rootlesscontainers), as podman's rootless export does, and not that record itself."""
    import tarfile

    import tarmaker as tm

    u = users[kind]
    root, lay = store_of(kind), store_of(kind)
    layer = tm.tar(tm.dir("etc/"), tm.file("etc/root-owned", b"r"), tm.file("etc/in-range", b"i", uid=42, gid=42),
                   tm.file("etc/outside", b"o", uid=70000, gid=70001), tm.file("etc/half", b"h", uid=0, gid=70002))
    (lay / "l.tar").write_bytes(layer)
    u.container("import", str(lay / "l.tar"), "example.com/owners:1", root=root, check=True)
    u.container("create", "--name", "c", "example.com/owners:1", "/x", root=root, check=True)
    u.container("export", "c", "-o", str(lay / "out.tar"), root=root, check=True)
    with tarfile.open(lay / "out.tar") as tf:
        got = {m.name: (m.uid, m.gid) for m in tf.getmembers() if m.name.startswith("etc/")}
        heads = [k for m in tf.getmembers() for k in m.pax_headers if "rootless" in k]
    assert got == {"etc/root-owned": (0, 0), "etc/in-range": (42, 42), "etc/outside": (70000, 70001),
                   "etc/half": (0, 70002)}
    assert heads == []
