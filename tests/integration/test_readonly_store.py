"""Read-only stores (--storage ro:DIR, [storage] readonly): an admin-populated store on a read-only
bind mount is listed (marked), run from in place, never written; the user's own store gets only
the container; a missing or unreadable one is a warning; rmi/gc/prune never touch it.

Needs root (bind mounts, container run).
"""

import hashlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from checks import json_lines
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="bind mounts and container run need root on Linux"),
]


def checksums(top: Path) -> dict:
    """Every entry under `top`: type, mode, owner, size, mtime, and a file's sha256 / a link's target."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rec = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_nlink)
            if p.is_symlink():
                rec += (os.readlink(p),)
            elif p.is_file():
                rec += (hashlib.sha256(p.read_bytes()).hexdigest(),)
            out[str(p.relative_to(top))] = rec
    return out


@contextmanager
def ro_bind(src: Path, dst: Path):
    """`src` seen read-only at `dst` (mount --bind, then remount ro), unmounted on exit."""
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], check=False)


@pytest.fixture(scope="module")
def ro_store(tmp_path_factory, pushed):
    """A store populated by a pull, then seen through a read-only bind mount (RO)."""
    base = tmp_path_factory.mktemp("rostore")
    src = base / "admin"
    src.mkdir()
    admin = ContainerCli(src, base)
    admin("pull", "-q", pushed["busybox"].ref, check=True)
    admin("pull", "-q", pushed["layered"].ref, check=True)
    with ro_bind(src, base / "ro") as ro:
        yield ro


def user_files(root: Path) -> list[str]:
    """What the user's store holds besides its database and empty folders."""
    out = []
    for sub in ("blobs", "layers", "snapshots", "ingest"):
        d = root / sub
        if d.exists():
            out += [f"{sub}/{p.relative_to(d)}" for p in d.rglob("*") if not p.is_dir() or any(p.iterdir())]
    return out


def test_run_from_readonly_bind_mount(cli, ro_store, pushed):
    with pytest.raises(OSError):
        (ro_store / "probe").write_text("x")          # the mount really is read-only
    before = checksums(ro_store)
    ro = ["--storage", f"ro:{ro_store}"]
    r = cli(*ro, "run", "--name", "fromro", pushed["busybox"].ref, "sh", "-c", "echo hi > /f; cat /f; cat /etc/os*")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hi\n")
    assert "Unable to find image" not in r.stderr          # found in the read-only store, not pulled
    layered = cli(*ro, "run", "--rm", pushed["layered"].ref, "ls", "/")
    assert layered.returncode == 0, layered.stderr
    assert checksums(ro_store) == before                   # nothing under it changed
    # The user's store: the container only (its row and dir), no blob, layer or snapshot copied.
    assert user_files(cli.root) == []
    ps = json_lines(cli("ps", "-a", "--format", "json", check=True).stdout)
    assert [c["Names"] for c in ps] == ["fromro"]
    assert (cli.root / "containers").is_dir() and len(list((cli.root / "containers").iterdir())) == 1
    # rm, gc and prune work on the user's store and leave the read-only one alone.
    cli("rm", "fromro", check=True)
    cli("system", "prune", "-a", "-f", check=True)
    cli(*ro, "gc", check=True)
    assert checksums(ro_store) == before


def test_images_listed_and_marked(cli, ro_store, pushed):
    ro = ["--storage", f"ro:{ro_store}"]
    rows = json_lines(cli(*ro, "images", "--format", "json", check=True).stdout)
    assert {(r["Repository"], r["ReadOnly"], r["Store"]) for r in rows} == {
        (pushed[k].ref.rsplit(":", 1)[0], True, str(ro_store)) for k in ("busybox", "layered")}
    table = cli(*ro, "images", check=True)
    assert table.stdout.splitlines()[0].split()[-1] == "R/O"
    assert all(line.split()[-1] == "ro" for line in table.stdout.splitlines()[1:])
    assert f"read-only store {ro_store}" in table.stderr
    plain = cli("images", "--format", "json", check=True)     # without --storage: the user's store only
    assert plain.stdout.strip() == ""
    insp = cli(*ro, "inspect", pushed["busybox"].ref, check=True)
    assert json.loads(insp.stdout)[0]["Id"].startswith("sha256:")


def test_rmi_refuses_readonly_image(cli, ro_store, pushed):
    before = checksums(ro_store)
    r = cli("--storage", f"ro:{ro_store}", "rmi", pushed["busybox"].ref)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "read-only store" in r.stderr and "Traceback" not in r.stderr
    assert checksums(ro_store) == before


def test_missing_and_unreadable_stores_are_warnings(cli, ro_store, pushed, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.db").write_bytes(b"not a database" * 100)
    r = cli("--storage", f"ro:{tmp_path / 'nowhere'}", "--storage", f"ro:{junk}", "--storage", f"ro:{ro_store}",
            "run", "--rm", pushed["busybox"].ref, "true")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 2
    assert "nowhere: missing" in warnings[0] and "junk: unreadable" in warnings[1]
    assert user_files(cli.root) == []


def test_config_file_readonly_stores(cli, ro_store, pushed):
    cli.write_config(f'[storage]\nreadonly = ["{ro_store}"]\n')
    r = cli("run", "--rm", pushed["layered"].ref, "true")      # the fast path gives up, the ORM path finds it
    assert r.returncode == 0, r.stderr
    assert "Unable to find image" not in r.stderr
    assert user_files(cli.root) == []


def test_bad_storage_spec_is_one_line(cli):
    r = cli("--storage", "rw:/x", "images")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "ro:DIR" in r.stderr


def test_unmerged_wal_is_still_read(cli, pushed, tmp_path):
    """A store whose last writer never closed its database (metadata.db-wal left behind): immutable
    would not see the log, so it is opened plain read-only and the log's rows are listed."""
    src = tmp_path / "admin"
    src.mkdir()
    admin = ContainerCli(src, tmp_path)
    admin("pull", "-q", pushed["busybox"].ref, check=True)
    script = ("import os, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1])\n"
              "c.execute(\"INSERT INTO tag (repository, tag, digest, image_id, created) SELECT repository, 'walonly',"
              " digest, image_id, created FROM tag LIMIT 1\")\n"
              "c.commit()\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(src / "metadata.db")], check=True)
    assert (src / "metadata.db-wal").stat().st_size > 0
    with ro_bind(src, tmp_path / "ro") as ro:
        before = checksums(ro)
        rows = json_lines(cli("--storage", f"ro:{ro}", "images", "--format", "json", check=True).stdout)
        assert "walonly" in {r["Tag"] for r in rows}
        assert checksums(ro) == before
