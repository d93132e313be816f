"""Ready to run: `pull` leaves the image's root filesystem (its snapshot) built, so the first `run`
of a freshly pulled image takes the same fast path as every later one; --no-snapshot and the
config's snapshot_on_pull = false leave that to the first run."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("base_key", ["busybox", "shared-a"])
def test_a_pull_whose_lower_layers_are_stored_builds_the_same_snapshot(cli, root, pushed, tmp_path, base_key):
    """The layers below the first download merge while it runs, the rest onto them afterwards
    (whiteouts, opaque dirs and file<->dir replacements of `layered` land on that half-built tree):
    the tree and its recorded entries are those of a pull that merges all the layers at once."""
    from checks import tree

    base, img = pushed[base_key], pushed["layered" if base_key == "busybox" else "shared-b"]
    stored = next(i for i, (a, b) in enumerate(zip(base.diff_ids + [None], img.diff_ids)) if a != b)
    assert 0 < stored < len(img.diff_ids)          # (what makes this test mean something)
    assert cli("pull", base.ref).returncode == 0
    r = cli("-v", "pull", img.ref)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    assert f"snapshot: merging the {stored} stored layer" in r.stderr, r.stderr
    cold = tmp_path / "cold"
    assert cli("pull", img.ref, root=cold).returncode == 0
    chain = chain_id(img.diff_ids)[7:]
    assert tree(root / "snapshots" / chain) == tree(cold / "snapshots" / chain)
    q = f"select entries from snapshot where chain_id = 'sha256:{chain}'"
    assert cli("sql", q).stdout == cli("sql", q, root=cold).stdout
    assert _path(cli, img.ref) == "fast"
    assert cli("fsck").returncode == 0
    assert not [n for n in os.listdir(root / "snapshots") if n.startswith(".tmp")]
