"""save and load: archives the peers read and write (skopeo, podman), round trips between stores.

What a user notices: the digests survive pull -> save -> load (another store) -> run; skopeo and
podman read what save writes; load reads what skopeo and podman write; a blob already stored is
not written again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from checks import open_store

needs_root = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="container run / podman need root on Linux")


def _pull(cli, ref, **kw):
    r = cli("pull", "-q", ref, **kw)
    assert r.returncode == 0, r.stderr


def _image(cli, ref, root):
    r = cli("inspect", ref, root=root)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)[0]
    return doc["Container"]["ManifestDigest"], doc["Id"], doc["RootFS"]["Layers"]


def _members(path):
    with tarfile.open(path) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_save_docker_archive_layout(cli, root, pushed, tmp_path):
    img = pushed["layered"]
    _pull(cli, img.ref)
    out = tmp_path / "app.tar"
    r = cli("save", "-o", str(out), img.ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    names = _members(out)
    for n in ("manifest.json", "repositories", "oci-layout", "index.json"):
        assert n in names
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())
        index = json.loads(tf.extractfile("index.json").read())
        # the blobs are the registry's bytes: manifest, config and compressed layers by their digests
        assert tf.extractfile(f"blobs/sha256/{img.manifest_digest[7:]}").read() == \
            subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{img.ref}"],
                           capture_output=True, check=True).stdout
    assert manifest == [{"Config": f"blobs/sha256/{img.config_digest[7:]}",
                         "RepoTags": [img.ref.split("/", 1)[0] + "/test/layered:latest"],
                         "Layers": [f"blobs/sha256/{d[7:]}" for d in img.layer_digests]}]
    assert [m["digest"] for m in index["manifests"]] == [img.manifest_digest]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    for d in img.layer_digests:
        assert names[f"blobs/sha256/{d[7:]}"].size == next(x.size for x in img.layers if x.digest == d)
    # skopeo reads it both ways, with the same config
    for transport in (f"docker-archive:{out}", f"oci-archive:{out}"):
        r = subprocess.run(["skopeo", "inspect", "--config", transport], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rootfs"]["diff_ids"] == img.diff_ids


def test_round_trip_into_another_store(cli, root, pushed, tmp_path):
    """pull -> save -> load into another store: identical manifest and config digests, tag kept."""
    img = pushed["layered"]
    _pull(cli, img.ref)
    out = tmp_path / "app.tar"
    assert cli("save", "-o", str(out), img.ref).returncode == 0
    other = tmp_path / "other"
    r = cli("load", "-i", str(out), root=other)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Loaded image: {img.ref}"
    assert _image(cli, img.ref, other) == _image(cli, img.ref, root)
    for layer in img.layers:
        assert (other / "layers" / layer.diff_id[7:]).is_dir()
    assert not list((other / "layers").glob(".tmp-*"))
    # loading again stores nothing new: same blob files (inodes), same rows
    before = {p.name: p.stat().st_ino for p in (other / "blobs" / "sha256").iterdir()}
    r = cli("load", "-i", str(out), root=other)
    assert r.returncode == 0, r.stderr
    assert {p.name: p.stat().st_ino for p in (other / "blobs" / "sha256").iterdir()} == before
    s = open_store(other)
    from container.schema import Blob, Image
    assert Image.select().count() == 1
    assert Blob.get_by_id(img.manifest_digest).refs == 1
    s.close()


def test_load_reuses_blobs_already_pulled(cli, root, pushed, tmp_path):
    shared_a, shared_b = pushed["shared-a"], pushed["shared-b"]
    _pull(cli, shared_a.ref)
    _pull(cli, shared_b.ref)
    out = tmp_path / "b.tar"
    assert cli("save", "-o", str(out), shared_b.ref).returncode == 0
    other = tmp_path / "other"
    _pull(cli, shared_a.ref, root=other)
    common = set(shared_a.layer_digests) & set(shared_b.layer_digests)
    assert common
    inodes = {d: (other / "blobs" / "sha256" / d[7:]).stat().st_ino for d in common}
    r = cli("-v", "load", "-i", str(out), root=other)
    assert r.returncode == 0, r.stderr
    for d in common:
        assert f"{d[7:19]}: Already exists" in r.stderr
        assert (other / "blobs" / "sha256" / d[7:]).stat().st_ino == inodes[d]
    assert _image(cli, shared_b.ref, other) == _image(cli, shared_b.ref, root)


def test_save_to_stdout_and_load_from_stdin(cli, root, pushed, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    out = tmp_path / "piped.tar"
    with open(out, "wb") as f:
        r = subprocess.run([str(cli.exe), "--root", str(root), "save", img.ref], stdout=f,
                           stderr=subprocess.PIPE, env=cli.env)
    assert r.returncode == 0, r.stderr
    assert "manifest.json" in _members(out)
    other = tmp_path / "other"
    with open(out, "rb") as f:
        r = subprocess.run([str(cli.exe), "--root", str(other), "load"], stdin=f, capture_output=True,
                           text=True, env=cli.env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Loaded image: {img.ref}"
    assert not [p for p in (other / "ingest").iterdir() if p.name.startswith(".load-")]
    # gzip-compressed archives load too (docker load accepts them)
    subprocess.run(["gzip", "-k", str(out)], check=True)
    r = cli("load", "-i", str(out) + ".gz", root=tmp_path / "third")
    assert r.returncode == 0, r.stderr
    assert _image(cli, img.ref, tmp_path / "third") == _image(cli, img.ref, root)


def test_save_refuses_a_terminal(cli, root, pushed):
    import pty

    img = pushed["busybox"]
    _pull(cli, img.ref)
    master, slave = pty.openpty()
    try:
        r = subprocess.run([str(cli.exe), "--root", str(root), "save", img.ref], stdout=slave,
                           stderr=subprocess.PIPE, text=True, env=cli.env, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 1
    assert "refusing to write an archive to a terminal" in r.stderr


def test_oci_formats(cli, root, pushed, tmp_path):
    img = pushed["zstd"]
    _pull(cli, img.ref)
    d = tmp_path / "layout"
    r = cli("save", "--format", "oci-dir", "-o", str(d), img.ref)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["blobs", "index.json", "oci-layout"]
    r = subprocess.run(["skopeo", "inspect", "--config", f"oci:{d}:latest"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rootfs"]["diff_ids"] == img.diff_ids
    a = tmp_path / "img.oci.tar"
    assert cli("save", "--format", "oci-archive", "-o", str(a), img.ref).returncode == 0
    assert "manifest.json" not in _members(a)
    for src in (d, a):
        other = tmp_path / f"o-{src.name}"
        r = cli("load", "-i", str(src), root=other)
        assert r.returncode == 0, r.stderr
        assert _image(cli, img.ref, other) == _image(cli, img.ref, root)


def test_save_several_images_and_ids(cli, root, pushed, tmp_path):
    a, b = pushed["shared-a"], pushed["shared-b"]
    _pull(cli, a.ref)
    _pull(cli, b.ref)
    out = tmp_path / "two.tar"
    r = cli("save", "-o", str(out), a.ref, b.config_digest[7:19])
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())
    assert [m["RepoTags"] for m in manifest] == [[a.ref], None]
    shared = [n for n in _members(out) if n.startswith("blobs/")]
    assert len(shared) == len(set(shared))
    r = cli("load", "-i", str(out), root=tmp_path / "other")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"Loaded image: {a.ref}", f"Loaded image ID: {b.config_digest}"]
    r = cli("save", "-o", str(tmp_path / "x.tar"), "nosuch:image")
    assert r.returncode == 1 and "No such image: nosuch:image" in r.stderr
    assert not (tmp_path / "x.tar").exists() and not list(tmp_path.glob(".x.tar.tmp-*"))


def test_load_what_skopeo_writes(cli, root, pushed, tmp_path):
    img = pushed["layered"]
    _pull(cli, img.ref)
    cases = {
        "docker-archive": f"docker-archive:{tmp_path / 'da.tar'}:example.com/app:v1",
        "oci": f"oci:{tmp_path / 'ocidir'}:example.com/app:v1",
        "oci-archive": f"oci-archive:{tmp_path / 'oa.tar'}:example.com/app:v1",
    }
    for kind, dest in cases.items():
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{img.ref}", dest],
                       check=True, capture_output=True)
        path = dest.split(":")[1]
        other = tmp_path / f"store-{kind}"
        r = cli("load", "-i", path, root=other)
        assert r.returncode == 0, (kind, r.stderr)
        assert r.stdout.strip() == "Loaded image: example.com/app:v1", kind
        mdigest, config, layers = _image(cli, "example.com/app:v1", other)
        assert config == img.config_digest and layers == img.diff_ids, kind
        if kind != "docker-archive":       # skopeo keeps the manifest bytes in OCI layouts
            assert mdigest == img.manifest_digest


def test_load_skips_buildkit_attestations(cli, root, pushed, tmp_path):
    """A buildx/BuildKit OCI layout: index.json -> an index of the image and an attestation manifest
    (platform unknown/unknown, in-toto layer, no rootfs in its config). load takes the image, as
    pull does from a registry, instead of failing on the attestation's config."""
    import hashlib

    img = pushed["busybox"]
    d = tmp_path / "bk"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{img.ref}", f"oci:{d}:v1"],
                   check=True, capture_output=True)
    blobs = d / "blobs" / "sha256"

    def put(raw: bytes) -> str:
        dg = hashlib.sha256(raw).hexdigest()
        (blobs / dg).write_bytes(raw)
        return "sha256:" + dg

    top = json.loads((d / "index.json").read_text())
    image = top["manifests"][0]
    statement = b'{"_type": "https://in-toto.io/Statement/v0.1"}'
    cfg = b'{"architecture": "unknown", "os": "unknown", "config": {}}'
    att = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cfg),
                                 "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": put(statement),
                                  "size": len(statement)}]}).encode()
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {k: v for k, v in image.items() if k != "annotations"} | {"platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(att), "size": len(att),
         "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": image["digest"]}}]}).encode()
    top["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(nested),
                         "size": len(nested), "annotations": image.get("annotations", {})}]
    (d / "index.json").write_text(json.dumps(top))
    r = cli("load", "-i", str(d))
    assert r.returncode == 0, r.stderr
    _, config, layers = _image(cli, r.stdout.split()[-1], root)
    assert config == img.config_digest and layers == img.diff_ids
    assert cli("images", "-q").stdout.split() == [img.config_digest[7:19]]


@needs_root
def test_podman_loads_what_save_writes_and_back(cli, root, pushed, tmp_path, podman):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    out = tmp_path / "bb.tar"
    assert cli("save", "-o", str(out), img.ref).returncode == 0
    r = podman("load", "-i", str(out))
    assert r.returncode == 0, r.stderr
    r = podman("image", "inspect", img.ref)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["Id"] == img.config_digest[7:]
    # podman save (docker-archive, uncompressed layers) loads here, config digest unchanged
    ps = tmp_path / "podman-save.tar"
    r = podman("save", "-o", str(ps), img.ref)
    assert r.returncode == 0, r.stderr
    other = tmp_path / "other"
    r = cli("load", "-i", str(ps), root=other)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"Loaded image: {img.ref}"
    _m, config, layers = _image(cli, img.ref, other)
    assert config == img.config_digest and layers == img.diff_ids
    s = open_store(other)
    from container.schema import ImageLayer
    assert {r.media_type for r in ImageLayer.select()} == {"application/vnd.docker.image.rootfs.diff.tar"}
    s.close()


@needs_root
def test_round_trip_runs(cli, root, pushed, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    out = tmp_path / "bb.tar"
    assert cli("save", "-o", str(out), img.ref).returncode == 0
    other = tmp_path / "other"
    assert cli("load", "-i", str(out), root=other).returncode == 0
    r = cli("run", "--rm", img.ref, "echo", "hello from a loaded image", root=other)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from a loaded image"


# -- export / import -------------------------------------------------------------------------------
def _tar_names(path):
    with tarfile.open(path) as tf:
        return {m.name: m for m in tf.getmembers()}


@needs_root
def test_export_merges_the_container_changes_and_import_runs_it(cli, root, pushed, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    r = cli("run", "--name", "c1", img.ref, "sh", "-c",
            "echo changed > /etc/new && rm /bin/ls && mkdir -p /data/sub && echo x > /data/sub/f && rm -rf /etc/ssl")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "fs.tar"
    r = cli("export", "c1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    names = _tar_names(out)
    assert "etc/new" in names and "data/sub/f" in names
    assert "bin/ls" not in names and "bin/busybox" in names
    assert not [n for n in names if n.startswith("etc/ssl")]
    assert not [n for n in names if ".wh." in n or n.startswith("upper")]
    with tarfile.open(out) as tf:
        assert tf.extractfile("etc/new").read() == b"changed\n"
    # stdout works too, and matches
    with open(tmp_path / "fs2.tar", "wb") as f:
        r = subprocess.run([str(cli.exe), "--root", str(root), "export", "c1"], stdout=f, stderr=subprocess.PIPE,
                           env=cli.env)
    assert r.returncode == 0, r.stderr
    assert set(_tar_names(tmp_path / "fs2.tar")) == set(names)

    # import it (gzip-compressed) as an image: one layer, host platform, the id printed as docker does
    subprocess.run(["gzip", "-k", str(out)], check=True)
    r = cli("import", str(out) + ".gz", "imported/fs:v1")
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    doc = json.loads(cli("inspect", "imported/fs:v1").stdout)[0]
    assert doc["Id"] == image_id
    assert len(doc["RootFS"]["Layers"]) == 1
    layer = doc["Container"]["Layers"][0]
    assert layer["MediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer["Digest"] == "sha256:" + __import__("hashlib").sha256(open(str(out) + ".gz", "rb").read()).hexdigest()
    r = cli("run", "--rm", "imported/fs:v1", "cat", "/etc/new", "/data/sub/f")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "changed\nx\n"
    r = cli("run", "--rm", "imported/fs:v1", "ls")
    assert r.returncode != 0


def test_import_from_stdin_and_bad_input(cli, root, tmp_path):
    import tarmaker as tm
    from checks import one_error, store_state

    data = tm.tar(tm.dir("etc/"), tm.file("etc/hello", b"hello\n"))
    with open(tmp_path / "r.tar", "wb") as f:
        f.write(data)
    with open(tmp_path / "r.tar", "rb") as f:
        r = subprocess.run([str(cli.exe), "--root", str(root), "import", "-", "plain:1"], stdin=f,
                           capture_output=True, text=True, env=cli.env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", "plain:1").stdout)[0]
    assert doc["RootFS"]["Layers"] == ["sha256:" + __import__("hashlib").sha256(data).hexdigest()]
    assert doc["Config"] == {} or not doc["Config"].get("Cmd")
    before = store_state(root)
    (tmp_path / "cut.tar").write_bytes(data[:700])
    assert "truncated" in one_error(cli("import", str(tmp_path / "cut.tar"), "bad:2"))
    assert "no such file" in one_error(cli("import", str(tmp_path / "missing.tar"), "bad:3"))
    assert "invalid reference format" in one_error(cli("import", str(tmp_path / "r.tar"), "Bad Name"))
    # a hardlink to a file the tar does not hold: no lower layer can hold it (podman refuses it too)
    (tmp_path / "link.tar").write_bytes(tm.tar(tm.file("a", b"a"), tm.hardlink("h", "no/such")))
    assert "base layer" in one_error(cli("import", str(tmp_path / "link.tar"), "bad:4"))
    assert store_state(root) == before
    # `..` is clamped at the layer's root, as umoci and docker do: nothing lands outside
    (tmp_path / "up.tar").write_bytes(tm.tar(tm.file("../escape", b"x")))
    r = cli("import", str(tmp_path / "up.tar"), "up:1")
    assert r.returncode == 0, r.stderr
    diff_id = json.loads(cli("inspect", "up:1").stdout)[0]["RootFS"]["Layers"][0]
    assert (root / "layers" / diff_id[7:] / "escape").is_file()
    assert not (tmp_path / "escape").exists() and not (root / "layers" / "escape").exists()


def test_an_untagged_image_survives_gc_until_image_prune(cli, root, tmp_path):
    """docker keeps <none> images until `image prune`: gc alone must not delete an image that
    `import` made without a name."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello")
        data = b"hi\n"
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    src = tmp_path / "rootfs.tar"
    src.write_bytes(buf.getvalue())
    r = cli("import", str(src))
    assert r.returncode == 0, r.stderr
    iid = r.stdout.strip()
    assert cli("gc").returncode == 0
    assert cli("images", "-q", "--no-trunc").stdout.split() == [iid]
    assert cli("image", "prune", "-f").returncode == 0
    assert cli("images", "-q").stdout.strip() == ""


def test_export_keeps_file_capabilities_and_user_xattrs(cli, root, tmp_path):
    """export writes security.capability and user.* xattrs as SCHILY.xattr records (docker keeps
    the one, podman both), so an exported-then-imported ping still has its capability; the
    store's own bookkeeping xattrs stay out."""
    import tarmaker as tm

    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_net_raw+ep
    layer = tm.tar(tm.dir("bin"), tm.file("bin/ping", b"\x7fELF", mode=0o755,
                                            pax_extra={"SCHILY.xattr.security.capability": cap}),
                   tm.file("note", b"n", pax_extra={"SCHILY.xattr.user.origin": b"handmade"}),
                   tm.hardlink("bin/ping2", "bin/ping"))
    (tmp_path / "x.tar").write_bytes(layer)
    assert cli("import", str(tmp_path / "x.tar"), "xa:1").returncode == 0
    assert cli("create", "--name", "x1", "xa:1", "/bin/ping").returncode == 0
    r = cli("export", "x1", "-o", str(tmp_path / "out.tar"))
    assert r.returncode == 0, r.stderr
    with tarfile.open(tmp_path / "out.tar") as tf:
        got = {m.name: {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
               for m in tf.getmembers()}
    assert got["bin/ping"]["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == cap
    assert got["note"] == {"SCHILY.xattr.user.origin": "handmade"}
    assert not [k for m in got.values() for k in m if "container" in k or "overlay" in k]
    # and back: the imported export holds the capability again
    assert cli("import", str(tmp_path / "out.tar"), "xa:2").returncode == 0
    diff_id = json.loads(cli("inspect", "xa:2").stdout)[0]["RootFS"]["Layers"][0]
    assert os.getxattr(root / "layers" / diff_id[7:] / "bin/ping", "security.capability") == cap


def test_load_of_a_multi_platform_layout_takes_the_host_image(cli, root, pushed, tmp_path):
    """`skopeo copy --all` of a multi-platform image into an OCI layout: load takes the host's image
    under the layout's name, as pull and podman load do, not every platform as <none> images."""
    from container.engine.image import platform as plat

    img = pushed["multiarch"]
    d = tmp_path / "all"
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{img.ref}", f"oci:{d}:v1"],
                   check=True, capture_output=True)
    top = json.loads((d / "index.json").read_text())
    top["manifests"][0].setdefault("annotations", {})["io.containerd.image.name"] = img.ref
    (d / "index.json").write_text(json.dumps(top))
    r = cli("load", "-i", str(d))
    assert r.returncode == 0, r.stderr
    assert len(cli("images", "-q").stdout.split()) == 1, cli("images").stdout
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    host = plat.host()
    assert (doc["Os"], doc["Architecture"]) == (host.os, host.architecture)
    r = cli("run", "--rm", img.ref, "cat", "/etc/platform") if os.geteuid() == 0 else None
    assert r is None or r.stdout.startswith(f"linux/{host.architecture}"), r
