"""The test infrastructure itself: registry launcher, image builder, pushes, access log, auth variants.

These check the fixtures against independent tools (skopeo, umoci, raw HTTP), so that other tests
can trust them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess

import pytest
import requests

from tools import images as ti


def _session():
    s = requests.Session()
    s.trust_env = False  # never through an http proxy
    return s


def skopeo_inspect(ref: str, raw: bool = False) -> dict:
    args = ["skopeo", "inspect", "--tls-verify=false"] + (["--raw"] if raw else []) + [f"docker://{ref}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


EXPECTED_LAYERS = {  # key -> (layer count, layer media type, manifest media type)
    "busybox": (1, ti.MT_OCI_LAYER_GZIP, ti.MT_OCI_MANIFEST),
    "library/busybox": (1, ti.MT_OCI_LAYER_GZIP, ti.MT_OCI_MANIFEST),
    "layered": (5, ti.MT_OCI_LAYER_GZIP, ti.MT_OCI_MANIFEST),
    "shared-a": (3, ti.MT_OCI_LAYER_GZIP, ti.MT_OCI_MANIFEST),
    "shared-b": (3, ti.MT_OCI_LAYER_GZIP, ti.MT_OCI_MANIFEST),
    "zstd": (2, ti.MT_OCI_LAYER_ZSTD, ti.MT_OCI_MANIFEST),
    "busybox-v2s2": (1, ti.MT_DOCKER_LAYER_GZIP, ti.MT_DOCKER_MANIFEST),
}


@pytest.mark.parametrize("key", sorted(EXPECTED_LAYERS))
def test_pushed_image_as_skopeo_sees_it(pushed, key):
    img = pushed[key]
    count, layer_mt, manifest_mt = EXPECTED_LAYERS[key]
    raw = skopeo_inspect(img.ref, raw=True)
    assert raw["mediaType"] == manifest_mt == img.media_type
    assert [x["mediaType"] for x in raw["layers"]] == [layer_mt] * count
    assert [x["digest"] for x in raw["layers"]] == img.layer_digests
    info = skopeo_inspect(img.ref)
    assert info["Digest"] == img.manifest_digest
    assert len(info["Layers"]) == count
    assert info["Architecture"] == ti.host_platform()[1] and info["Os"] == "linux"
    if img.fmt == "oci":  # pushed with --preserve-digests: the registry holds exactly what we built
        assert img.manifest_digest == img.built.manifest_digest


def test_shared_images_share_lower_layers(pushed):
    a, b, bb = pushed["shared-a"], pushed["shared-b"], pushed["busybox"]
    assert a.layer_digests[:2] == b.layer_digests[:2]
    assert a.layer_digests[0] == bb.layer_digests[0]
    assert a.layer_digests[2] != b.layer_digests[2]
    assert pushed["zstd"].diff_ids[0] == bb.diff_ids[0] and pushed["zstd"].layer_digests[0] != bb.layer_digests[0]


@pytest.mark.parametrize("key", ["multiarch", "multiarch-docker"])
def test_multiarch_index(pushed, key):
    img = pushed[key]
    idx = skopeo_inspect(img.ref, raw=True)
    assert idx["mediaType"] == img.media_type == (ti.MT_OCI_INDEX if key == "multiarch" else ti.MT_DOCKER_LIST)
    assert img.manifest_digest == img.built.manifest_digest
    plats = [(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant", ""))
             for m in idx["manifests"]]
    want = [("linux", "amd64", ""), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
    assert plats == (want + [("unknown", "unknown", "")] if key == "multiarch" else want)
    host = img.host
    for m in idx["manifests"]:
        child = skopeo_inspect(f"{host}/{img.repo}@{m['digest']}", raw=True)
        assert child["mediaType"] == m["mediaType"]
        cfg = _session().get(f"http://{host}/v2/{img.repo}/blobs/{child['config']['digest']}").json()
        assert (cfg["os"], cfg["architecture"], cfg.get("variant", "")) == (
            m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant", ""))
    # skopeo picks the host's entry: busybox base + platform marker
    info = skopeo_inspect(img.ref)
    assert info["Architecture"] == ti.host_platform()[1] and len(info["Layers"]) == 2


def test_access_log_counts_blob_get(registry, pushed):
    img = pushed["busybox"]
    digest = img.layer_digests[0]
    mark = registry.mark()
    before = registry.blob_gets(digest)
    r = _session().get(f"{registry.url}/v2/test/busybox/blobs/{digest}")
    assert r.status_code == 200
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest
    assert registry.blob_gets(digest) == before + 1
    assert registry.blob_gets(digest, since=mark) == 1
    assert registry.blob_gets(digest, since=mark, repo="test/busybox", status=200) == 1
    assert ("GET", f"/v2/test/busybox/blobs/{digest}", 200) in registry.requests(since=mark)
    r = _session().head(f"{registry.url}/v2/test/busybox/blobs/{digest}")
    assert registry.blob_gets(digest, since=mark) == 1  # a HEAD is not a GET


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed")
def test_layered_image_unpacks_as_documented(built_images, tmp_path):
    """umoci (an independent unpacker) agrees with the LAYERED table the unpack tests assert against."""
    img = built_images["layered"]
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{img.oci_dir}:{img.tag}", str(bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rootfs = bundle / "rootfs"
    for path, want in ti.LAYERED.items():
        p = rootfs / path.lstrip("/")
        if want["kind"] == "absent":
            assert not os.path.lexists(p), path
            continue
        st = os.lstat(p)
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo"}[stat.S_IFMT(st.st_mode)]
        assert kind == want["kind"], path
        if "content" in want:
            assert p.read_text() == want["content"], path
        if "target" in want:
            assert os.readlink(p) == want["target"], path
        if "mode" in want:
            assert stat.S_IMODE(st.st_mode) == want["mode"], path
        if "uid" in want:
            assert (st.st_uid, st.st_gid) == (want["uid"], want["gid"]), path
        if "xattrs" in want:
            for k, v in want["xattrs"].items():
                assert os.getxattr(p, k, follow_symlinks=False).decode() == v
    for group in ti.LAYERED_HARDLINK_GROUPS:
        assert len({os.lstat(rootfs / g.lstrip("/")).st_ino for g in group}) == 1
    for marker in ti.LAYERED_NO_WHITEOUT_MARKERS:
        assert not os.path.lexists(rootfs / marker.lstrip("/"))
    proc = json.loads((bundle / "config.json").read_text())["process"]
    assert proc["args"] == ti.LAYERED_CONFIG["Entrypoint"] + ti.LAYERED_CONFIG["Cmd"]
    assert proc["cwd"] == "/home/app"
    assert proc["user"]["uid"] == ti.APP_UID and sorted(proc["user"]["additionalGids"]) == [10, 50]


def test_busybox_layer_has_applets(built_images):
    import gzip
    import tarfile
    img = built_images["busybox"]
    blob = img.oci_dir / "blobs" / "sha256" / img.layers[0].digest.split(":")[1]
    with tarfile.open(fileobj=gzip.open(blob)) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert {"bin/ls", "bin/echo", "bin/cat", "bin/id"} <= set(members)
    assert all(m.mtime == ti.MTIME for m in members.values())


def test_htpasswd_registry(make_registry, pushed):
    reg = make_registry(htpasswd={"alice": "wonderland"})
    s = _session()
    url = f"{reg.url}/v2/test/busybox/manifests/latest"
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST}, auth=("alice", "wrong"))
    assert r.status_code == 401
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST}, auth=("alice", "wonderland"))
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == pushed["busybox"].manifest_digest
    assert [e.status for e in reg.requests() if e.path.endswith("/manifests/latest")] == [401, 401, 200]


def test_token_registry(make_registry, make_token_server, pushed):
    ts = make_token_server(users={"bob": "builder"}, anonymous_pull=False)
    reg = make_registry(token=ts.auth())
    s = _session()
    url = f"{reg.url}/v2/test/busybox/manifests/latest"
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST})
    assert r.status_code == 401
    chal = r.headers["WWW-Authenticate"]
    assert chal.startswith("Bearer ") and f'realm="{ts.realm}"' in chal
    assert 'scope="repository:test/busybox:pull"' in chal
    params = {"service": ts.service, "scope": "repository:test/busybox:pull"}
    assert s.get(ts.realm, params=params).status_code == 401          # anonymous refused
    tok = s.get(ts.realm, params=params, auth=("bob", "builder")).json()["token"]
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST, "Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    # a token for another repository does not open this one
    other = s.get(ts.realm, params={**params, "scope": "repository:test/layered:pull"},
                  auth=("bob", "builder")).json()["token"]
    r = s.get(url, headers={"Accept": ti.MT_OCI_MANIFEST, "Authorization": f"Bearer {other}"})
    assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


def test_cli_fixture_runs_installed_entry_point(cli, root):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("container ")
    assert cli.exe.name == "container" and cli.exe.exists()
    assert not any(k.lower().endswith("_proxy") for k in cli.env)


@pytest.mark.slow
def test_debian_image(debian_image, registry):
    info = skopeo_inspect(debian_image.ref)
    assert len(info["Layers"]) == 3 and info["Digest"] == debian_image.manifest_digest
    assert debian_image.ref.endswith("/library/debian:bookworm")
    assert debian_image.config["config"]["Cmd"] == ["bash"]
    # the docs layer: an opaque usr/share/doc and whiteouts
    import gzip
    import tarfile
    blob = debian_image.built.oci_dir / "blobs" / "sha256" / debian_image.layer_digests[1].split(":")[1]
    with tarfile.open(fileobj=gzip.open(blob)) as tf:
        names = tf.getnames()
    assert "usr/share/doc/.wh..wh..opq" in names and "usr/share/.wh.man" in names


# ------------------------------------------------------------------------------------------ fault proxy
def _get(host, path, headers=None, method="GET", timeout=10):
    """(status, headers, body or the exception raised while reading the body)."""
    import http.client
    c = http.client.HTTPConnection(host, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        try:
            body = r.read()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            body = e
        return r.status, dict(r.getheaders()), body
    finally:
        c.close()


def _blob(pushed, key="shared-a", i=1):
    img = pushed[key]
    return f"/v2/{img.repo}/blobs/{img.layer_digests[i]}", img.layer_digests[i], img.layers[i].size


def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_proxy_passes_through_and_records(proxy, pushed, registry):
    p = proxy()
    path, digest, size = _blob(pushed)
    mark = registry.mark()
    st, hdrs, body = _get(p.host, path, {"Authorization": "Bearer xyz", "Accept": "*/*"})
    assert st == 200 and _sha(body) == digest and len(body) == size
    st, hdrs, body = _get(p.host, path, {"Range": "bytes=100-"})
    assert st == 206 and len(body) == size - 100
    assert p.count(r"/blobs/") == 2 and p.count(r"/blobs/", method="HEAD") == 0
    assert p.headers(r"/blobs/")[0]["authorization"] == "Bearer xyz"
    assert p.paths()[f"GET {path}"] == 2
    assert registry.blob_gets(digest, since=mark) == 2   # the proxy really forwarded


def test_proxy_status_faults_then_pass(proxy, pushed):
    p = proxy()
    path, digest, _ = _blob(pushed)
    f = p.fail(r"/blobs/", status=503, count=2)
    p.fail(r"/manifests/", status=429, retry_after=3)
    assert [_get(p.host, path)[0] for _ in range(3)] == [503, 503, 200]
    assert f.hits == 2
    st, hdrs, body = _get(p.host, f"/v2/{pushed['busybox'].repo}/manifests/latest")
    assert st == 429 and hdrs["Retry-After"] == "3" and json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"


def test_proxy_body_faults(proxy, pushed):
    import http.client
    p = proxy()
    path, digest, size = _blob(pushed)
    p.truncate(r"/blobs/", after=1000)
    st, hdrs, body = _get(p.host, path)
    assert st == 200 and int(hdrs["Content-Length"]) == size and isinstance(body, http.client.IncompleteRead)
    assert len(body.partial) == 1000
    p.truncate(r"/blobs/", after=1000, consistent_length=True)
    st, hdrs, body = _get(p.host, path)
    assert hdrs["Content-Length"] == "1000" and len(body) == 1000
    p.reset(r"/blobs/", after=4096)
    st, hdrs, body = _get(p.host, path)
    assert isinstance(body, (ConnectionResetError, http.client.IncompleteRead)), body
    p.corrupt(r"/blobs/", nbytes=3)
    st, hdrs, body = _get(p.host, path)
    assert st == 200 and len(body) == size and _sha(body) != digest
    st, hdrs, body = _get(p.host, path)   # faults used up: clean again
    assert _sha(body) == digest


def test_proxy_stall_redirect_content_type_huge(proxy, pushed):
    import socket as _socket
    p = proxy()
    path, digest, size = _blob(pushed)
    p.stall(r"/blobs/", seconds=2)
    try:
        _get(p.host, path, timeout=0.3)
        raise AssertionError("expected a timeout")
    except (TimeoutError, _socket.timeout):
        pass
    other = proxy()
    p.redirect(r"/blobs/", to=other.host)
    st, hdrs, _ = _get(p.host, path, {"Authorization": "Bearer secret"})
    assert st == 307 and hdrs["Location"] == f"http://{other.host}{path}"
    st, _, body = _get(other.host, path)                     # a client that follows without Authorization
    assert st == 200 and _sha(body) == digest
    assert "authorization" not in other.headers(r"/blobs/")[0]
    assert p.headers(r"/blobs/")[-1]["authorization"] == "Bearer secret"
    man = f"/v2/{pushed['busybox'].repo}/manifests/latest"
    p.content_type(r"/manifests/", "text/html")
    st, hdrs, body = _get(p.host, man, {"Accept": ti.MT_OCI_MANIFEST})
    assert st == 200 and hdrs["Content-Type"] == "text/html" and _sha(body) == pushed["busybox"].manifest_digest
    p.huge(r"/manifests/", size=5 << 20)
    st, hdrs, body = _get(p.host, man)
    assert st == 200 and len(body) == 5 << 20
    import time
    p.throttle(r"/blobs/", rate=size * 2)  # about half a second for the whole blob
    t0 = time.monotonic()
    st, _, body = _get(p.host, path)
    assert _sha(body) == digest and time.monotonic() - t0 >= 0.4
