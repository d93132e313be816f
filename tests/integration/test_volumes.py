"""Volumes and mounts (issue 13 item 6): -v / --mount / --tmpfs on run and create, `volume`
create|ls|inspect|rm|prune, df's Local Volumes row, inspect's Mounts, rm -v; against podman for -v.

One store per module with busybox and a test image (volimg) whose /srv/data is owned by 1000:1000,
mode 0750, with a file in it (the copy-up source). Needs root (mounts, namespaces).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from checks import json_lines, one_error
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="container run needs root on Linux"),
]


# (the rlimits podman would copy from here are refused in this sandbox, as in test_run.py)
PODMAN_RUN = ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def build_volimg(path: Path, extra=None) -> Path:
    """busybox + /srv/data (1000:1000, 0750, seed.txt) and whatever `extra(layer)` adds; an OCI layout
    whose ref name is volimg:latest."""
    from tools import images as ti

    L = ti.busybox_layer()
    L.dir("srv")
    L.dir("srv/data", mode=0o750, uid=1000, gid=1000)
    L.file("srv/data/seed.txt", "from the image\n", mode=0o640, uid=1000, gid=1000)
    if extra:
        extra(L)
    lay = ti.OciLayout(path)
    layer = lay.add_built_layer(L)
    os_, arch, variant = ti.host_platform()
    ti._finish("volimg", lay, [layer], ti._image_config(arch, os_, variant, {"Env": [f"PATH={ti.BUSYBOX_PATH}"],
                                                                            "Cmd": ["sh"]}),
               tag="volimg:latest")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, pushed):
    base = tmp_path_factory.mktemp("volstore")
    root = base / "root"
    root.mkdir()
    c = ContainerCli(root, base)
    c("pull", "-q", pushed["busybox"].ref, check=True)
    c("load", "-q", "-i", str(build_volimg(base / "volimg")), check=True)
    c.bb = pushed["busybox"].ref
    c.base = base
    return c


def run(store, *args, **kw):
    return store("run", "--rm", *args, **kw)


def volumes(store) -> list[str]:
    return store("volume", "ls", "-q", check=True).stdout.split()


# --------------------------------------------------------------------------------------- binds
def test_bind_mount_host_sees_writes_and_ro_refuses(store, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    r = run(store, "-v", f"{host}:/data", store.bb, "sh", "-c", "cat /data/in.txt; echo hi > /data/out.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from the host\n"
    assert (host / "out.txt").read_text() == "hi\n"
    r = run(store, "-v", f"{host}:/data:ro", store.bb, "sh", "-c", "cat /data/in.txt; echo x > /data/ro.txt")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not (host / "ro.txt").exists()
    r = run(store, "--mount", f"type=bind,src={host},dst=/m,readonly", store.bb, "sh", "-c", "touch /m/y")
    assert r.returncode != 0 and not (host / "y").exists()
    # a file bind, and a target that does not exist in the image (created in the container's upper dir)
    r = run(store, "-v", f"{host / 'in.txt'}:/new/dir/file.txt", store.bb, "cat", "/new/dir/file.txt")
    assert (r.returncode, r.stdout) == (0, "from the host\n"), r.stderr


def test_bind_mount_does_not_touch_the_snapshot(store, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    snaps = store.root / "snapshots"
    before = sorted(str(p.relative_to(snaps)) for p in snaps.rglob("*"))
    assert run(store, "-v", f"{host}:/not/in/image", store.bb, "true").returncode == 0
    assert sorted(str(p.relative_to(snaps)) for p in snaps.rglob("*")) == before


def test_missing_source_and_bad_specs_are_one_error(store, tmp_path):
    before = sorted(os.listdir(store.root / "containers"))
    r = run(store, "-v", f"{tmp_path}/nope:/data", store.bb, "true")
    assert r.returncode == 125
    assert one_error(r) == (f'Error: invalid mount config for type "bind": bind source path does not exist: '
                            f'{tmp_path}/nope')
    for args, says in ([["-v", "relative:dir"], "mount path must be absolute"],
                       [["-v", "a/b:/x"], "includes invalid characters for a local volume name"],
                       [["-v", f"{tmp_path}:/x:bogus"], "invalid mode: bogus"],
                       [["-v", f"{tmp_path}:/"], "destination can't be '/'"],
                       [["-v", f"{tmp_path}:/x", "-v", f"{tmp_path}:/x"], "Duplicate mount point: /x"],
                       [["--mount", "type=nfs,dst=/x"], "invalid type"],
                       [["--mount", "type=bind,dst=/x"], "field Source must not be empty"],
                       [["--mount", "type=tmpfs,dst=/x,tmpfs-size=lots"], "invalid tmpfs-size"],
                       [["--tmpfs", "/proc/x"], "not supported"]):
        r = run(store, *args, store.bb, "true")
        assert r.returncode == 125 and says in one_error(r), (args, r.stderr)
    assert sorted(os.listdir(store.root / "containers")) == before


def test_chroot_isolation_refuses_mounts(store, tmp_path):
    r = run(store, "--isolation", "chroot", "-v", f"{tmp_path}:/data", store.bb, "true")
    assert r.returncode == 125 and "need --isolation namespaces" in one_error(r)


# --------------------------------------------------------------------------------------- tmpfs
def test_tmpfs_mounts(store):
    r = run(store, "--tmpfs", "/run:size=1m,mode=1777", "--mount", "type=tmpfs,dst=/scratch,tmpfs-mode=700",
            store.bb, "sh", "-c", "grep -E ' /(run|scratch) ' /proc/mounts; stat -c %a /run /scratch")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    run_line = [x for x in lines if " /run " in x][0]
    assert run_line.startswith("tmpfs /run tmpfs") and "nosuid" in run_line and "noexec" in run_line
    assert "size=1024k" in run_line
    assert lines[-2:] == ["1777", "700"]


# ------------------------------------------------------------------------------------- volumes
def test_named_volume_copy_up_survives_rm_and_is_reused(store):
    r = store("run", "--name", "v1", "-v", "appdata:/srv/data", "volimg", "sh", "-c",
              "cat /srv/data/seed.txt; stat -c '%u:%g %a' /srv/data /srv/data/seed.txt; echo kept > /srv/data/new")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from the image\n1000:1000 750\n1000:1000 640\n"
    data = store.root / "volumes" / "appdata" / "_data"
    assert (data / "new").read_text() == "kept\n"
    st = os.stat(data)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o750)
    doc = json.loads(store("inspect", "v1", check=True).stdout)[0]
    assert doc["Mounts"] == [{"Type": "volume", "Name": "appdata", "Source": str(data), "Destination": "/srv/data",
                              "Driver": "local", "Mode": "", "RW": True, "Propagation": ""}]
    r = store("volume", "rm", "appdata")
    assert r.returncode == 1 and one_error(r).startswith("Error: remove appdata: volume is in use - [")
    assert store("rm", "v1").returncode == 0
    assert "appdata" in volumes(store)
    # reused: the content is the volume's, not copied again (seed.txt removed stays removed)
    r = run(store, "-v", "appdata:/srv/data", "volimg", "sh", "-c", "rm /srv/data/seed.txt; ls /srv/data")
    assert (r.returncode, r.stdout) == (0, "new\n"), r.stderr
    r = run(store, "-v", "appdata:/elsewhere", store.bb, "ls", "/elsewhere")
    assert (r.returncode, r.stdout) == (0, "new\n"), r.stderr
    assert store("volume", "rm", "appdata", check=True).stdout == "appdata\n"
    assert not (store.root / "volumes" / "appdata").exists()


def test_volume_verbs(store):
    assert store("volume", "create", "--label", "team=db", "vv1", check=True).stdout == "vv1\n"
    assert store("volume", "create", "vv1", check=True).stdout == "vv1\n"          # exists: kept
    doc = json.loads(store("volume", "inspect", "vv1", check=True).stdout)
    assert doc == [{"CreatedAt": doc[0]["CreatedAt"], "Driver": "local", "Labels": {"team": "db"},
                    "Mountpoint": str(store.root / "volumes" / "vv1" / "_data"), "Name": "vv1", "Options": None,
                    "Scope": "local"}]
    ls = store("volume", "ls", check=True).stdout.splitlines()
    assert ls[0].split() == ["DRIVER", "VOLUME", "NAME"] and ["local", "vv1"] in [x.split() for x in ls[1:]]
    rows = json_lines(store("volume", "ls", "--format", "json", check=True).stdout)
    assert {"Name": "vv1", "Driver": "local", "Labels": "team=db"}.items() <= [r for r in rows
                                                                               if r["Name"] == "vv1"][0].items()
    assert store("volume", "ls", "--format", "{{.Name}}={{.Label \"team\"}}", check=True).stdout.count("vv1=db") == 1
    r = store("volume", "inspect", "nope")
    assert r.returncode == 1 and one_error(r) == "Error: No such volume: nope"
    r = store("volume", "rm", "nope")
    assert r.returncode == 1 and one_error(r) == "Error: No such volume: nope"
    assert store("volume", "rm", "-f", "nope").returncode == 0
    r = store("volume", "create", "a/b")
    assert r.returncode == 1 and "invalid characters" in one_error(r)
    store("volume", "create", "vv2", check=True)
    assert store("volume", "ls", "-q", "--filter", "label=team=db", check=True).stdout == "vv1\n"
    assert store("volume", "ls", "-q", "-f", "name=^vv", "-f", "dangling=true", check=True).stdout == "vv1\nvv2\n"
    assert store("volume", "ls", "-q", "-f", "dangling=false", check=True).stdout == ""
    r = store("volume", "ls", "-f", "colour=red")
    assert r.returncode == 1 and "invalid filter 'colour'" in one_error(r)
    store("volume", "rm", "vv2", check=True)
    anon = store("volume", "create", check=True).stdout.strip()
    assert len(anon) == 64
    assert store("volume", "rm", "vv1", anon, check=True).stdout.split() == ["vv1", anon]


def test_anonymous_volumes_go_with_rm_v_and_run_rm(store):
    before = set(volumes(store))
    r = run(store, "-v", "/srv/data", "volimg", "cat", "/srv/data/seed.txt")
    assert (r.returncode, r.stdout) == (0, "from the image\n"), r.stderr
    assert set(volumes(store)) == before                    # run --rm took its anonymous volume
    cid = store("create", "-v", "/scratch", "-v", "keepme:/keep", store.bb, "true", check=True).stdout.strip()
    new = set(volumes(store)) - before
    assert len(new) == 2 and "keepme" in new
    doc = json.loads(store("inspect", cid, check=True).stdout)[0]
    anon = [m for m in doc["Mounts"] if m["Destination"] == "/scratch"][0]
    assert anon["Type"] == "volume" and len(anon["Name"]) == 64
    assert store("rm", "-v", cid, check=True).returncode == 0
    assert set(volumes(store)) - before == {"keepme"}
    store("volume", "rm", "keepme", check=True)


def test_prune_frees_unused_volumes_and_df_shows_them(store):
    store("run", "--name", "holder", "-v", "held:/d", store.bb, "sh", "-c", "head -c 300000 /dev/urandom > /d/f",
          check=True)
    assert store("run", "--rm", "-v", "loose:/d", store.bb, "sh", "-c",
                 "head -c 200000 /dev/urandom > /d/f").returncode == 0
    rows = {r["Type"]: r for r in json_lines(store("df", "--format", "json", check=True).stdout)}
    vol = rows["Local Volumes"]
    assert (vol["TotalCount"], vol["Active"]) == ("2", "1")
    assert vol["Bytes"] >= 500_000 and 200_000 <= vol["ReclaimableBytes"] < 300_000
    rep = json.loads(store("df", "-v", "--format", "report", check=True).stdout)
    assert sum(r["size"] for r in rep["summary"]) == rep["total"]
    held = [v for v in rep["volumes"] if v["name"] == "held"][0]
    assert held["links"] == 1 and held["size"] >= 300_000
    assert "Local Volumes space usage:" in store("df", "-v", check=True).stdout
    import gc_synth as S

    assert rep["total"] + rep["metadata"] - rep["database"] == S.du(store.root, without_db=True)
    # gc and image/container prune never remove a volume
    store("gc", check=True)
    assert {"held", "loose"} <= set(volumes(store))
    r = store("volume", "prune", "-f", check=True)
    assert "Deleted Volumes:\nloose\n" in r.stdout and "Total reclaimed space: 2" in r.stdout
    assert "held" in volumes(store) and "loose" not in volumes(store)
    store("rm", "holder", check=True)
    r = store("volume", "prune")                              # no terminal: refuses without -f
    assert r.returncode != 0 and "--force" in one_error(r)
    store("volume", "prune", "-f", check=True)
    assert "held" not in volumes(store)
    assert not any((store.root / "volumes").iterdir())


# ------------------------------------------------------------------------------------ podman
def test_bind_and_volume_same_as_podman(store, podman, tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    layout = build_volimg(tmp_path / "pm-volimg")
    r = podman("pull", f"oci:{layout}:volimg:latest")
    if r.returncode != 0:
        pytest.skip(f"podman cannot read the layout: {r.stderr.strip()[-200:]}")
    img = r.stdout.strip().splitlines()[-1]
    host = tmp_path / "h"
    host.mkdir()
    (host / "f").write_text("x\n")
    script = "ls /data; cat /data/f; echo w > /data/w 2>/dev/null; echo $?; stat -c '%u:%g %a' /srv/data; ls /srv/data"
    for opts in (["-v", f"{host}:/data"], ["-v", f"{host}:/data:ro", "-v", "pmvol:/srv/data"],
                 ["--mount", f"type=bind,src={host},dst=/data,readonly", "-v", "/srv/data"]):
        (host / "w").unlink(missing_ok=True)
        ours = run(store, "--network", "none", *opts, "volimg", "sh", "-c", script)
        ours_w = (host / "w").exists()
        (host / "w").unlink(missing_ok=True)
        theirs = podman(*PODMAN_RUN, *opts, img, "sh", "-c", script)
        assert (ours.returncode, ours.stdout, ours_w) == (theirs.returncode, theirs.stdout, (host / "w").exists()), \
            (opts, ours.stderr, theirs.stderr)
    store("volume", "rm", "pmvol", check=True)
    ours = run(store, "-v", f"{tmp_path}/missing:/data", store.bb, "true")
    theirs = podman(*PODMAN_RUN, "-v", f"{tmp_path}/missing:/data", img, "true")
    assert ours.returncode == theirs.returncode == 125


# --------------------------------------------------------------------------------- migration
def test_a_version_1_store_gains_the_volume_tables(backend, tmp_path, pushed):
    """migrations.up_volumes on SQLite and PostgreSQL: a store written before volumes existed (no
    volume tables, schema_version 1) opened by this version; its rows stay, volumes then work."""
    import gc_synth as S
    from container.engine.service import Engine
    from container.schema import SCHEMA_VERSION, migrations

    root = tmp_path / "root"
    names = S.sql_example_store(root, backend)
    e = Engine(root, backend)
    db = e.store.db()
    db.execute_sql("DROP TABLE volume_use")
    db.execute_sql("DROP TABLE volume")
    db.execute_sql("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    e.store.close()
    e = Engine(root, backend)
    assert migrations.current_version(e.store.db()) == SCHEMA_VERSION
    assert len(e.containers(all=True)) == 3 and names
    assert e.create_volume("after-migration").name == "after-migration"
    assert [v.name for v in e.volumes()] == ["after-migration"]
    e.store.close()


def test_a_volume_dir_without_a_row_is_unreferenced_and_gc_sweeps_only_it(store):
    store("volume", "create", "real", check=True)
    (store.root / "volumes" / "real" / "_data" / "f").write_text("keep\n")
    left = store.root / "volumes" / "leftover" / "_data"
    left.mkdir(parents=True)
    (left / "f").write_bytes(b"x" * 100_000)
    rep = json.loads(store("df", "-v", "--format", "report", check=True).stdout)
    by = {r["type"]: r for r in rep["summary"]}
    assert by["Unreferenced"]["size"] >= 100_000 and by["Local Volumes"]["total"] == 1
    assert "volumes/leftover" in store("fsck").stdout
    store("gc", check=True)
    assert not (store.root / "volumes" / "leftover").exists()
    assert (store.root / "volumes" / "real" / "_data" / "f").read_text() == "keep\n"
    store("volume", "rm", "real", check=True)
