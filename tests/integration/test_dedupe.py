"""File-level dedupe (docs/contents.md): identical files of two images' layer trees are one inode;
df says what that saves and still adds up to du; rmi + gc keep the other image whole; a container
writing to a shared file changes no tree."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import pytest

import gc_synth as S
import tarmaker as tm

BIG = tm.seed_bytes(300_000, seed=7)
MTIME = 1_650_000_000


load = tm.load_layout


def app(version: int) -> bytes:
    """An application layer: the same library in every version, its own binary."""
    return tm.tar(tm.dir("opt/"), tm.file("opt/lib.so", BIG, mtime=MTIME),
                  tm.file("opt/same-bytes-other-mode", b"m" * 9000, mode=0o755 if version == 1 else 0o644,
                          mtime=MTIME),
                  tm.file("opt/app", b"version %d\n" % version * 1000, mtime=MTIME))


def tree(root, diff_id: str):
    return root / "layers" / diff_id.split(":")[1]


def df(cli) -> dict:
    return json.loads(cli("df", "-v", "--format", "report", check=True).stdout)


def adds_up(cli, root) -> dict:
    rep = df(cli)
    assert sum(r["size"] for r in rep["summary"]) == rep["total"]
    assert rep["total"] + rep["metadata"] - rep["database"] == S.du(root, without_db=True)
    by = {r["type"]: r for r in rep["summary"]}
    assert rep["images_total"] == by["Manifests"]["size"] + by["Layers"]["size"] + by["Snapshots"]["size"]
    assert all(0 <= r["reclaimable"] <= r["size"] for r in rep["summary"])
    return rep


def test_identical_files_are_one_inode_df_says_so_and_gc_keeps_the_other(cli, root, tmp_path):
    a, b = app(1), app(2)
    load(cli, tmp_path, "example.com/app:1", [a])
    load(cli, tmp_path, "example.com/app:2", [b])
    ta, tb = tree(root, tm.oci_layout(tmp_path / "x", [a])["diff_ids"][0]), \
        tree(root, tm.oci_layout(tmp_path / "y", [b])["diff_ids"][0])
    sa, sb = os.lstat(ta / "opt/lib.so"), os.lstat(tb / "opt/lib.so")
    assert sa.st_ino == sb.st_ino and sa.st_nlink >= 3          # two trees + the object (+ snapshots)
    assert (tb / "opt/lib.so").read_bytes() == BIG
    assert sa.st_mode & 0o222 == (0o644 & 0o222)                 # the attributes the layer gave it
    # same bytes, another mode: not what a hardlink can share
    assert os.lstat(ta / "opt/same-bytes-other-mode").st_ino != os.lstat(tb / "opt/same-bytes-other-mode").st_ino
    assert os.lstat(ta / "opt/app").st_ino != os.lstat(tb / "opt/app").st_ino
    rep = adds_up(cli, root)
    assert rep["deduplicated"] >= 300_000 - 4096
    # no container: `image prune -a` would free every layer byte, the objects too, and no more
    layers = {r["type"]: r for r in rep["summary"]}["Layers"]
    assert layers["reclaimable"] == layers["size"]
    assert "Deduplicated:" in cli("df", "-v", check=True).stdout
    assert cli("fsck", "--deep", check=True).returncode == 0

    # rmi of one version + gc: the other stays whole, the object stays while a tree links it
    cli("rmi", "example.com/app:1", check=True)
    before = S.du(root, without_db=True)
    cli("gc", check=True)
    assert not ta.exists() and (tb / "opt/lib.so").read_bytes() == BIG
    assert os.lstat(tb / "opt/lib.so").st_nlink >= 2
    r = cli("fsck", "--deep")
    assert r.returncode == 0, r.stdout + r.stderr
    after = S.du(root, without_db=True)
    assert before - after >= 9000                                   # app 1's own files went
    rep = adds_up(cli, root)
    assert rep["deduplicated"] == 0
    # nothing left: no object either
    cli("rmi", "example.com/app:2", check=True)
    cli("gc", check=True)
    objs = [f for d, _, fs in os.walk(root / "objects") if "trees" not in d for f in fs]
    assert objs == []
    adds_up(cli, root)


def test_dedupe_off_by_env_and_config(cli, root, tmp_path):
    a, b = app(1), app(2)
    load(cli, tmp_path, "example.com/app:1", [a], env={"CONTAINER_DEDUPE": "0"})
    cli.config_path.write_text("[store]\ndedupe = false\n")
    load(cli, tmp_path, "example.com/app:2", [b])
    ta = tree(root, tm.oci_layout(tmp_path / "x", [a])["diff_ids"][0])
    tb = tree(root, tm.oci_layout(tmp_path / "y", [b])["diff_ids"][0])
    assert os.lstat(ta / "opt/lib.so").st_ino != os.lstat(tb / "opt/lib.so").st_ino
    assert adds_up(cli, root)["deduplicated"] == 0
    cli.config_path.write_text("[store]\ndedupe = 3\n")
    tm.oci_layout(tmp_path / "v3", [app(3)])
    r = cli("load", "-i", str(tmp_path / "v3"))
    assert r.returncode != 0 and "store.dedupe must be true or false" in r.stderr
    assert "Traceback" not in r.stderr


def _busybox_tar(built_images) -> bytes:
    bb = built_images["busybox"]
    info = bb.layers[0]
    raw = (bb.oci_dir / "blobs" / "sha256" / info.digest.split(":")[1]).read_bytes()
    return gzip.decompress(raw) if info.media_type.endswith("gzip") else raw


@pytest.mark.parametrize("mode", ["overlay", "copy"])
def test_container_writing_a_shared_file_changes_no_tree(cli, root, tmp_path, built_images, mode):
    base = _busybox_tar(built_images)
    a, b = app(1), app(2)
    load(cli, tmp_path, "example.com/run:1", [base, a])
    load(cli, tmp_path, "example.com/run:2", [base, b])
    ta = tree(root, tm.oci_layout(tmp_path / "x", [a])["diff_ids"][0])
    tb = tree(root, tm.oci_layout(tmp_path / "y", [b])["diff_ids"][0])
    assert os.lstat(ta / "opt/lib.so").st_ino == os.lstat(tb / "opt/lib.so").st_ino
    env = {"CONTAINER_ROOTFS": "copy"} if mode == "copy" else None
    r = cli("run", "--rm", "example.com/run:1", "/bin/sh", "-c",
            "echo changed > /opt/lib.so && cat /opt/lib.so", env=env)
    assert r.returncode == 0 and r.stdout == "changed\n", r.stderr
    assert (ta / "opt/lib.so").read_bytes() == BIG and (tb / "opt/lib.so").read_bytes() == BIG
    r = cli("run", "--rm", "example.com/run:2", "/bin/sh", "-c", "md5sum < /opt/lib.so", env=env)
    assert r.stdout.split()[0] == hashlib.md5(BIG).hexdigest()
    assert cli("fsck", "--deep").returncode == 0


@pytest.mark.slow
def test_debian_and_a_rebuild_of_it_share_files_rmi_gc_keeps_the_other_verified(cli, root, tmp_path, debian_image):
    """The issue's check: the debian image pulled, a rebuild of its layer (one file changed) beside
    it; df says what is saved and agrees with du; rmi + gc of debian leaves the rebuild verified."""
    import io
    import tarfile

    built = debian_image.built
    info = built.layers[0]
    raw = (built.oci_dir / "blobs" / "sha256" / info.digest.split(":")[1]).read_bytes()
    layer = gzip.decompress(raw) if info.media_type.endswith("gzip") else raw
    src = tarfile.open(fileobj=io.BytesIO(layer))
    out = io.BytesIO()
    dst = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    for m in src:
        f = src.extractfile(m) if m.isreg() else None
        if m.name.lstrip("./") == "etc/hostname" and f is not None:
            data = b"rebuilt\n"
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
            continue
        dst.addfile(m, f)
    dst.close()
    cli("pull", debian_image.ref, check=True)
    load(cli, tmp_path, "example.com/debian:rebuilt", [out.getvalue()])
    rep = adds_up(cli, root)
    assert rep["deduplicated"] > 20 << 20           # nearly the whole tree is stored once
    cli("rmi", debian_image.ref, check=True)
    cli("gc", check=True)
    r = cli("fsck", "--deep")
    assert r.returncode == 0, r.stdout + r.stderr
    assert adds_up(cli, root)["deduplicated"] < rep["deduplicated"]
    assert "Deduplicated" in cli("df", "-v", check=True).stdout


def _objects(root) -> list[str]:
    top = root / "objects"
    return sorted(f"{d}/{n}" for d in os.listdir(top) if len(d) == 2 for n in os.listdir(top / d)) \
        if top.is_dir() else []


@pytest.mark.parametrize("how", ["corrupt-layer", "wrong-diff-id"])
def test_a_failed_load_leaves_the_objects_as_they_were(cli, root, tmp_path, how):
    """The dedupe shares files while a layer is written: a load (or pull) that fails afterwards,
    in the unpack or at the diff_id check, takes the objects its layers created back out."""
    load(cli, tmp_path, "example.com/dd/base:1", [app(1)])
    before = _objects(root)
    assert before
    d = tmp_path / "bad"
    fresh = tm.tar(tm.dir("srv/"), *[tm.file(f"srv/f{i}", tm.seed_bytes(5000, seed=100 + i), mtime=MTIME)
                                     for i in range(20)])
    out = tm.oci_layout(d, [app(2), fresh])
    blobs = d / "blobs" / "sha256"
    idx = json.loads((d / "index.json").read_text())
    man_d = idx["manifests"][0]["digest"][7:]
    man = json.loads((blobs / man_d).read_text())
    if how == "corrupt-layer":            # the second layer's gzip stream cut short: the unpack fails
        dg, _, blob = out["layers"][1]
        cut = blob[: len(blob) // 2]
        nd = hashlib.sha256(cut).hexdigest()
        (blobs / nd).write_bytes(cut)
        man["layers"][1].update(digest="sha256:" + nd, size=len(cut))
    else:                                 # the config names another diff_id for the second layer
        cfg = json.loads((blobs / man["config"]["digest"][7:]).read_bytes())
        cfg["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
        raw = json.dumps(cfg).encode()
        cd = hashlib.sha256(raw).hexdigest()
        (blobs / cd).write_bytes(raw)
        man["config"].update(digest="sha256:" + cd, size=len(raw))
    raw = json.dumps(man).encode()
    md = hashlib.sha256(raw).hexdigest()
    (blobs / md).write_bytes(raw)
    idx["manifests"][0].update(digest="sha256:" + md, size=len(raw),
                               annotations={"io.containerd.image.name": "example.com/dd/bad:1"})
    (d / "index.json").write_text(json.dumps(idx))
    r = cli("load", "-i", str(d))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert _objects(root) == before
    assert cli("fsck", check=True).returncode == 0          # (no partial left in ingest/ either)


def _ledger(root, drop: bool = False):
    import sqlite3

    con = sqlite3.connect(root / "metadata.db")
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'objects_ledger'").fetchone()
        if drop:
            con.execute("DELETE FROM meta WHERE key = 'objects_ledger'")
            con.commit()
        return json.loads(row[0]) if row else None
    finally:
        con.close()


def _numbers(rep: dict) -> tuple:
    return (rep["summary"], rep["total"], rep["metadata"] - rep["database"], rep["deduplicated"],
            rep["images_total"])


def test_objects_ledger_matches_a_walk_after_gc_and_follows_changes_behind_its_back(cli, root, tmp_path):
    """df, gc and fsck read the objects dir's numbers from a ledger instead of lstat'ing every object:
    the numbers gc leaves there are the ones a walk finds, and an object written behind the
    store's back is seen (Unreferenced) and swept."""
    import time

    load(cli, tmp_path, "example.com/app:1", [app(1)])
    load(cli, tmp_path, "example.com/app:2", [app(2)])
    time.sleep(0.1)                       # a stamp younger than 50 ms is never recorded
    walked = adds_up(cli, root)
    assert _ledger(root) is not None
    assert _numbers(adds_up(cli, root)) == _numbers(walked)       # read from the ledger: the same
    # rmi + gc: gc writes the numbers it leaves; a walk finds the same, and both add up to du
    cli("rmi", "example.com/app:1", check=True)
    cli("gc", check=True)
    kept = adds_up(cli, root)
    assert _ledger(root, drop=True) is not None             # gc wrote it
    assert _numbers(adds_up(cli, root)) == _numbers(kept)
    # an object nobody links, written behind the store's back: df counts it, gc sweeps it
    time.sleep(0.1)
    stray = root / "objects" / "ab" / ("cd" * 31)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"s" * 10000)
    rep = adds_up(cli, root)
    by = {r["type"]: r for r in rep["summary"]}
    assert by["Unreferenced"]["size"] >= 10000
    cli("gc", check=True)
    assert not stray.exists()
    assert (tree(root, tm.oci_layout(tmp_path / "y", [app(2)])["diff_ids"][0]) / "opt/lib.so").read_bytes() == BIG
    adds_up(cli, root)
    assert cli("fsck", check=True).returncode == 0
