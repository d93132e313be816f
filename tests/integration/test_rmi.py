"""rmi removes the reference that was named, as docker and podman do; the image goes with its last one.

Regression for a data-loss bug: `rmi NAME@DIGEST` used to untag NAME:latest too and delete the image.
"""

from __future__ import annotations

import json

import pytest


def _refs(cli, ref):
    r = cli("inspect", ref)
    if r.returncode != 0:
        return None
    d = json.loads(r.stdout)[0]
    return sorted(d["RepoTags"]), sorted(d["RepoDigests"])


@pytest.fixture
def bb(cli, pushed):
    img = pushed["busybox"]
    cli("pull", img.ref, check=True)
    return img


def test_rmi_by_digest_keeps_the_tag_and_the_image(cli, bb):
    by_digest = f"{bb.host}/{bb.repo}@{bb.manifest_digest}"
    cli("pull", by_digest, check=True)                       # a digest reference of its own
    r = cli("rmi", by_digest)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"Untagged: {by_digest}"]
    assert _refs(cli, bb.ref) is not None                    # still there, under its tag
    assert cli("images").stdout.splitlines()[1].split()[:2] == [f"{bb.host}/{bb.repo}", "latest"]
    assert cli("images", "-q").stdout.split() == [bb.config_digest[7:19]]


@pytest.mark.parametrize("verb", [["rmi"], ["image", "rm"]])
def test_rmi_by_digest_of_an_image_pulled_by_tag_only(cli, bb, verb):
    by_digest = f"{bb.host}/{bb.repo}@{bb.manifest_digest}"
    r = cli(*verb, by_digest)
    assert r.returncode == 0, r.stderr
    assert "Deleted" not in r.stdout and f"Untagged: {by_digest}" in r.stdout
    tags, _ = _refs(cli, bb.ref)
    assert tags == [f"{bb.host}/{bb.repo}:latest"]


def test_rmi_by_tag_drops_that_repositorys_digest_references(cli, bb):
    by_digest = f"{bb.host}/{bb.repo}@{bb.manifest_digest}"
    cli("pull", by_digest, check=True)
    cli("tag", bb.ref, "mine/bb:v1", check=True)
    r = cli("rmi", bb.ref)
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.splitlines()) == {f"Untagged: {bb.host}/{bb.repo}:latest", f"Untagged: {by_digest}"}
    tags, digests = _refs(cli, "mine/bb:v1")
    assert tags == ["mine/bb:v1"] and digests == [f"mine/bb@{bb.manifest_digest}"]
    assert bb.repo not in cli("images", "--digests").stdout
    r = cli("rmi", "mine/bb:v1")                              # the last reference: the image goes
    assert r.returncode == 0 and f"Deleted: {bb.config_digest}" in r.stdout
    assert cli("images", "-q").stdout.strip() == ""


@pytest.mark.parametrize("how", ["id", "short-id", "sha256-id"])
def test_rmi_by_id_removes_every_reference(cli, bb, how):
    iid = {"id": bb.config_digest[7:], "short-id": bb.config_digest[7:19], "sha256-id": bb.config_digest}[how]
    cli("tag", bb.ref, f"{bb.host}/{bb.repo}:other", check=True)
    r = cli("rmi", iid)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"Untagged: {bb.host}/{bb.repo}:latest" in lines and f"Untagged: {bb.host}/{bb.repo}:other" in lines
    assert f"Untagged: {bb.host}/{bb.repo}@{bb.manifest_digest}" in lines
    assert lines[-1] == f"Deleted: {bb.config_digest}"
    assert cli("images", "-q").stdout.strip() == ""


def test_rmi_by_id_in_several_repositories_needs_force(cli, bb):
    cli("tag", bb.ref, "mine/bb:v1", check=True)
    r = cli("rmi", bb.config_digest[7:19])
    assert r.returncode == 1 and "must be forced" in r.stderr and "multiple repositories" in r.stderr
    assert len(_refs(cli, bb.ref)[0]) == 2                    # nothing removed
    r = cli("rmi", "-f", bb.config_digest[7:19])
    assert r.returncode == 0 and f"Deleted: {bb.config_digest}" in r.stdout


@pytest.mark.root
def test_rmi_with_a_container_using_the_image(cli, bb):
    r = cli("run", "--name", "c1", bb.ref, "true")
    assert r.returncode == 0, r.stderr
    cid = json.loads(cli("inspect", "c1", check=True).stdout)[0]["Id"]
    for args in (["rmi", bb.ref], ["rmi", bb.config_digest[7:19]]):
        r = cli(*args)
        assert r.returncode == 1 and "must force" in r.stderr or "must be forced" in r.stderr, r.stderr
        assert cid[:12] in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _refs(cli, bb.ref) is not None                    # nothing removed
    r = cli("rmi", "-f", bb.ref)                            # untagged; the image stays as <none>
    assert r.returncode == 0 and "Deleted" not in r.stdout, r.stdout
    assert cli("images", "-q").stdout.split() == [bb.config_digest[7:19]]
    assert "<none>" in cli("images").stdout
    cli("rm", "c1", check=True)
    r = cli("rmi", bb.config_digest[7:19])
    assert r.returncode == 0 and f"Deleted: {bb.config_digest}" in r.stdout


def test_one_config_under_two_manifests_is_one_image_id(cli, pushed):
    """The same image pulled as OCI and as Docker schema 2 (two manifests, one config): its id and
    short id name one image, as in docker and podman; inspect lists both names, rmi by id needs
    -f across the two repositories and then removes both, and a plain run by id runs it."""
    a, b = pushed["busybox"], pushed["busybox-v2s2"]
    assert a.config_digest == b.config_digest and a.manifest_digest != b.manifest_digest
    cli("pull", "-q", a.ref, check=True)
    cli("pull", "-q", b.ref, check=True)
    short = a.config_digest[7:19]
    tags, _digests = _refs(cli, short)
    assert tags == sorted([a.ref, b.ref])
    assert [ln.split()[2] for ln in cli("images").stdout.splitlines()[1:]] == [short, short]
    for name in (short, a.config_digest):
        r = cli("rmi", name)
        assert r.returncode == 1 and "referenced in multiple repositories" in r.stderr, r.stderr
    assert len(cli("images").stdout.splitlines()) == 3
    r = cli("rmi", "-f", short)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"Deleted: {a.config_digest}"
    assert {f"Untagged: {a.ref}", f"Untagged: {b.ref}"} <= set(r.stdout.splitlines())
    assert cli("images", "-qa").stdout.split() == []
