"""push to real registries (docker-registry on loopback; with a token server too): what the registry
receives (its access log), what skopeo and podman then pull, and docker push's lines.
"""

from __future__ import annotations

import json
import os
import subprocess

from checks import one_error


def _pull(cli, ref):
    r = cli("pull", "-q", ref)
    assert r.returncode == 0, r.stderr


def _remote_digest(ref, *extra):
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_push_to_an_empty_registry_then_again(cli, root, pushed, make_registry, tmp_path, podman):
    img = pushed["layered"]
    _pull(cli, img.ref)
    reg = make_registry(storage_dir=tmp_path / "s")
    dest = f"{reg.host}/mine/layered:v1"
    mark = reg.mark()
    r = cli("push", img.ref, dest)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"v1: digest: {img.manifest_digest} size: {img.built.manifest_size}"
    assert f"The push refers to repository [{reg.host}/mine/layered]" in r.stderr
    for d in img.layer_digests:
        assert f"{d[7:19]}: Pushed" in r.stderr
    reqs = reg.requests(since=mark)
    puts = [e for e in reqs if e.method == "PUT" and "/blobs/uploads/" in e.path]
    assert len(puts) == len(set(img.layer_digests)) + 1           # the layers and the config, once each
    assert ("PUT", "/v2/mine/layered/manifests/v1", 201) in reqs
    assert [e.path for e in reqs if e.method == "PUT"][-1] == "/v2/mine/layered/manifests/v1"   # manifest last
    # what others pull from there: the same manifest and config
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                         capture_output=True, check=True).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == img.manifest_digest
    assert _remote_digest(dest, "--config")["rootfs"]["diff_ids"] == img.diff_ids
    r = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{tmp_path / 'o'}:x"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if os.geteuid() == 0:
        r = podman("pull", "--tls-verify=false", dest)
        assert r.returncode == 0, r.stderr
        assert json.loads(podman("image", "inspect", dest).stdout)[0]["Digest"] == img.manifest_digest
    # a second push uploads nothing
    mark = reg.mark()
    r = cli("push", img.ref, dest)
    assert r.returncode == 0, r.stderr
    for d in img.layer_digests:
        assert f"{d[7:19]}: Layer already exists" in r.stderr
    reqs = reg.requests(since=mark)
    assert not [e for e in reqs if e.method in ("POST", "PATCH") or "/blobs/uploads/" in e.path]


def test_push_mounts_from_another_repository(cli, root, pushed, make_registry, tmp_path):
    a, b = pushed["shared-a"], pushed["shared-b"]
    _pull(cli, a.ref)
    _pull(cli, b.ref)
    reg = make_registry(storage_dir=tmp_path / "s")
    assert cli("push", a.ref, f"{reg.host}/one/a:latest").returncode == 0
    assert cli("tag", a.ref, f"{reg.host}/one/a:latest").returncode == 0      # the store knows it is there
    mark = reg.mark()
    r = cli("push", b.ref, f"{reg.host}/two/b:latest")
    assert r.returncode == 0, r.stderr
    common = set(a.layer_digests) & set(b.layer_digests)
    for d in common:
        assert f"{d[7:19]}: Mounted from one/a" in r.stderr
    posts = [e for e in reg.requests(since=mark) if e.method == "POST"]
    assert any("mount=" in e.query and e.status == 201 for e in posts)
    assert _remote_digest(f"{reg.host}/two/b:latest")["Digest"] == b.manifest_digest


def test_chunked_upload_of_large_blobs(cli, root, pushed, make_registry, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    reg = make_registry(storage_dir=tmp_path / "s")
    mark = reg.mark()
    r = cli("push", img.ref, f"{reg.host}/big/bb:1", env={"CONTAINER_PUSH_CHUNK": "65536"})
    assert r.returncode == 0, r.stderr
    patches = [e for e in reg.requests(since=mark) if e.method == "PATCH"]
    biggest = max(x.size for x in img.layers)
    assert len(patches) >= biggest // 65536
    assert _remote_digest(f"{reg.host}/big/bb:1")["Digest"] == img.manifest_digest


def test_push_with_a_token_server(cli, root, pushed, make_registry, make_token_server, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    ts = make_token_server(users={"alice": "s3cret"}, anonymous_pull=True)
    reg = make_registry(storage_dir=tmp_path / "s", token=ts.auth())
    dest = f"{reg.host}/alice/bb:latest"
    line = one_error(cli("push", img.ref, dest))
    assert "push access denied" in line or "denied" in line
    assert cli("login", reg.host, "-u", "alice", "--password-stdin", input="s3cret\n").returncode == 0
    r = cli("push", img.ref, dest)
    assert r.returncode == 0, r.stderr
    assert any("repository:alice/bb:pull,push" in s for q in ts.requests for s in q["scope"])
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", "alice:s3cret", f"docker://{dest}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == img.manifest_digest


def test_push_pulled_from_an_index_pushes_that_platform(cli, root, pushed, make_registry, tmp_path):
    img = pushed["multiarch"]
    _pull(cli, img.ref)
    doc = json.loads(cli("inspect", img.ref).stdout)[0]
    reg = make_registry(storage_dir=tmp_path / "s")
    r = cli("push", img.ref, f"{reg.host}/one/plat:latest")
    assert r.returncode == 0, r.stderr
    assert _remote_digest(f"{reg.host}/one/plat:latest")["Digest"] == doc["Container"]["ManifestDigest"]


def test_push_errors(cli, root, pushed, make_registry, tmp_path):
    assert "No such image" in one_error(cli("push", "nosuch/image:1"))
    img = pushed["busybox"]
    _pull(cli, img.ref)
    assert "cannot reach registry" in one_error(cli("push", img.ref, "127.0.0.1:1/x/y:1",
                                                    env={"CONTAINER_REGISTRY_ATTEMPTS": "1"}))


def test_chunked_upload_resumes_after_a_lost_patch(cli, root, pushed, make_registry, proxy, tmp_path):
    img = pushed["busybox"]
    _pull(cli, img.ref)
    reg = make_registry(storage_dir=tmp_path / "s")
    p = proxy(reg.host)
    fault = p.reset(r"/blobs/uploads/", after=0, methods=("PATCH",), count=1)
    r = cli("push", img.ref, f"{p.host}/resume/bb:1",
            env={"CONTAINER_PUSH_CHUNK": "65536", "CONTAINER_REGISTRY_BACKOFF": "0.01"})
    assert r.returncode == 0, r.stderr
    assert fault.hits == 1
    assert _remote_digest(f"{reg.host}/resume/bb:1")["Digest"] == img.manifest_digest
