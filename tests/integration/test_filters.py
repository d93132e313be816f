"""`images --filter` and `ps --filter` as docker documents them: one key's values OR, different keys
AND; a bad filter is one clear error, exit 1."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from checks import one_error


def names(cli, *args) -> list[str]:
    return sorted(cli("images", "--format", "{{.Repository}}:{{.Tag}}", *args, check=True).stdout.split())


@pytest.fixture
def images(cli, root, pushed):
    bb, lay = pushed["busybox"], pushed["layered"]
    cli("pull", bb.ref, check=True)
    cli("pull", lay.ref, check=True)
    cli("pull", pushed["shared-b"].by_digest, check=True)       # a digest reference only: dangling
    cli("tag", bb.ref, "mybox:v1", check=True)
    cli("tag", bb.ref, "other/mybox:v2", check=True)
    # the test images share one creation time: make layered the newest, busybox the oldest
    db = sqlite3.connect(root / "metadata.db")
    db.execute("UPDATE image SET created = '2030-01-01 00:00:00' WHERE id = ?", (lay.manifest_digest,))
    db.execute("UPDATE image SET created = '2000-01-01 00:00:00' WHERE id = ?", (bb.manifest_digest,))
    db.commit()
    db.close()
    return bb, lay


def test_image_filters(cli, images, pushed):
    bb, lay = images
    bb_name, lay_name = f"{bb.host}/{bb.repo}", f"{lay.host}/{lay.repo}"
    # reference: Go's path.Match on the familiar name, `*` not crossing '/'; only matching tags listed
    assert names(cli, "--filter", "reference=mybox") == ["mybox:v1"]
    assert names(cli, "--filter", "reference=*box*") == ["mybox:v1"]
    assert names(cli, "--filter", "reference=*/mybox:v?") == ["other/mybox:v2"]
    assert names(cli, "-f", "reference=mybox", "-f", "reference=other/*") == ["mybox:v1", "other/mybox:v2"]
    assert names(cli, "--filter", "reference=nothing*") == []
    # dangling: no tag
    r = cli("images", "--filter", "dangling=true", "--format", "{{.Repository}} {{.Tag}} {{.ImageID}}", check=True)
    assert r.stdout.split() == [f"{bb.host}/test/shared-b", "<none>", pushed["shared-b"].config_digest]
    assert f"{bb.host}/test/shared-b:<none>" not in names(cli, "--filter", "dangling=false")
    # label=KEY, label=KEY=VALUE
    assert names(cli, "--filter", "label=org.example.test") == [f"{lay_name}:latest"]
    assert names(cli, "--filter", "label=org.example.test=layered") == [f"{lay_name}:latest"]
    assert names(cli, "--filter", "label=org.example.test=other") == []
    # before / since: strictly older / newer than the named image
    assert f"{lay_name}:latest" in names(cli, "--filter", "since=mybox:v1")
    assert f"{bb_name}:latest" not in names(cli, "--filter", "since=mybox:v1")
    assert f"{bb_name}:latest" in names(cli, "--filter", f"before={lay.ref}")
    assert names(cli, "--filter", f"before={bb.ref}") == []
    # different keys AND
    assert names(cli, "--filter", "reference=mybox", "--filter", "label=org.example.test") == []
    assert cli("images", "-q", "--filter", "reference=other/mybox", check=True).stdout.split() == [bb.config_digest[7:19]]


@pytest.mark.parametrize("flt, says", [
    ("colour=red", "invalid filter 'colour'"),
    ("dangling", "expected name=value"),
    ("dangling=maybe", "dangling=maybe"),
    ("before=no-such-image", "No such image: no-such-image"),
    ("reference=[ab", "syntax error in pattern"),
])
def test_bad_image_filters(cli, images, flt, says):
    r = cli("images", "--filter", flt)
    assert r.returncode == 1 and says in one_error(r) and r.stdout == ""


def test_ps_filters(cli, pushed):
    bb, lay = pushed["busybox"], pushed["layered"]
    assert cli("run", "--name", "alpha", bb.ref, "true").returncode == 0
    assert cli("run", "--name", "beta", bb.ref, "sh", "-c", "exit 3").returncode == 3
    assert cli("run", "--name", "gamma", lay.ref, "true").returncode == 0

    def ps(*f: str) -> list[str]:
        return sorted(cli("ps", *f, "--format", "{{.Names}}", check=True).stdout.split())

    # status= and exited= list stopped containers without -a, as docker's do
    assert ps("--filter", "status=exited") == ["alpha", "beta", "gamma"]
    assert ps("--filter", "exited=3") == ["beta"]
    assert ps("--filter", "exited=0") == ["alpha", "gamma"]
    assert ps("--filter", "status=running") == [] and ps("-a", "--filter", "status=created") == []
    assert ps("-a", "--filter", "name=alpha", "--filter", "name=gam") == ["alpha", "gamma"]   # OR
    assert ps("-a", "--filter", "name=alpha", "--filter", "exited=3") == []                   # AND
    assert ps("-a", "--filter", "name=^b") == ["beta"]
    assert ps("-a", "--filter", f"ancestor={lay.ref}") == ["gamma"]
    assert ps("-a", "--filter", f"ancestor={bb.config_digest[7:19]}") == ["alpha", "beta"]
    assert ps("-a", "--filter", "ancestor=no-such-image") == []
    assert ps("-a", "--filter", "label=x") == []
    cid = cli("ps", "-a", "--filter", "name=beta", "--format", "{{.FullID}}", check=True).stdout.strip()
    assert ps("-a", "--filter", f"id={cid[:6]}") == ["beta"]
    assert ps("--filter", "name=alpha") == []              # no -a, no status filter: running ones only
    for flt, says in (("state=up", "invalid filter 'state'"), ("status=sleeping", "status=sleeping"),
                      ("exited=x", "exited=x"), ("name=(", "name=(")):
        r = cli("ps", "-a", "--filter", flt)
        assert r.returncode == 1 and says in one_error(r), r.stderr


def test_ps_filter_running(cli, pushed):
    """A running container is listed by status=running and not by status=exited."""
    argv = [str(cli.exe), "--root", str(cli.root), "run", "--name", "sleeper", pushed["busybox"].ref, "sleep", "30"]
    p = subprocess.Popen(argv, env=cli.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cli("ps", "-q", check=True).stdout.strip():
            time.sleep(0.1)
        r = cli("ps", "--filter", "status=running", "--format", "{{.Names}} {{.State}}", check=True)
        assert r.stdout == "sleeper running\n"
        assert cli("ps", "--filter", "status=exited", "--format", "{{.Names}}", check=True).stdout == ""
    finally:
        p.kill()
        p.wait()
        cli("rm", "-f", "sleeper")
