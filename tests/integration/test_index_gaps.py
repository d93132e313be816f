"""The contents index where a layer is unusual: GNU sparse files get their content hash (so diff
sees a changed sparse file and fsck --deep checks it), and a store indexed late (fsck --repair,
first use) records the same rows as one indexed at pull: in-layer hardlinks as "h", files
dedupe linked together as "f"."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import tarmaker as tm
from test_contents import sql

MB = 1 << 20


load = tm.load_layout


def gnu_sparse_tar(tmp_path, name: str, data: dict[int, bytes], size: int, fmt: str) -> bytes:
    """A layer made by GNU tar --sparse (fmt "posix": PAX 1.0 sparse; "gnu": old GNU 'S' members)
    holding `name`: a file of `size` bytes, zeros but for `data` at their offsets, and opt/link.img,
    a hardlink to it."""
    d = tmp_path / f"sparse-src-{fmt}-{len(os.listdir(tmp_path))}"
    d.mkdir()
    f = d / name
    with open(f, "wb") as w:
        w.truncate(size)
        for off, b in data.items():
            w.seek(off)
            w.write(b)
    os.utime(f, (1_650_000_000, 1_650_000_000))
    (d / "opt").mkdir()
    os.link(f, d / "opt/link.img")
    out = d.with_suffix(".tar")
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "--owner=0", "--group=0", "--numeric-owner",
                    "-cf", str(out), "-C", str(d), name, "opt"], check=True)
    return out.read_bytes()


def full(data: dict[int, bytes], size: int) -> bytes:
    b = bytearray(size)
    for off, x in data.items():
        b[off:off + len(x)] = x
    return bytes(b)


def test_sparse_files_have_their_content_hash_diff_and_fsck_see_them(cli, root, tmp_path, registry):
    one = {MB: b"hello", 3 * MB - 3: b"end"}
    two = {MB: b"HELLO", 3 * MB - 3: b"end"}              # same size, other bytes in a data region
    for tag, data, fmt in (("1", one, "posix"), ("2", two, "gnu")):
        layer = gnu_sparse_tar(tmp_path, "disk.img", data, 3 * MB, fmt)
        load(cli, tmp_path, f"example.com/sparse:{tag}", [layer])
    rows = sql(cli, "SELECT f.path, f.type, f.size, f.sha256, t.tag FROM file f JOIN image_layer il ON "
                    "il.diff_id = f.diff_id JOIN tag t ON t.image_id = il.image_id "
                    "WHERE f.path IN ('/disk.img', '/opt/link.img') ORDER BY t.tag, f.path")
    want = {"1": hashlib.sha256(full(one, 3 * MB)).hexdigest(), "2": hashlib.sha256(full(two, 3 * MB)).hexdigest()}
    assert [(r["tag"], r["path"], r["type"], r["size"], r["sha256"]) for r in rows] == [
        (t, p, k, 3 * MB, want[t]) for t in "12" for p, k in (("/disk.img", "f"), ("/opt/link.img", "h"))]
    # what find/sha256sum say of the unpacked tree
    layer_dir = root / "layers" / json.loads(cli("inspect", "example.com/sparse:1", check=True).stdout)[0][
        "RootFS"]["Layers"][-1][7:]
    assert hashlib.sha256((layer_dir / "disk.img").read_bytes()).hexdigest() == want["1"]
    assert os.stat(layer_dir / "disk.img").st_blocks * 512 < MB          # the holes are still holes

    d = json.loads(cli("diff", "--format", "json", "example.com/sparse:1", "example.com/sparse:2",
                       check=True).stdout)
    assert [x["path"] for x in d["changed"]] == ["/disk.img", "/opt/link.img"]

    assert cli("fsck", "--deep", check=True).returncode == 0
    with open(layer_dir / "disk.img", "r+b") as f:                        # a byte in a hole
        f.seek(2 * MB)
        f.write(b"x")
    r = cli("fsck", "--deep")
    assert r.returncode != 0 and "/disk.img: content differs" in r.stdout + r.stderr

    # pulled from a registry (engine/pull.py), not loaded: the same hash
    lay = tmp_path / "pushme"
    tm.oci_layout(lay, [gnu_sparse_tar(tmp_path, "disk.img", one, 3 * MB, "posix")])
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{lay}:latest",
                    f"docker://{registry.host}/test/sparse:1"], check=True, capture_output=True, timeout=120)
    other = tmp_path / "other-root"
    cli("pull", f"{registry.host}/test/sparse:1", root=other, check=True)
    got = json.loads(cli("sql", "--format", "json", "SELECT sha256 FROM file WHERE path = '/disk.img'",
                         root=other, check=True).stdout)
    assert got == [{"sha256": want["1"]}]


FILE_ROWS = ("SELECT f.path, f.type, f.mode, f.uid, f.gid, f.size, f.mtime, f.link, f.xattrs, f.whiteout, f.sha256 "
             "FROM file f ORDER BY f.diff_id, f.path")


def links_and_twins() -> list[bytes]:
    """A layer with in-layer hardlinks (a file with two more names, in name order as builders write
    them, each header with the file's own mode, as tar writes them) and duplicate files (the same
    bytes and metadata: dedupe makes them one inode)."""
    twin = tm.seed_bytes(20_000, seed=3)
    return [tm.tar(tm.dir("bin/"), tm.file("bin/busybox", b"BB" * 5000, mode=0o755), tm.hardlink("bin/ls", "bin/busybox", mode=0o755),
                   tm.hardlink("bin/sh", "bin/busybox", mode=0o755), tm.dir("usr/"), tm.dir("usr/share/"),
                   tm.file("usr/share/a.dat", twin), tm.file("usr/share/b.dat", twin), tm.file("usr/share/c.dat", twin),
                   tm.file("usr/share/other", b"o" * 3000),
                   # walk order: etc/x/ (and its file) before etc/x.conf, though "/etc/x.conf" < "/etc/x/c"
                   tm.dir("etc/"), tm.dir("etc/x/"), tm.file("etc/x/c", b"conf"), tm.hardlink("etc/x.conf", "etc/x/c")),
            tm.tar(tm.dir("opt/"), tm.file("opt/copy-of-a", twin), tm.hardlink("opt/ln", "usr/share/other"))]


def test_indexed_late_records_what_the_pull_records(cli, root, tmp_path):
    layers = links_and_twins()
    at_pull, late = tmp_path / "at-pull", tmp_path / "late"
    load(cli, tmp_path, "example.com/links:1", layers, root=at_pull)
    load(cli, tmp_path, "example.com/links:1", layers, root=late, env={"CONTAINER_INDEX": "0"})
    want = json.loads(cli("sql", "--format", "json", FILE_ROWS, root=at_pull, check=True).stdout)
    by = {r["path"]: r for r in want}
    assert by["/bin/ls"]["type"] == "h" and by["/bin/ls"]["link"] == "/bin/busybox" and by["/bin/ls"]["size"] == 10000
    assert [by[f"/usr/share/{n}.dat"]["type"] for n in "abc"] == ["f", "f", "f"]
    assert by["/etc/x.conf"]["type"] == "h" and by["/etc/x.conf"]["link"] == "/etc/x/c"
    # dedupe made the twins one inode in the tree indexed at pull
    tree = at_pull / "layers" / json.loads(cli("inspect", "example.com/links:1", root=at_pull, check=True).stdout)[0][
        "RootFS"]["Layers"][0][7:]
    assert os.stat(tree / "usr/share/a.dat").st_ino == os.stat(tree / "usr/share/c.dat").st_ino

    listing = cli("files", "-l", "example.com/links:1", root=at_pull, check=True).stdout
    assert cli("files", "-l", "example.com/links:1", root=late, check=True).stdout == listing      # (first use)
    assert json.loads(cli("sql", "--format", "json", FILE_ROWS, root=late, check=True).stdout) == want
    assert json.loads(cli("sql", "--format", "json", "SELECT source FROM layer_index", root=late,
                          check=True).stdout) == [{"source": "tree"}] * 2

    # the deduplicated tree indexed again from itself (its rows lost): the twins stay files
    import sqlite3
    with sqlite3.connect(at_pull / "metadata.db") as c:
        for t in ("file", "layer_package", "package", "layer_index"):
            c.execute(f"DELETE FROM {t}")
    c.close()
    r = cli("fsck", "--repair", root=at_pull, check=True)
    assert "indexed 2 layer(s)" in r.stdout + r.stderr
    again = json.loads(cli("sql", "--format", "json", FILE_ROWS, root=at_pull, check=True).stdout)
    assert again == want           # (an object with hardlinks of the layer too: the tree's dedupe note)
    assert {r["path"]: r["type"] for r in again} == {r["path"]: r["type"] for r in want}
    assert cli("fsck", "--deep", root=at_pull, check=True).returncode == 0
    assert cli("fsck", "--deep", root=late, check=True).returncode == 0
