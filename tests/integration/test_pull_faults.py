"""Pulls through the fault-injecting proxy (tools/proxy.py) in front of the real registry:
corrupted, cut and reset blobs, 5xx/429 retries, redirects, kill -9 mid-pull, mirrors.

Assertions come from the proxy's and the registry's own records and from the store on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from checks import FAST, one_error, store_state

def ref_via(p, img):
    return f"{p.host}/{img.repo}:{img.tag}"


def big_layer(img):
    return max(img.layers, key=lambda l: l.size)


def test_corrupted_blob_fails_and_keeps_nothing(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    layer = big_layer(img)
    p.corrupt(f"/blobs/{layer.digest}", count=None)
    r = cli("pull", ref_via(p, img), env=FAST)
    line = one_error(r)
    assert "digest mismatch" in line and layer.digest in line, r.stderr
    blobs, layers, rows = store_state(root)
    assert blobs == [] and layers == [], (blobs, layers)
    assert all(n == 0 for n in rows.values()), rows
    assert not list((root / "ingest").glob("*/data"))       # the bad bytes are gone (only a lock file may stay)
    from container.engine.store import Store
    from container.schema import Lease
    s = Store(root)
    s.db()
    assert Lease.select().count() == 0
    s.close()
    # and with a healthy path the same pull then works
    p.clear()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr


def test_corrupted_layer_unpacked_in_a_process_fails_and_keeps_nothing(cli, root, pushed, proxy):
    """A layer whose bytes are wrong, unpacked by its own process (engine/layer/worker.py): the
    same one-line error as on a thread, no tree, no object, no worker left."""
    img = pushed["layered"]
    p = proxy()
    layer = big_layer(img)
    p.corrupt(f"/blobs/{layer.digest}", count=None)
    r = cli("pull", ref_via(p, img), env={**FAST, **PROCESSES})
    line = one_error(r)
    assert "digest mismatch" in line and layer.digest in line, r.stderr
    blobs, layers, rows = store_state(root)
    assert blobs == [] and layers == [], (blobs, layers)
    assert all(n == 0 for n in rows.values()), rows
    objects = root / "objects"
    assert not [f for f in objects.rglob("*") if f.is_file() and f.parent.name != "trees"] if objects.exists() else True
    assert _workers_of(root) == []
    p.clear()
    r = cli("pull", ref_via(p, img), env={**FAST, **PROCESSES})
    assert r.returncode == 0, r.stderr
    assert "no problems" in cli("fsck", "--deep", check=True).stdout


def test_cut_blob_is_resumed_with_range_in_the_same_pull(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    layer = big_layer(img)
    cut = layer.size // 3
    p.truncate(f"/blobs/{layer.digest}", after=cut)
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr
    gets = [x for x in p.records(f"/blobs/{layer.digest}") if x.method == "GET"]
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers.get("range") == f"bytes={cut}-"
    assert gets[1].status == 206
    assert (root / "layers" / layer.diff_id[7:] / "bin" / "busybox").is_file()


def test_interrupted_download_resumes_on_the_next_pull(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    layer = big_layer(img)
    step = layer.size // 10
    p.reset(f"/blobs/{layer.digest}", after=step, count=None)      # every attempt dies after `step` bytes
    r = cli("pull", ref_via(p, img), env={**FAST, "CONTAINER_PULL_RECONNECTS": "2"})
    one_error(r)
    partial = root / "ingest" / layer.digest[7:] / "data"
    have = partial.stat().st_size
    assert 0 < have < layer.size
    blobs, layers, rows = store_state(root)
    assert layer.digest[7:] not in blobs and rows.get("Image", 0) == 0
    p.clear()
    p.reset_log()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr
    gets = [x for x in p.records(f"/blobs/{layer.digest}") if x.method == "GET"]
    assert len(gets) == 1 and gets[0].headers.get("range") == f"bytes={have}-", [g.headers for g in gets]
    assert gets[0].status == 206
    assert not partial.exists()
    assert (root / "blobs" / "sha256" / layer.digest[7:]).is_file()


def test_retries_on_503_and_429(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    layer = big_layer(img)
    p.fail(f"/blobs/{layer.digest}", status=503, count=2)
    p.fail("/manifests/", status=429, retry_after=1, count=1)
    t0 = time.monotonic()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 1.0                    # Retry-After honoured
    assert p.count(f"/blobs/{layer.digest}", method="GET") == 3


def test_no_retry_on_not_found_or_denied(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.fail("/manifests/", status=403, count=None)
    r = cli("pull", ref_via(p, img), env=FAST)
    assert "denied" in one_error(r)
    assert p.count("/manifests/") == 1


def test_registry_5xx_forever_gives_one_line(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.fail("/manifests/", status=502, count=None)
    r = cli("pull", ref_via(p, img), env={**FAST, "CONTAINER_REGISTRY_ATTEMPTS": "3"})
    assert "502" in one_error(r)
    assert p.count("/manifests/") == 3


def test_manifest_content_type_mismatch_refused(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.content_type("/manifests/", "application/vnd.oci.image.index.v1+json", count=None)
    r = cli("pull", ref_via(p, img), env=FAST)
    assert "does not match Content-Type" in one_error(r)


def test_huge_manifest_refused(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.huge("/manifests/", size=64 << 20, count=None)
    r = cli("pull", img.by_digest.replace(img.host, p.host), env=FAST)
    assert "too large" in one_error(r)


def test_kill_9_during_pull_then_pull_again(cli, root, pushed, proxy):
    img = pushed["layered"]
    p = proxy()
    layer = big_layer(img)
    p.stall(f"/blobs/{layer.digest}", seconds=60, after=min(4096, layer.size // 2))
    proc = subprocess.Popen([str(cli.exe), "--root", str(root), "pull", ref_via(p, img)], env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = [x for x in p.records(f"/blobs/{layer.digest}") if x.sent > 0]
        if recs and list((root / "ingest").glob("*/data")):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the pull never reached the stalled blob")
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, _, rows = store_state(root)
    assert rows.get("Image", 0) == 0 and rows.get("Tag", 0) == 0
    p.clear()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr
    doc = json.loads(cli("inspect", ref_via(p, img)).stdout)[0]
    assert doc["RootFS"]["Layers"] == img.diff_ids
    for l in img.layers:
        assert (root / "layers" / l.diff_id[7:]).is_dir()


def test_redirect_to_another_host_drops_authorization(cli, root, pushed, registry, proxy, make_registry,
                                                      make_token_server):
    img = pushed["busybox"]
    ts = make_token_server()
    treg = make_registry(token=ts.auth())
    front = proxy(treg.host)
    cdn = proxy(registry.host)                      # a "CDN" that serves the bytes without auth
    layer = big_layer(img)
    front.redirect(f"/blobs/{layer.digest}", to=cdn.host, count=None)
    r = cli("pull", ref_via(front, img), env=FAST)
    assert r.returncode == 0, r.stderr
    at_front = [h for h in front.headers(f"/blobs/{layer.digest}")]
    assert at_front and all(h.get("authorization", "").startswith("Bearer ") for h in at_front)
    at_cdn = cdn.headers(f"/blobs/{layer.digest}")
    assert at_cdn and not any("authorization" in h for h in at_cdn)


def test_mirror_is_tried_first(cli, root, pushed, proxy):
    pushed["library/busybox"]
    mirror = proxy()
    cli.write_config(f'[registries."docker.io"]\nmirrors = ["{mirror.host}"]\n')
    r = cli("pull", "busybox", env=FAST)
    assert r.returncode == 0, r.stderr
    assert mirror.count("/v2/library/busybox/manifests/latest") >= 1
    assert "docker.io/library/busybox:latest" in r.stdout
    ls = cli("images").stdout
    assert any(l.startswith("busybox ") for l in ls.splitlines()), ls


def _start_stalled_pull(cli, root, p, img, env=None, layer=None):
    layer = layer or big_layer(img)
    p.stall(f"/blobs/{layer.digest}", seconds=60, after=min(4096, layer.size // 2))
    proc = subprocess.Popen([str(cli.exe), "--root", str(root), "pull", ref_via(p, img)], env={**cli.env, **(env or {})},
                            start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if [x for x in p.records(f"/blobs/{layer.digest}") if x.sent > 0] and list((root / "ingest").glob("*/data")):
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the pull never reached the stalled blob")


def _workers_of(root) -> list[str]:
    """The layer unpack processes (engine/layer/worker.py) working in this store."""
    r = subprocess.run(["pgrep", "-af", "container.engine.layer.worker"], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if str(root) in line]


# CONTAINER_UNPACK_PROCESS_MIN=0: every layer of a pull of several layers has a process of its own
PROCESSES = {"CONTAINER_UNPACK_PROCESS_MIN": "0"}


@pytest.mark.parametrize("env", [{}, PROCESSES], ids=["threads", "processes"])
def test_ctrl_c_during_pull_is_one_line_and_leaves_the_store_as_it_was(cli, root, pushed, proxy, env):
    img = pushed["layered"]
    p = proxy()
    proc = _start_stalled_pull(cli, root, p, img, env)
    if env:
        assert _workers_of(root), "the pull unpacks in processes"
    time.sleep(0.3)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)                      # as a terminal's ^C: the whole process group
    out, errs = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10                       # does not wait for the stalled socket
    assert proc.returncode == 130
    lines = errs.strip().splitlines()
    assert lines[-1].startswith("Error: interrupted") and "Traceback" not in errs, errs
    assert _workers_of(root) == []
    blobs, layers, rows = store_state(root)
    assert layers == [] and blobs == [], (blobs, layers)     # no temp trees, nothing published
    assert all(n == 0 for n in rows.values()), rows
    p.clear()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr


def test_ctrl_c_while_the_stored_layers_merge_leaves_no_snapshot_behind(cli, root, pushed, proxy):
    """The layers a pull has merge into a temp snapshot while it downloads the rest: ^C then
    removes that too, and the store is what it was with only the base image pulled."""
    base, img = pushed["busybox"], pushed["layered"]
    assert cli("pull", base.ref, env=FAST).returncode == 0
    before = store_state(root), sorted(os.listdir(root / "snapshots"))
    p = proxy()
    proc = _start_stalled_pull(cli, root, p, img, layer=max(img.layers[1:], key=lambda l: l.size))
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, errs = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in errs, errs
    assert (store_state(root), sorted(os.listdir(root / "snapshots"))) == before
    p.clear()
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    assert cli("fsck").returncode == 0


@pytest.mark.root
def test_disk_full_is_a_store_error(cli, tmp_path, pushed):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        img = pushed["busybox"]
        r = cli("pull", img.ref, root=small / "root", env=FAST)
        line = one_error(r)
        assert "no space left on device" in line, r.stderr
        _, layers, rows = store_state(small / "root")
        assert rows.get("Image", 0) == 0 and not [l for l in layers if not l.startswith(".tmp")]
        assert not [l for l in layers if l.startswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_registry_refusing_head_is_resolved_with_get(cli, root, pushed, proxy):
    img = pushed["busybox"]
    p = proxy()
    p.fail("/manifests/", status=405, methods=("HEAD",), count=None)
    r = cli("pull", ref_via(p, img), env=FAST)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {img.manifest_digest}" in r.stdout
    assert p.count(f"/manifests/{img.tag}", method="GET") == 1


def _tls_registry(tmp_path):
    """A TLS-only loopback server answering like a registry without images: (server, [(method, path)])."""
    import http.server
    import shutil
    import ssl
    import threading

    if not shutil.which("openssl"):
        pytest.skip("openssl needed to make a certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(("GET", self.path))
            self.send_response(200)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_HEAD(self):
            seen.append(("HEAD", self.path))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_loopback_registry_speaking_tls_is_used_over_https(cli, tmp_path):
    """Loopback registries are probed over plain HTTP first; a TLS-only port makes us switch to https."""
    srv, seen = _tls_registry(tmp_path)
    try:
        t0 = time.monotonic()
        r = cli("pull", f"127.0.0.1:{srv.server_address[1]}/x/y:1")
        assert "manifest for" in one_error(r) and "not found" in r.stderr
        assert ("HEAD", "/v2/x/y/manifests/1") in seen               # reached over https
        assert time.monotonic() - t0 < 10
    finally:
        srv.shutdown()


@pytest.fixture
def forward_proxy():
    from tools.forward_proxy import ForwardProxy
    p = ForwardProxy(auth=("pxuser", "p@ss word")).start()
    yield p
    p.stop()


def test_pull_goes_through_the_proxy_the_environment_names(cli, root, pushed, registry, forward_proxy):
    """HTTP_PROXY with user:password (407 without them), as behind a corporate proxy: every request to
    the registry goes through it, and the image is the registry's."""
    img = pushed["layered"]
    url = forward_proxy.url_with("pxuser", "p%40ss%20word")
    r = cli("pull", f"{registry.host}/{img.repo}:{img.tag}", env={**FAST, "HTTP_PROXY": url})
    assert r.returncode == 0, r.stderr
    assert f"Digest: {img.manifest_digest}" in r.stdout
    through = [t for m, t in forward_proxy.log if m == "GET"]
    for layer in img.layers:
        assert f"http://{registry.host}/v2/{img.repo}/blobs/{layer.digest}" in through
    assert cli("run", "--rm", f"{registry.host}/{img.repo}:{img.tag}", "true").returncode == 0


def test_no_proxy_and_a_wrong_proxy_password(cli, root, pushed, registry, forward_proxy):
    img = pushed["busybox"]
    ref = f"{registry.host}/{img.repo}:{img.tag}"
    r = cli("pull", ref, env={**FAST, "http_proxy": forward_proxy.url_with("pxuser", "nope")})
    assert r.returncode != 0 and "Proxy Authentication Required" in one_error(r)
    blobs, layers, rows = store_state(root)
    assert not blobs and not layers and not any(rows.values())
    r = cli("pull", ref, env={**FAST, "http_proxy": forward_proxy.url_with("pxuser", "nope"),
                              "no_proxy": "example.com, 127.0.0.0/8"})
    assert r.returncode == 0, r.stderr
    assert all(m != "GET" or "/blobs/" not in t for m, t in forward_proxy.log)


def test_https_registry_through_a_connect_tunnel(cli, tmp_path, forward_proxy):
    """HTTPS_PROXY: TLS to the registry inside CONNECT, the proxy sees no plain request to it."""
    srv, seen = _tls_registry(tmp_path)
    port = srv.server_address[1]
    try:
        url = forward_proxy.url_with("pxuser", "p%40ss%20word")
        r = cli("pull", f"127.0.0.1:{port}/x/y:1", env={"HTTPS_PROXY": url, "HTTP_PROXY": url})
        assert "manifest for" in one_error(r) and "not found" in r.stderr
        assert ("CONNECT", f"127.0.0.1:{port}") in forward_proxy.log
        assert ("HEAD", "/v2/x/y/manifests/1") in seen
    finally:
        srv.shutdown()
