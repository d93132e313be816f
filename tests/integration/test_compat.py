"""Images the peers accept (issue 11, items 1-8), built the way such images are made and pushed to the
test registry with skopeo; `container pull` takes each, `fsck --deep` stays clean after it, and where
umoci accepts the image the unpacked tree equals `umoci unpack`'s.

    1 layers without the end-of-archive marker, zero-byte and empty-compressed layer blobs
    2 an index whose entries have no platform     3 writes through a same-layer symlink
    4 a config without os/architecture            5 GNU sparse files (GNU tar --sparse, every format)
    7 a signed schema 1 manifest                  8 an arm64 image on another host: pulled with a WARNING
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

import tarmaker as tm  # noqa: E402
from checks import one_error, open_store, tree  # noqa: E402

from tools.images import host_platform, skopeo  # noqa: E402

ROOT = os.geteuid() == 0
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
HOST_ARCH = host_platform()[1]
OTHER_ARCH = "arm64" if HOST_ARCH != "arm64" else "amd64"


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layout:
    """An OCI image layout written blob by blob: layers exactly as given (any bytes, any media type)."""

    def __init__(self, path: Path):
        self.path = path
        (path / "blobs/sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs: list[dict] = []

    def put(self, data: bytes) -> dict:
        (self.path / "blobs/sha256" / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    def image(self, layers: list[tuple[bytes, str, bytes]], *, arch: str | None = HOST_ARCH,
              os_: str | None = "linux") -> dict:
        """layers: (blob, media type, uncompressed tar); returns the manifest's descriptor."""
        config: dict = {"config": {"Cmd": ["sh"]},
                        "rootfs": {"type": "layers", "diff_ids": [sha(t) for _b, _m, t in layers]}}
        if arch is not None:
            config["architecture"] = arch
        if os_ is not None:
            config["os"] = os_
        cfg = json.dumps(config).encode()
        m = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": {"mediaType": MT_CONFIG, **self.put(cfg)},
             "layers": [{"mediaType": mt, **self.put(b)} for b, mt, _t in layers]}
        return {"mediaType": MT_MANIFEST, **self.put(json.dumps(m).encode())}

    def index(self, entries: list[tuple[dict, dict | None]]) -> dict:
        """entries: (manifest descriptor, platform or None)."""
        idx = {"schemaVersion": 2, "mediaType": MT_INDEX,
               "manifests": [{**d, **({"platform": p} if p else {})} for d, p in entries]}
        return {"mediaType": MT_INDEX, **self.put(json.dumps(idx).encode())}

    def tag(self, desc: dict, tag: str) -> str:
        self.refs.append({**desc, "annotations": {"org.opencontainers.image.ref.name": tag}})
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.refs}))
        return tag


def push(layout: Layout, tag: str, registry, repo: str) -> str:
    """skopeo copy, blobs and manifests byte for byte; returns the reference to pull."""
    skopeo("copy", "-q", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout.path}:{tag}",
           f"docker://{registry.host}/{repo}:{tag}")
    return f"{registry.host}/{repo}:{tag}"


def gz(t: bytes) -> tuple[bytes, str, bytes]:
    return gzip.compress(t, mtime=0), MT_GZ, t


def fsck_clean(cli) -> None:
    r = cli("fsck", "--deep")
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout + r.stderr


def merged(root: Path, diff_ids: list[str]) -> Path:
    from container.engine.layer.snapshot import ensure_snapshot

    store = open_store(root)
    try:
        return ensure_snapshot(store, diff_ids)[1]
    finally:
        store.close()


def umoci_tree(layout: Layout, tag: str, bundle: Path) -> dict:
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout.path}:{tag}", str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return tree(bundle / "rootfs")


def same_as_umoci(root: Path, layout: Layout, tag: str, diff_ids: list[str], tmp: Path) -> None:
    if not ROOT or not shutil.which("umoci"):
        return
    ours, theirs = tree(merged(root, diff_ids)), umoci_tree(layout, tag, tmp / f"bundle-{tag}")
    diff = [f"{p}: ours={ours.get(p)} umoci={theirs.get(p)}" for p in sorted(set(ours) | set(theirs))
            if ours.get(p) != theirs.get(p)]
    assert diff == []


# -- 1. the end of a layer ------------------------------------------------------------------------------
def test_layers_without_end_marker_and_empty_blobs_pull(cli, root, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    no_marker = tm.tar(tm.dir("etc"), tm.file("etc/os-release", b"ID=test\n"), eof=False)   # Go's tar.Writer.Flush
    layers = [gz(no_marker), (b"", MT_GZ, b""), (gzip.compress(b"", mtime=0), MT_GZ, b""),
              (zstandard.ZstdCompressor().compress(b""), MT_ZST, b""), (b"", MT_TAR, b""),
              gz(tm.tar(tm.file("after", b"still here\n"), eof=False))]
    tag = lay.tag(lay.image(layers), "ends")
    ref = push(lay, tag, registry, "compat/ends")
    r = cli("pull", ref)
    assert r.returncode == 0, r.stderr
    fsck_clean(cli)
    diff_ids = [sha(t) for _b, _m, t in layers]
    tree_ = merged(root, diff_ids)
    assert (tree_ / "etc/os-release").read_bytes() == b"ID=test\n" and (tree_ / "after").exists()
    # umoci's gzip reader refuses a zero-byte gzip blob: compare on the layers it reads
    lay2 = Layout(tmp_path / "oci2")
    keep = [layers[0], layers[2], layers[5]]
    same_as_umoci(root, lay2, lay2.tag(lay2.image(keep), "ends"), [sha(t) for _b, _m, t in keep], tmp_path)


def test_layer_cut_inside_an_entry_is_an_error_naming_the_layer(cli, root, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    cut = tm.tar(tm.file("big", tm.seed_bytes(5000)))[:512 + 2048]
    blob = gzip.compress(cut, mtime=0)
    tag = lay.tag(lay.image([(blob, MT_GZ, cut)]), "cut")
    ref = push(lay, tag, registry, "compat/cut")
    line = one_error(cli("pull", ref))
    assert "truncated" in line and sha(blob)[:19] in line, line


# -- 2. index entries without a platform ------------------------------------------------------------------
def test_index_entries_without_platform_are_candidates(cli, root, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    mine = lay.image([gz(tm.tar(tm.file("which", b"mine\n")))])
    other = lay.image([gz(tm.tar(tm.file("which", b"other\n")))], arch=OTHER_ARCH)
    explicit = lay.image([gz(tm.tar(tm.file("which", b"explicit\n")))])
    # no platforms at all: the entry whose config is the host's
    t1 = lay.tag(lay.index([(other, None), (mine, None)]), "bare")
    # an explicit match comes before any entry without a platform
    t2 = lay.tag(lay.index([(mine, None), (explicit, {"os": "linux", "architecture": HOST_ARCH})]), "mixed")
    # only another platform's config: refused, and the error says what there is
    t3 = lay.tag(lay.index([(other, None)]), "foreign")
    for t in (t1, t2, t3):
        push(lay, t, registry, "compat/noplat")
    host = f"{registry.host}/compat/noplat"
    for tag, want in ((t1, b"mine\n"), (t2, b"explicit\n")):
        r = cli("pull", f"{host}:{tag}")
        assert r.returncode == 0, r.stderr
        doc = json.loads(cli("inspect", f"{host}:{tag}").stdout)[0]
        layer = root / "layers" / doc["RootFS"]["Layers"][-1][7:]
        assert (layer / "which").read_bytes() == want
    line = one_error(cli("pull", f"{host}:{t3}"))
    assert f"linux/{OTHER_ARCH}" in line and "available: none" not in line, line
    fsck_clean(cli)


# -- 3. a write through a symlink of the same layer -----------------------------------------------------
def test_write_through_a_same_layer_symlink_lands_inside(cli, root, registry, tmp_path):
    outside = tmp_path / "outside"
    t = tm.tar(tm.dir("opt"), tm.dir("opt/real"), tm.symlink("app", "/opt/real"), tm.file("app/etc/conf", b"c\n"),
               tm.symlink("up", "../../../../.." + str(outside)), tm.file("up/escaped", b"no\n"),
               tm.symlink("a", "b"), tm.symlink("b", "opt"), tm.file("a/chained", b"x\n"))
    lay = Layout(tmp_path / "oci")
    tag = lay.tag(lay.image([gz(t)]), "symlink")
    r = cli("pull", push(lay, tag, registry, "compat/symlink"))
    assert r.returncode == 0, r.stderr
    assert not outside.exists()
    layer = root / "layers" / sha(t)[7:]
    assert (layer / "opt/real/etc/conf").read_bytes() == b"c\n" and (layer / "app").is_symlink()
    assert (layer / str(outside).lstrip("/") / "escaped").read_bytes() == b"no\n"
    assert (layer / "opt/chained").read_bytes() == b"x\n"
    fsck_clean(cli)
    same_as_umoci(root, lay, tag, [sha(t)], tmp_path)


# -- 4. a config without os/architecture ------------------------------------------------------------------
def test_config_without_os_and_architecture(cli, root, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    bare = lay.image([gz(tm.tar(tm.file("x", b"x")))], arch=None, os_=None)
    t1 = lay.tag(bare, "single")
    t2 = lay.tag(lay.index([(bare, None)]), "indexed")
    ref = push(lay, t1, registry, "compat/noarch")
    push(lay, t2, registry, "compat/noarch")
    r = cli("pull", ref)
    assert r.returncode == 0, r.stderr
    warn = [x for x in r.stderr.splitlines() if x.startswith("WARNING:")]
    assert len(warn) == 1 and "no os/architecture" in warn[0], r.stderr
    line = one_error(cli("pull", ref.replace(":single", ":indexed")))
    assert "no matching manifest" in line, line


# -- 5. GNU sparse files --------------------------------------------------------------------------------
def gnu_tar_sparse(tmp: Path, *args: str) -> bytes:
    src = tmp / f"src{len(list(tmp.iterdir()))}"
    src.mkdir()
    with open(src / "disk.img", "wb") as f:
        f.truncate(64 << 20)
        f.seek(4096)
        f.write(b"boot sector\n")
        f.seek(40 << 20)
        f.write(tm.seed_bytes(10_000))
    (src / "plain").write_bytes(b"not sparse\n")
    out = subprocess.run(["tar", "-C", str(src), "--sparse", "--owner=0", "--group=0", "--numeric-owner",
                          *args, "-cf", "-", "disk.img", "plain"], capture_output=True, check=True).stdout
    return out


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar")
def test_gnu_sparse_files_keep_their_holes(cli, root, registry, tmp_path):
    variants = {"gnu": ["--format=gnu"], "pax00": ["--format=posix", "--sparse-version=0.0"],
                "pax01": ["--format=posix", "--sparse-version=0.1"],
                "pax10": ["--format=posix", "--sparse-version=1.0"]}
    work = tmp_path / "work"
    work.mkdir()
    lay = Layout(tmp_path / "oci")
    layers = {name: gnu_tar_sparse(work, *args) for name, args in variants.items()}
    for name, t in layers.items():
        ref = push(lay, lay.tag(lay.image([gz(t)]), name), registry, "compat/sparse")
        r = cli("pull", ref)
        assert r.returncode == 0, (name, r.stderr)
        f = root / "layers" / sha(t)[7:] / "disk.img"
        st = os.stat(f)
        assert st.st_size == 64 << 20, name                      # the apparent size
        assert st.st_blocks * 512 < 1 << 20, (name, st.st_blocks)  # holes kept: ~20 KB on disk
        with open(f, "rb") as fh:
            fh.seek(4096)
            assert fh.read(12) == b"boot sector\n"
            fh.seek(40 << 20)
            assert fh.read(10_000) == tm.seed_bytes(10_000)
        assert (f.parent / "plain").read_bytes() == b"not sparse\n"
        ref_dir = tmp_path / f"gnutar-{name}"                   # GNU tar's own extraction
        ref_dir.mkdir()
        subprocess.run(["tar", "-C", str(ref_dir), "-xf", "-"], input=t, check=True)
        assert tree(f.parent) == tree(ref_dir), name
        if name != "gnu":                                        # umoci: "unknown typeflag 'S'"
            same_as_umoci(root, lay, name, [sha(t)], tmp_path)
    fsck_clean(cli)


def test_sparse_file_over_the_size_limit_is_refused(cli, root, registry, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    t = gnu_tar_sparse(work, "--format=posix")
    lay = Layout(tmp_path / "oci")
    ref = push(lay, lay.tag(lay.image([gz(t)]), "big"), registry, "compat/sparse-limit")
    line = one_error(cli("pull", ref, env={"CONTAINER_LAYER_MAX_BYTES": "16M"}))
    assert "too large" in line, line


# -- 7. schema 1 ------------------------------------------------------------------------------------------
def test_signed_schema1_is_reported_as_schema1(cli, root, proxy):
    payload = json.dumps({"schemaVersion": 1, "name": "compat/old", "tag": "latest", "architecture": "amd64",
                          "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
                          "history": [{"v1Compatibility": "{}"}]}, indent=3)
    signed = payload[:-2] + ',\n   "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", ' \
                            '"protected": "e30"}]\n}'
    p = proxy()
    for ctype in ("application/vnd.docker.distribution.manifest.v1+prettyjws", "application/json"):
        p.replace("/v2/compat/old/manifests/", status=200, body=signed.encode(), count=None,
                  headers={"Content-Type": ctype, "Docker-Content-Digest": sha(payload.encode())})
        line = one_error(cli("pull", f"{p.host}/compat/old:latest", env={"CONTAINER_REGISTRY_ATTEMPTS": "1"}))
        assert "schema 1" in line and "mismatch" not in line, line


# -- 8. another platform's image ---------------------------------------------------------------------------
def test_other_platform_image_pulls_with_a_warning(cli, root, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    ref = push(lay, lay.tag(lay.image([gz(tm.tar(tm.file("bin/app", b"\x7fELF", mode=0o755)))], arch=OTHER_ARCH),
                            "other"), registry, "compat/other")
    r = cli("pull", "-q", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("sha256:") and len(r.stdout.splitlines()) == 1
    warn = [x for x in r.stderr.splitlines() if x.startswith("WARNING:")]
    assert warn == [f"WARNING: The requested image's platform (linux/{OTHER_ARCH}) does not match the detected "
                    f"host platform (linux/{HOST_ARCH}) and no specific platform was requested"], r.stderr
    line = one_error(cli("pull", "--platform", f"linux/{HOST_ARCH}", ref))
    assert "does not match the specified platform" in line
