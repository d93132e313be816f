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
from test_contents import load, sql

MB = 1 << 20


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
