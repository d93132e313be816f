"""load against bad and malicious archives: one-line errors, the store as it was, nothing written
outside the store.

Each archive is built by hand (tarmaker) from a valid OCI layout, then broken one way: truncated, a
manifest naming a missing blob, a blob whose bytes are not its digest, member names that climb out
(`../x`, absolute), a member header claiming 10 GB, symlinks that point outside the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
import tarmaker as tm
from checks import one_error, store_state


def _layers():
    return [tm.tar(tm.dir("etc/"), tm.file("etc/hello", b"hello\n")),
            tm.tar(tm.file("etc/second", tm.seed_bytes(5000)))]


def _layout(d):
    info = tm.oci_layout(d, _layers())
    idx = json.loads((d / "index.json").read_text())
    idx["manifests"][0]["annotations"] = {"io.containerd.image.name": "example.com/bad:1"}
    (d / "index.json").write_text(json.dumps(idx))
    return info


def _tar_of_dir(d, out, extra=()):
    with tarfile.open(out, "w") as tf:
        for p in sorted(d.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(d)), recursive=False)
        for ti, data in extra:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return out


@pytest.fixture
def seeded(cli, root, tmp_path):
    """A store holding one loaded image (so 'as it was' is not just empty)."""
    good = tmp_path / "good"
    tm.oci_layout(good, [tm.tar(tm.file("base", b"base\n"))], tag="latest")
    idx = json.loads((good / "index.json").read_text())
    idx["manifests"][0]["annotations"] = {"io.containerd.image.name": "example.com/good:1"}
    (good / "index.json").write_text(json.dumps(idx))
    r = cli("load", "-i", str(good))
    assert r.returncode == 0, r.stderr
    return store_state(root)


def _outside(tmp_path, root):
    return sorted(str(p) for p in tmp_path.rglob("*") if root not in p.parents and p != root)


def _refused(cli, root, tmp_path, before, path, want):
    outside = _outside(tmp_path, root)
    r = cli("load", "-i", str(path))
    line = one_error(r)
    assert want in line, line
    assert store_state(root) == before
    assert not list((root / "layers").glob(".tmp-*"))
    assert not list((root / "ingest").glob(".load-*"))
    assert _outside(tmp_path, root) == outside
    return line


def test_truncated_archive(cli, root, tmp_path, seeded):
    d = tmp_path / "l"
    _layout(d)
    path = _tar_of_dir(d, tmp_path / "full.tar")
    full = path.read_bytes()
    with tarfile.open(path) as tf:
        big = max(tf.getmembers(), key=lambda m: m.size)
        last = max(tf.getmembers(), key=lambda m: m.offset)
    for cut in (big.offset_data + big.size // 2, last.offset_data + 1, big.offset + 100, 700):
        p = tmp_path / f"cut{cut}.tar"
        p.write_bytes(full[:cut])
        _refused(cli, root, tmp_path, seeded, p, "")


def test_manifest_names_a_missing_blob(cli, root, tmp_path, seeded):
    d = tmp_path / "l"
    info = _layout(d)
    (d / "blobs" / "sha256" / info["layers"][1][0][7:]).unlink()
    _refused(cli, root, tmp_path, seeded, d, "no ")
    _refused(cli, root, tmp_path, seeded, _tar_of_dir(d, tmp_path / "m.tar"), "archive has no member")


def test_blob_with_the_wrong_digest(cli, root, tmp_path, seeded):
    d = tmp_path / "l"
    info = _layout(d)
    p = d / "blobs" / "sha256" / info["layers"][1][0][7:]
    other = tm.tar(tm.file("etc/evil", tm.seed_bytes(5000, seed=1)))
    import gzip
    p.write_bytes(gzip.compress(other, mtime=0))
    _refused(cli, root, tmp_path, seeded, d, "171 bytes, the manifest says 173")
    # the same size, one byte changed: the digest is what is reported (not the gzip error it causes)
    b = bytearray(gzip.compress(_layers()[1], mtime=0))
    b[len(b) // 2] ^= 0x55
    p.write_bytes(bytes(b))
    line = _refused(cli, root, tmp_path, seeded, d, "digest mismatch")
    assert info["layers"][1][0][:19] in line
    # and a config whose bytes are not its digest
    d2 = tmp_path / "l2"
    _layout(d2)
    idx = json.loads((d2 / "index.json").read_text())
    mpath = d2 / "blobs" / "sha256" / idx["manifests"][0]["digest"][7:]
    m = json.loads(mpath.read_bytes())
    cpath = d2 / "blobs" / "sha256" / m["config"]["digest"][7:]
    cpath.write_bytes(cpath.read_bytes().replace(b"amd64", b"arm64"))
    line = _refused(cli, root, tmp_path, seeded, d2, "digest mismatch")
    assert m["config"]["digest"][:19] in line


@pytest.mark.parametrize("name", ["../x", "/etc/x", "blobs/../../x"])
def test_member_names_that_climb_out(cli, root, tmp_path, seeded, name):
    d = tmp_path / "l"
    _layout(d)
    ti = tarfile.TarInfo(name)
    ti.size = 3
    p = _tar_of_dir(d, tmp_path / "t.tar", [(ti, b"bad")])
    _refused(cli, root, tmp_path, seeded, p, "refused")
    assert not (tmp_path / "x").exists()


def test_huge_member_header(cli, root, tmp_path, seeded):
    d = tmp_path / "l"
    _layout(d)
    path = _tar_of_dir(d, tmp_path / "t.tar")
    with tarfile.open(path) as tf:
        end = max(m.offset_data + (m.size + 511) // 512 * 512 for m in tf.getmembers())
    raw = path.read_bytes()[:end] + tm.header("blobs/sha256/" + "0" * 64, size=10 << 30) + b"x" * 512 + tm.end()
    p = tmp_path / "huge.tar"
    p.write_bytes(raw)
    _refused(cli, root, tmp_path, seeded, p, "truncated")


def test_symlinks_pointing_outside(cli, root, tmp_path, seeded):
    secret = tmp_path / "secret"
    secret.write_text("not for the store\n")
    # a docker-archive whose layer.tar is a symlink out of the archive (absolute, then relative)
    layer = tm.tar(tm.file("etc/hello", b"hi\n"))
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    chex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{chex}.json", "RepoTags": ["evil:1"], "Layers": ["abc/layer.tar"]}]).encode()
    for target in (str(secret), "../../../../../../" + str(secret).lstrip("/")):
        out = tmp_path / "evil.tar"
        with tarfile.open(out, "w") as tf:
            for name, data in (("manifest.json", manifest), (f"{chex}.json", config)):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo("abc/layer.tar")
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
        _refused(cli, root, tmp_path, seeded, out, "leaves the archive")
    # an OCI layout directory whose blob is a symlink out of it
    d = tmp_path / "l"
    info = _layout(d)
    blob = d / "blobs" / "sha256" / info["layers"][0][0][7:]
    blob.unlink()
    os.symlink(secret, blob)
    _refused(cli, root, tmp_path, seeded, d, "leaving the directory")


def test_not_an_archive(cli, root, tmp_path, seeded):
    p = tmp_path / "junk"
    p.write_bytes(b"hello, not a tar" * 100)
    _refused(cli, root, tmp_path, seeded, p, "not a tar archive")
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(cli, root, tmp_path, seeded, empty, "not an image archive")
    _refused(cli, root, tmp_path, seeded, tmp_path / "missing.tar", "no such file")
