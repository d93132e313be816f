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
    # the pulls recorded what each blob and layer tree weighs: df and fsck need not measure them
    for r in json.loads(cli("sql", "--format", "json", "SELECT digest, disk, inode FROM blob", check=True).stdout):
        st = os.lstat(root / "blobs" / "sha256" / r["digest"][7:])
        assert (r["disk"], r["inode"]) == (st.st_blocks * 512, st.st_ino), r
    assert json.loads(cli("sql", "--format", "json", "SELECT count(*) AS n FROM layer WHERE disk IS NULL",
                          check=True).stdout) == [{"n": 0}]
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


def _store_at_scale(root, n: int = 40):
    """n images of 4 layers (a shared base, a layer shared by pairs, two of their own), a container on
    every 7th, 300 orphan blobs: what df, gc and fsck see on a busy store, built without a registry."""
    from container.engine.store import Store

    s = Store(root)
    s.db()
    ids = []
    for i in range(n):
        layers = [S.BASE, {f"pair{i // 2}/f": bytes([i // 2 % 250]) * 5000},
                  {f"own{i}/a": bytes([i % 250]) * (2000 + 97 * i), f"own{i}/l": f"->/own{i}/a"},
                  {f"own{i}/b/c": b"c" * (300 * i + 1)}]
        ids.append(S.add_image(s, f"docker.io/library/scale{i}", "latest", layers, seed=str(i)))
    for i in range(0, n, 7):
        S.add_container(s, ids[i], f"c{i}")
    for k in range(300):
        s.blobs.put_bytes(f"orphan {k}\n".encode())
    return s, ids


def _check_adds_up(s, root) -> dict:
    from container.engine.maint import df as D

    rep = D.disk_usage(s, verbose=True)
    assert rep["total"] + rep["metadata"] - rep["database"] == S.du(root, without_db=True)
    assert sum(r["size"] for r in rep["summary"]) == rep["total"]
    assert sum(i["unique"] for i in rep["images"]) + rep["images_shared"] == rep["images_total"]
    by = {r["type"]: r for r in rep["summary"]}
    assert rep["images_total"] == by["Manifests"]["size"] + by["Layers"]["size"] + by["Snapshots"]["size"]
    return rep


def test_df_from_records_at_scale_agrees_with_du_and_gc(root):
    """df reads what the rows record (filled by the first df), and its numbers stay what du and
    gc measure: with the records fresh, after a tree is replaced behind them, and after gc."""
    from container.engine.maint import gc as G
    from container.schema import Layer, Snapshot

    s, ids = _store_at_scale(root)
    first = _check_adds_up(s, root)                 # no records yet: measured, then recorded
    assert not Layer.select().where(Layer.disk.is_null()).exists()
    assert not Snapshot.select().where(Snapshot.disk.is_null()).exists()
    again = _check_adds_up(s, root)                 # from the records
    assert again["summary"] == first["summary"] and again["images"] == first["images"]
    # a snapshot rebuilt behind the records (new inodes): the stale record is not used
    import shutil

    from container.engine.layer.snapshot import ensure_snapshot
    from container.schema import ImageLayer
    chain = Snapshot.select().order_by(Snapshot.chain_id).first().chain_id
    shutil.rmtree(s.snapshot_path(chain))
    iid = next(i for i in ids if S.Image.get_by_id(i).chain_id == chain)
    with s.lock(exclusive=False):
        ensure_snapshot(s, [il.diff_id for il in ImageLayer.select().where(ImageLayer.image == iid)
                            .order_by(ImageLayer.position)])
    _check_adds_up(s, root)
    # untag a third of the images: gc frees what df said prune would free of them, and du agrees
    for iid in ids[1::3]:
        S.rmi(s, iid)
    before = S.du(root, without_db=True)
    plan = G.gc(s, dry_run=True)
    done = G.gc(s)
    assert done.freed == plan.freed > 0
    assert before - S.du(root, without_db=True) == done.freed
    rep = _check_adds_up(s, root)
    assert {r["type"]: r for r in rep["summary"]}["Unreferenced"]["size"] == 0
