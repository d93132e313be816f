"""df: one consistent source whose numbers add up and agree with du."""

from __future__ import annotations

import json
import os


import gc_synth as S  # noqa: E402


def df_json(cli, *extra) -> dict:
    return json.loads(cli("df", "--format", "report", *extra, check=True).stdout)


def test_df_matches_du_and_adds_up(cli, root, pushed):
    for key in ("shared-a", "shared-b", "busybox", "layered"):
        cli("pull", pushed[key].ref, check=True)
    assert cli("run", "--name", "w", pushed["busybox"].ref, "/bin/sh", "-c",
               "dd if=/dev/zero of=/big bs=1k count=300 2>/dev/null").returncode == 0
    rep = df_json(cli, "-v")
    # the rows partition the store: total + metadata (db, lock, skeleton dirs) is exactly du
    assert sum(r["size"] for r in rep["summary"]) == rep["total"]
    assert rep["total"] + rep["metadata"] - rep["database"] == S.du(root, without_db=True)
    by = {r["type"]: r for r in rep["summary"]}
    assert by["Manifests"]["total"] == 4 and by["Manifests"]["active"] == 1
    assert by["Containers"]["total"] == 1 and by["Containers"]["size"] >= 300 * 1024
    assert all(0 <= r["reclaimable"] <= r["size"] for r in rep["summary"])
    # per image: unique + shared once = all image content; shared-a and shared-b share their base
    imgs = {tuple(i["tags"]): i for i in rep["images"]}
    assert sum(i["unique"] for i in rep["images"]) + rep["images_shared"] == rep["images_total"]
    assert all(i["unique"] + i["shared"] == i["size"] for i in rep["images"])
    sa = next(i for t, i in imgs.items() if any("shared-a" in x for x in t))
    assert sa["shared"] > 0
    assert rep["images_total"] == by["Manifests"]["size"] + by["Layers"]["size"] + by["Snapshots"]["size"]
    # table output for humans, same numbers
    r = cli("system", "df", check=True)
    assert r.stdout.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    r = cli("df", "-v", check=True)
    assert "UNIQUE SIZE" in r.stdout and "shared-a" in r.stdout


def test_df_hardlinks_counted_once(root):
    from container.engine.maint import df as D
    from container.engine.store import Store

    s = Store(root)
    s.db()
    S.add_image(s, "docker.io/library/app0", "latest", S.layers_for(0))
    rep = D.disk_usage(s)
    by = {r["type"]: r for r in rep["summary"]}
    # the snapshot is hardlinks to the layer trees: only its directories are its own
    dirs = 0
    for d, _, _ in os.walk(s.snapshots_dir):
        if d != str(s.snapshots_dir):
            dirs += os.lstat(d).st_blocks * 512
    assert by["Snapshots"]["size"] == dirs and by["Layers"]["size"] > 20000
    assert rep["total"] + rep["metadata"] - rep["database"] == S.du(root, without_db=True)


def test_df_empty_store_and_bad_format(cli, root):
    rep = df_json(cli)
    assert rep["total"] == 0 and [r["size"] for r in rep["summary"]] == [0] * 7
    r = cli("df", "--format", "yaml")
    assert r.returncode != 0 and "Traceback" not in r.stderr
