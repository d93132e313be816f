"""fsck: finds what is wrong in both directions, exits 1, and --repair puts it right."""

from __future__ import annotations

import os


import gc_synth as S  # noqa: E402


def hexof(d: str) -> str:
    return d.split(":", 1)[1]


def test_fsck_clean_then_damage_then_repair(cli, root, pushed):
    a, b = pushed["shared-a"], pushed["layered"]
    cli("pull", a.ref, check=True)
    cli("pull", b.ref, check=True)
    cli("pull", pushed["zstd"].ref, check=True)
    cli("pull", pushed["multiarch"].ref, check=True)
    r = cli("-v", "fsck", "--deep")
    assert "layer_trees_verified=" in r.stdout and "layer_trees_verified=0" not in r.stdout
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout

    # 1. a layer blob deleted, a tree damaged, a tree deleted, crash leftovers, refcount drift
    gone_blob = a.layer_digests[-1]
    os.chmod(root / "blobs/sha256" / hexof(gone_blob), 0o644)
    os.unlink(root / "blobs/sha256" / hexof(gone_blob))
    damaged = root / "layers" / hexof(b.diff_ids[-1])
    victim = next(p for p in damaged.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size)
    os.chmod(victim, 0o644)
    victim.write_bytes(b"tampered")
    gone_tree = root / "layers" / hexof(a.diff_ids[0])
    import shutil
    shutil.rmtree(gone_tree)
    (root / "layers" / ".tmp-crash").mkdir()
    (root / "blobs/sha256" / ("0" * 64)).write_bytes(b"not what the name says")
    (root / "containers" / ("f" * 64)).mkdir()
    import sqlite3
    con = sqlite3.connect(root / "metadata.db")
    con.execute("UPDATE layer SET refs = refs + 3")
    con.commit()
    con.close()

    r = cli("fsck")
    assert r.returncode == 1
    out = r.stdout
    for kind in ("missing-blob", "missing-layer", "half-built", "corrupt-blob", "orphan", "refcount"):
        assert kind in out, (kind, out)
    assert "deep" not in out.split("fsck:")[0].replace("--deep", "")    # only with --deep
    r = cli("fsck", "--deep")
    assert r.returncode == 1 and "differs from its blob" in r.stdout and victim.name in r.stdout

    r = cli("fsck", "--repair", "--deep")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-downloaded" in r.stdout and "re-unpacked" in r.stdout and "deleted" in r.stdout
    r = cli("fsck", "--deep")
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout
    for p in (a, b):
        assert cli("run", "--rm", p.ref, "/bin/true").returncode == 0
    # the repair did not add tags
    r = cli("sql", "--format", "csv", "SELECT repository, tag FROM tag ORDER BY 1", check=True)
    assert r.stdout.count("\n") == 5 and ",\n" not in r.stdout


def test_fsck_dangling_rows_dropped(root):
    from container.engine.maint import fsck as F
    from container.engine.store import Store
    from container.schema import Blob, Snapshot

    s = Store(root)
    s.db()
    S.add_image(s, "docker.io/library/app0", "latest", S.layers_for(0))
    S.rmi(s, next(iter([t.image_id for t in __import__("container.schema", fromlist=["Tag"]).Tag.select()])))
    # unreferenced rows whose files vanished: dangling, nothing needs them
    for b in Blob.select():
        os.unlink(s.blobs.dir / hexof(b.digest))
    for sn in Snapshot.select():
        S_path = s.snapshot_path(sn.chain_id)
        import shutil
        shutil.rmtree(S_path)
    rep = F.fsck(s)
    assert rep.remaining and {p.kind for p in rep.remaining} >= {"missing-blob", "missing-snapshot"}
    rep = F.fsck(s, repair=True)
    assert not rep.remaining, [p.detail for p in rep.remaining]
    assert Blob.select().count() == 0 and Snapshot.select().count() == 0
    assert not F.fsck(s, deep=True).remaining


def test_fsck_is_read_only_by_default(root):
    from container.engine.maint import fsck as F
    from container.engine.store import Store

    s = Store(root)
    s.db()
    S.add_image(s, "docker.io/library/app0", "latest", S.layers_for(0))
    (s.layers_dir / ".tmp-x").mkdir()
    before = sorted(S.content_paths(s))
    rep = F.fsck(s, deep=True)
    assert [p.kind for p in rep.remaining] == ["half-built"]
    assert sorted(S.content_paths(s)) == before


def test_deep_check_accepts_hardlinks_into_lower_layers(tmp_path):
    """A layer whose hardlink targets a lower layer holds a placeholder; fsck --deep must know it."""
    import hashlib
    import io

    import tarmaker as tm

    from container.engine.maint.fsck import verify_tree
    from container.engine.store import Store
    from container.engine.layer.unpack import unpack_layer

    store = Store(tmp_path / "root")
    store.ensure()
    blob = tm.tar(tm.dir("bin"), tm.hardlink("bin/sh", "bin/busybox"), tm.file("bin/own", b"x"))
    digest = str(store.blobs.put_bytes(blob))
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    tree = store.layer_path(diff_id)
    tree.mkdir(parents=True)
    unpack_layer(io.BytesIO(blob), tree)
    mt = "application/vnd.oci.image.layer.v1.tar"
    assert verify_tree(store, digest, mt, diff_id, tree) == []
    os.setxattr(tree / "bin/sh", "user.container.hardlink", b"etc/shadow")
    assert any("placeholder" in d for d in verify_tree(store, digest, mt, diff_id, tree))
