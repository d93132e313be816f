"""Ready to run: `pull` leaves the image's root filesystem (its snapshot) built, so the first `run`
of a freshly pulled image takes the same fast path as every later one; --no-snapshot and the
config's snapshot_on_pull = false leave that to the first run."""

from __future__ import annotations

import subprocess

import pytest

from container.engine.image.identity import chain_id


def _path(cli, ref) -> str:
    r = cli("run", "--rm", ref, "true", env={"CONTAINER_TRACE": "1"})
    assert r.returncode == 0, r.stderr
    return "fast" if "path chosen: FastStore" in r.stderr else "orm"


def test_pull_builds_the_snapshot_and_the_first_run_is_fast(cli, root, pushed):
    img = pushed["layered"]
    r = cli("pull", img.ref)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    assert (root / "snapshots" / chain_id(img.diff_ids)[7:]).is_dir()
    assert _path(cli, img.ref) == "fast"
    assert cli("fsck").returncode == 0


@pytest.mark.parametrize("how", ["flag", "config"])
def test_without_the_snapshot_the_first_run_builds_it(cli, root, pushed, how):
    img = pushed["layered"]
    if how == "config":
        cli.write_config("snapshot_on_pull = false\n")
    r = cli("pull", *(["--no-snapshot"] if how == "flag" else []), img.ref)
    assert r.returncode == 0, r.stderr
    snap = root / "snapshots" / chain_id(img.diff_ids)[7:]
    assert not snap.exists()
    assert _path(cli, img.ref) == "orm"            # the first run builds it...
    assert snap.is_dir() and _path(cli, img.ref) == "fast"    # ...and later ones use it


@pytest.mark.root
def test_a_snapshot_that_cannot_be_built_is_a_warning_not_a_failed_pull(cli, root, pushed):
    img = pushed["busybox"]
    (root / "snapshots").mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(root / "snapshots")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        r = cli("pull", img.ref)
        assert r.returncode == 0, r.stderr
        warnings = [x for x in r.stderr.splitlines() if x.startswith("WARNING:")]
        assert len(warnings) == 1 and "root filesystem could not be built" in warnings[0], r.stderr
        assert cli("images", "-q").stdout.split() == [img.config_digest[7:19]]
    finally:
        subprocess.run(["chattr", "-i", str(root / "snapshots")], check=True)
    r = cli("run", "--rm", img.ref, "echo", "ok")            # the first run builds it now
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
