"""Pulling from a real docker-registry on loopback (images pushed with skopeo by the session fixtures).

What a user would notice: exit codes, the digest printed, `images`/`inspect` output, the files in
the store, and how many requests the registry saw (its own access log, not our logs).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from checks import json_lines, open_store, store_state

from container.engine.image import platform as plat


def test_pull_busybox(cli, root, pushed, registry):
    img = pushed["busybox"]
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {img.manifest_digest}" in r.stdout
    assert "Status: Downloaded newer image for" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == img.ref
    assert "Pull complete" in r.stderr
    # content: the layer tree and the blobs, by their digests
    for layer in img.layers:
        assert (root / "blobs" / "sha256" / layer.digest[7:]).is_file()
        tree = root / "layers" / layer.diff_id[7:]
        assert (tree / "bin" / "busybox").is_file()
        assert os.readlink(tree / "bin" / "sh") == "busybox"
    assert (root / "blobs" / "sha256" / img.manifest_digest[7:]).is_file()
    assert (root / "blobs" / "sha256" / img.config_digest[7:]).is_file()
    assert not list((root / "layers").glob(".tmp-*"))
    assert not [p for p in (root / "ingest").iterdir()]

    ls = cli("images")
    assert ls.returncode == 0
    line = [l for l in ls.stdout.splitlines() if l.startswith(f"{img.host}/{img.repo}")]
    assert line and "latest" in line[0] and img.config_digest[7:19] in line[0]
    js = json_lines(cli("images", "--format", "json").stdout)
    assert js[0]["ImageID"] == img.config_digest and js[0]["ID"] == img.config_digest[7:19] and js[0]["ManifestDigest"] == img.manifest_digest
    assert cli("images", "-q").stdout.split() == [img.config_digest[7:19]]

    ins = cli("inspect", img.ref)
    assert ins.returncode == 0, ins.stderr
    doc = json.loads(ins.stdout)[0]
    assert doc["Id"] == img.config_digest
    assert doc["RootFS"]["Layers"] == img.diff_ids
    assert doc["Config"]["Cmd"] == img.config["config"]["Cmd"]
    assert doc["Container"]["ManifestDigest"] == img.manifest_digest
    assert [l["Digest"] for l in doc["Container"]["Layers"]] == img.layer_digests
    # by short id and by full id too
    assert json.loads(cli("inspect", img.config_digest[7:19]).stdout)[0]["Id"] == img.config_digest

    # refcounts: each blob named once by this image
    from container.schema import Blob, Layer
    s = open_store(root)
    assert Blob.get_by_id(img.manifest_digest).refs == 1
    assert Blob.get_by_id(img.layers[0].digest).refs == 1
    assert Layer.get_by_id(img.diff_ids[0]).refs == 1
    s.close()


def test_second_pull_sends_no_manifest_get_and_no_blob_get(cli, pushed, registry):
    img = pushed["busybox"]
    assert cli("pull", img.ref).returncode == 0
    mark = registry.mark()
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    assert "Status: Image is up to date" in r.stdout
    assert registry.manifest_gets(since=mark) == 0          # HEAD only: the digest was stored
    assert registry.blob_gets(since=mark) == 0
    assert any(e.method == "HEAD" for e in registry.requests(since=mark))


def test_pull_quiet_prints_only_the_digest(cli, pushed):
    img = pushed["busybox"]
    r = cli("pull", "-q", img.ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == img.manifest_digest
    assert r.stderr == ""


def test_layered_keeps_whiteout_markers_per_layer(cli, root, pushed):
    img = pushed["layered"]
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    assert len(img.layers) >= 4
    names = []
    for layer in img.layers:
        tree = root / "layers" / layer.diff_id[7:]
        assert tree.is_dir()
        names += [p.name for p in tree.rglob(".wh.*")]
    assert names, "whiteout markers must be kept in the per-layer trees"
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    assert doc["Config"]["Entrypoint"] == img.config["config"].get("Entrypoint")
    assert doc["Config"]["WorkingDir"] == img.config["config"].get("WorkingDir", "")


def test_shared_layers_are_fetched_once(cli, root, pushed, registry):
    a, b = pushed["shared-a"], pushed["shared-b"]
    assert cli("pull", a.ref).returncode == 0
    mark = registry.mark()
    r = cli("pull", b.ref)
    assert r.returncode == 0, r.stderr
    shared = set(a.layer_digests) & set(b.layer_digests)
    own = [d for d in b.layer_digests if d not in shared]
    assert shared and own
    assert r.stderr.count("Already exists") == len(shared)
    for d in shared:
        assert registry.blob_gets(d, since=mark) == 0, d
    for d in own:
        assert registry.blob_gets(d, since=mark) == 1, d
    assert registry.blob_gets(b.config_digest, since=mark) == 1
    assert registry.blob_gets(since=mark) == len(own) + 1       # nothing else
    # refcounts: the shared blobs are named by both images
    from container.schema import Blob
    s = open_store(root)
    for d in shared:
        assert Blob.get_by_id(d).refs == 2
    s.close()


def test_multiarch_default_platform(cli, root, pushed):
    img = pushed["multiarch"]
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {img.manifest_digest}" in r.stdout     # the index digest, like docker
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    host = plat.host()
    assert (doc["Os"], doc["Architecture"]) == (host.os, host.architecture)
    assert doc["Container"]["IndexDigest"] == img.manifest_digest
    child = [b for p, b in img.platforms.items() if p.startswith(f"{host.os}/{host.architecture}")][0]
    assert doc["Container"]["ManifestDigest"] == child.manifest_digest
    # the marker file says which platform we got
    found = [p for p in (root / "layers").glob("*/etc/platform")]
    assert any(p.read_text().startswith(f"linux/{host.architecture}") for p in found)


@pytest.mark.parametrize("want,arch,variant", [("linux/arm64", "arm64", "v8"), ("linux/arm/v7", "arm", "v7")])
def test_multiarch_explicit_platform(cli, root, pushed, want, arch, variant):
    img = pushed["multiarch"]
    r = cli("pull", "--platform", want, img.ref)
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    assert doc["Architecture"] == arch
    found = [p.read_text() for p in (root / "layers").glob("*/etc/platform")]
    assert any(t.startswith(f"linux/{arch}") for t in found), found


def test_multiarch_no_match_lists_platforms(cli, root, pushed):
    img = pushed["multiarch"]
    r = cli("pull", "--platform", "linux/s390x", img.ref)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for p in ("linux/amd64", "linux/arm64", "linux/arm/v7"):
        assert p in r.stderr
    assert "unknown/unknown" not in r.stderr
    assert store_state(root)[2].get("Image", 0) == 0


def test_zstd_layer_and_same_diff_id_not_unpacked_twice(cli, root, pushed, registry):
    bb, z = pushed["busybox"], pushed["zstd"]
    assert z.layers[0].media_type.endswith("+zstd")
    assert cli("pull", bb.ref).returncode == 0
    tree = root / "layers" / bb.diff_ids[0][7:]
    ino = (tree / "bin" / "busybox").stat().st_ino
    mark = registry.mark()
    r = cli("pull", z.ref)
    assert r.returncode == 0, r.stderr
    assert z.diff_ids[0] == bb.diff_ids[0]
    # the zstd blob is another blob (downloaded and verified), the tree is the same one
    assert registry.blob_gets(z.layers[0].digest, since=mark) == 1
    assert (tree / "bin" / "busybox").stat().st_ino == ino
    assert (root / "layers" / z.diff_ids[1][7:] / "etc" / "compression").read_text() == "zstd\n"
    doc = json.loads(cli("inspect", z.ref).stdout)[0]
    assert doc["Container"]["Layers"][0]["MediaType"].endswith("+zstd")


def test_pull_by_digest(cli, root, pushed):
    img = pushed["busybox"]
    r = cli("pull", img.by_digest)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {img.manifest_digest}" in r.stdout
    ls = cli("images", "--digests").stdout
    row = [l for l in ls.splitlines() if l.startswith(f"{img.host}/{img.repo}")][0]
    assert "<none>" in row and img.manifest_digest in row
    assert json.loads(cli("inspect", img.by_digest).stdout)[0]["Id"] == img.config_digest


def test_pull_by_wrong_digest_is_manifest_unknown(cli, root, pushed):
    img = pushed["busybox"]
    r = cli("pull", f"{img.host}/{img.repo}@sha256:{'0' * 64}")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr, r.stderr


def test_pull_docker_v2s2_media_types(cli, root, pushed):
    img = pushed["busybox-v2s2"]
    assert img.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    assert doc["Container"]["Layers"][0]["MediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert doc["Id"] == img.config_digest


@pytest.mark.parametrize("ref_suffix,expect", [("test/busybox:nope", "manifest for"),
                                               ("test/does-not-exist:latest", "not found")])
def test_pull_unknown_image(cli, root, registry, ref_suffix, expect):
    r = cli("pull", f"{registry.host}/{ref_suffix}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and expect in lines[0], r.stderr
    blobs, layers, rows = store_state(root)
    assert not blobs and not layers and rows.get("Image", 0) == 0


def test_registry_down(cli, root):
    from tools.registry import free_port
    r = cli("pull", f"127.0.0.1:{free_port()}/test/busybox", env={"CONTAINER_REGISTRY_ATTEMPTS": "2"})
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach registry" in lines[0] and "refused" in lines[0], r.stderr


def test_rmi_and_tag(cli, root, pushed):
    img = pushed["busybox"]
    assert cli("pull", img.ref).returncode == 0
    t = cli("tag", img.ref, "mine/bb:v1")
    assert t.returncode == 0, t.stderr
    assert "mine/bb" in cli("images").stdout
    r = cli("rmi", img.ref)
    assert r.returncode == 0 and f"Untagged: {img.host}/{img.repo}:latest" in r.stdout
    assert "Deleted" not in r.stdout                           # still tagged mine/bb:v1
    r = cli("rmi", "mine/bb:v1")
    assert r.returncode == 0 and f"Deleted: {img.config_digest}" in r.stdout
    assert cli("images", "-q").stdout.strip() == ""
    from container.schema import Blob, Layer
    s = open_store(root)
    assert Blob.get_by_id(img.layers[0].digest).refs == 0 and Layer.get_by_id(img.diff_ids[0]).refs == 0
    s.close()
    r = cli("rmi", "nothere")
    assert r.returncode != 0 and r.stderr.strip() == "Error: No such image: nothere"


def test_inspect_unknown(cli):
    r = cli("inspect", "nothere")
    assert r.returncode != 0 and "No such object: nothere" in r.stderr


def test_two_processes_pull_the_same_image_download_each_blob_once(cli, root, pushed, registry):
    img = pushed["layered"]
    mark = registry.mark()
    procs = [subprocess.Popen([str(cli.exe), "--root", str(root), "pull", img.ref], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for d in img.layer_digests:
        assert registry.blob_gets(d, since=mark, status=200) == 1, d
    _, _, rows = store_state(root)
    assert rows["Image"] == 1 and rows["Tag"] == 1


def test_blob_present_but_tree_missing_is_unpacked_from_the_store(cli, root, pushed, registry):
    img = pushed["busybox"]
    assert cli("pull", img.ref).returncode == 0
    from container.cas.fsutil import remove_tree
    tree = root / "layers" / img.diff_ids[0][7:]
    remove_tree(tree)
    mark = registry.mark()
    r = cli("pull", img.ref)
    assert r.returncode == 0, r.stderr
    assert registry.blob_gets(since=mark) == 0                 # nothing downloaded again
    assert (tree / "bin" / "busybox").is_file()


def test_platform_mismatch_on_a_single_manifest(cli, root, pushed):
    img = pushed["busybox"]
    other = "linux/s390x"
    r = cli("pull", "--platform", other, img.ref)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the specified platform" in lines[0], r.stderr
    assert store_state(root)[2].get("Image", 0) == 0


def test_tag_and_digest_keeps_the_tag_as_local_name(cli, root, pushed):
    img = pushed["busybox"]
    r = cli("pull", f"{img.host}/{img.repo}:mytag@{img.manifest_digest}")
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", f"{img.host}/{img.repo}:mytag").stdout)[0]
    assert doc["Id"] == img.config_digest


def test_inspect_falls_back_to_containers(cli, root, pushed):
    img = pushed["busybox"]
    r = cli("run", "--name", "inspectme", img.ref, "true")
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", "inspectme").stdout)
    assert doc[0]["Name"] == "/inspectme" and doc[0]["State"]["ExitCode"] == 0, doc
    both = cli("inspect", img.ref, "inspectme", "nothere")
    assert both.returncode != 0 and "No such object: nothere" in both.stderr
    assert len(json.loads(both.stdout)) == 2


def test_verbose_shows_the_rate_limit(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.replace(f"/manifests/{img.tag}", status=200, methods=("HEAD",), headers={
        "Docker-Content-Digest": img.manifest_digest, "Content-Type": img.media_type,
        "ratelimit-limit": "100;w=21600", "ratelimit-remaining": "42;w=21600"})
    r = cli("-v", "pull", f"{p.host}/{img.repo}:{img.tag}")
    assert r.returncode == 0, r.stderr
    assert "rate limit remaining: 42" in r.stderr


def test_concurrent_pulls_of_images_sharing_layers_do_not_deadlock(cli, tmp_path, pushed, registry):
    a, b = pushed["shared-a"], pushed["shared-b"]
    for i in range(3):
        root = tmp_path / f"r{i}"
        mark = registry.mark()
        procs = [subprocess.Popen([str(cli.exe), "--root", str(root), "pull", ref], env=cli.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for ref in ((a.ref, b.ref) if i % 2 == 0 else (b.ref, a.ref))]
        try:
            outs = [p.communicate(timeout=90) for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("concurrent pulls of images sharing layers hung")
        assert all(p.returncode == 0 for p in procs), outs
        for d in set(a.layer_digests) | set(b.layer_digests):
            assert registry.blob_gets(d, since=mark, status=200) == 1, d


def test_docker_manifest_list_with_platform(cli, root, pushed):
    img = pushed["multiarch-docker"]
    assert img.media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    r = cli("pull", "--platform", "linux/arm64/v8", img.ref)
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    assert doc["Architecture"] == "arm64" and doc["Container"]["IndexDigest"] == img.manifest_digest
    assert "linux/arm/v7" in one_line_error(cli("pull", "--platform", "linux/ppc64le", img.ref))


def one_line_error(r) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    return lines[0]


def _big_random_image(tmp_path, size):
    """An OCI layout with one gzip layer holding `size` incompressible bytes, written as a stream."""
    import gzip
    import hashlib
    import tarfile

    lay = tmp_path / "bigimg"
    (lay / "blobs" / "sha256").mkdir(parents=True)
    raw_h = hashlib.sha256()

    class Tee:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raw_h.update(b)
            return self.f.write(b)

    tmpblob = lay / "layer.tmp"
    with open(tmpblob, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:
        t = tarfile.open(fileobj=Tee(gz), mode="w|", format=tarfile.PAX_FORMAT)
        ti = tarfile.TarInfo("big.bin")
        ti.size = size

        class Rand:
            left = size

            def read(self, n=1 << 20):
                n = min(n, self.left)
                self.left -= n
                return os.urandom(n)
        t.addfile(ti, Rand())
        t.close()
    h = hashlib.sha256()
    with open(tmpblob, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    ldig = "sha256:" + h.hexdigest()
    tmpblob.rename(lay / "blobs" / "sha256" / ldig[7:])

    def put(obj):
        b = json.dumps(obj).encode()
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        (lay / "blobs" / "sha256" / d[7:]).write_bytes(b)
        return d, len(b)
    host = plat.host()
    cd, cs = put({"architecture": host.architecture, "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + raw_h.hexdigest()]}})
    md, ms = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldig,
                              "size": (lay / "blobs" / "sha256" / ldig[7:]).stat().st_size}]})
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return lay


def test_memory_stays_bounded_for_a_big_layer(cli, root, registry, tmp_path):
    """A 160 MB incompressible layer: peak RSS of the pull stays within tens of MB of an idle command."""
    import shutil
    if not shutil.which("skopeo") or not os.path.exists("/usr/bin/time"):
        pytest.skip("needs skopeo and /usr/bin/time")
    size = 160 << 20
    lay = _big_random_image(tmp_path, size)
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{lay}:1",
                    f"docker://{registry.host}/test/bigmem:1"], check=True, capture_output=True, timeout=300)
    shutil.rmtree(lay)

    def peak_kb(*args):
        r = subprocess.run(["/usr/bin/time", "-f", "%M", str(cli.exe), "--root", str(root), *args], env=cli.env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return int(r.stderr.strip().splitlines()[-1])
    idle = peak_kb("images")
    pulling = peak_kb("pull", "-q", f"{registry.host}/test/bigmem:1")
    assert any((root / "layers").glob("*/big.bin"))
    print(f"peak RSS: idle command {idle} kB, pulling a {size >> 20} MB layer {pulling} kB")
    assert pulling - idle < 48 * 1024, (idle, pulling)


def test_pull_without_typer_says_what_the_typer_command_says(tmp_path, pushed):
    """`pull` is parsed by hand (cli/pulling.py) unless typer must: the same output, exit codes and
    store either way, for the spellings click takes; help and bad options still come from typer."""
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "container")
    typer_way = [sys.executable, "-c", "import sys\nfrom container.cli.app import app\nfrom container.cli.errors import "
                 "report\ntry:\n    app(args=sys.argv[1:])\nexcept SystemExit:\n    raise\nexcept BaseException as e:\n"
                 "    sys.exit(report(e))"]   # what main() does when no fast path takes the line
    img = pushed["busybox"]
    lines = [["pull", img.ref], ["pull", "-q", img.ref], ["pull", img.ref, "--no-snapshot", "--platform=linux/amd64"],
             ["-v", "pull", "--quiet", "--platform", "linux/amd64", "--", img.ref],
             ["pull", img.ref.replace(img.repo, img.repo + "-missing")], ["pull", "BAD::ref"]]
    for n, args in enumerate(lines):
        got = []
        for way in ([exe], typer_way):
            root = tmp_path / f"{n}-{len(got)}"
            r = subprocess.run(way + ["--root", str(root)] + args, capture_output=True, text=True, timeout=120)
            state = store_state(root) if root.exists() else None
            got.append((r.returncode, r.stdout, r.stderr.replace(str(root), "ROOT"), state))
        assert got[0] == got[1], args
    assert lines and got[0][0] == 1 and got[0][2].startswith("Error: invalid reference format")
    for args in (["pull", "--help"], ["pull"], ["pull", "-x", img.ref], ["pull", img.ref, img.ref]):
        r = subprocess.run([exe, "--root", str(tmp_path / "h")] + args, capture_output=True, text=True)
        assert ("Usage: container pull" in r.stdout + r.stderr) and "Traceback" not in r.stderr, args


def test_layers_unpacked_in_processes_make_what_threads_make(cli, tmp_path, pushed):
    """engine/layer/worker.py (a process per big layer; CONTAINER_UNPACK_PROCESS_MIN=0: every layer)
    against the threads: the same trees, index rows, usage records and dedupe, verified by fsck --deep."""
    img = pushed["layered"]
    got = {}
    for how, env in (("threads", {"CONTAINER_UNPACK_PROCESS_MIN": "-1"}), ("processes", {"CONTAINER_UNPACK_PROCESS_MIN": "0"})):
        root = tmp_path / how
        assert cli("pull", img.ref, root=root, env=env).returncode == 0
        assert "no problems" in cli("fsck", "--deep", root=root, check=True).stdout
        q = ("SELECT f.diff_id, f.path, f.type, f.mode, f.uid, f.gid, f.size, f.mtime, f.link, f.xattrs, f.whiteout, "
             "f.sha256 FROM file f ORDER BY f.diff_id, f.path")
        got[how] = (cli("files", "--format", "json", img.ref, root=root, check=True).stdout,
                    cli("sql", "--format", "json", q, root=root, check=True).stdout,
                    cli("sql", "--format", "json", "SELECT diff_id, size, disk, inodes FROM layer ORDER BY diff_id",
                        root=root, check=True).stdout,
                    cli("df", "-v", "--format", "json", root=root, check=True).stdout.count("Deduplicated"),
                    sorted(p.name for p in (root / "objects").rglob("*") if p.is_file() and p.parent.name != "trees"))
    assert got["threads"] == got["processes"]
    assert got["threads"][4], "the layered image shares files (dedupe objects were made)"
