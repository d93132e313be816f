"""engine.layer.snapshot: chain ids, hardlink merge with whiteouts, caching; equal to `umoci unpack`."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import tarmaker as tm  # noqa: E402
from tarmaker import add_layer  # noqa: E402
from checks import tree  # noqa: E402

from container.engine.errors import LayerError  # noqa: E402
from container.engine.image.identity import chain_ids  # noqa: E402
from container.engine.layer.snapshot import ensure_snapshot  # noqa: E402
from container.engine.store import Store  # noqa: E402

ROOT = os.geteuid() == 0


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root")
    s.ensure()
    s.db()
    yield s
    s.close()


# -- chain ids --------------------------------------------------------------------------------------

def test_chain_ids_per_spec():
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ids = chain_ids([a, b, c])
    assert ids[0] == a
    assert ids[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert ids[2] == "sha256:" + hashlib.sha256(f"{ids[1]} {c}".encode()).hexdigest()
    assert chain_ids([]) == []


# -- merge semantics ----------------------------------------------------------------------------------

def test_whiteouts_opaque_and_replacement(store):
    l1 = tm.tar(
        tm.dir("data"), tm.file("data/keep", b"keep"), tm.file("data/gone", b"gone"),
        tm.dir("data/olddir"), tm.file("data/olddir/a", b"a"), tm.dir("data/olddir/sub"),
        tm.file("data/olddir/sub/b", b"b"),
        tm.dir("data/opq"), tm.file("data/opq/x", b"x"), tm.dir("data/opq/y"), tm.file("data/opq/y/z", b"z"),
        tm.file("data/f2d", b"file"), tm.dir("data/d2f"), tm.file("data/d2f/in", b"in"),
        tm.symlink("data/s2d", "/etc"),
        tm.file("data/orig", b"hard"), tm.hardlink("data/link", "data/orig"),
        tm.dir("tmp", mode=0o1777),
    )
    l2 = tm.tar(
        tm.dir("data"), tm.file("data/.wh.gone"), tm.file("data/.wh.olddir"),
        tm.dir("data/opq"), tm.file("data/opq/new", b"new"), tm.file("data/opq/.wh..wh..opq"),
        tm.dir("data/f2d"), tm.file("data/f2d/inside", b"inside"), tm.file("data/d2f", b"now a file"),
        tm.dir("data/s2d"), tm.file("data/s2d/passwd", b"contained"),
        tm.file("data/.wh.never-existed"),
    )
    d1, d2 = add_layer(store, l1), add_layer(store, l2)
    chain, path = ensure_snapshot(store, [d1, d2])
    assert chain == chain_ids([d1, d2])[-1] and path == store.snapshot_path(chain)
    t = tree(path)
    assert "data/gone" not in t and "data/olddir" not in t and "data/olddir/sub/b" not in t
    assert (path / "data/keep").read_bytes() == b"keep"
    assert sorted(p for p in t if p.startswith("data/opq/")) == ["data/opq/new"]
    assert (path / "data/f2d/inside").read_bytes() == b"inside"
    assert (path / "data/d2f").read_bytes() == b"now a file"
    assert not (path / "data/s2d").is_symlink() and (path / "data/s2d/passwd").read_bytes() == b"contained"
    assert not any(".wh." in p for p in t)
    assert stat.S_IMODE(os.lstat(path / "tmp").st_mode) == 0o1777
    # files are hardlinks into the layer trees, hardlinks inside a layer stay one inode
    assert os.lstat(path / "data/keep").st_ino == os.lstat(store.layer_path(d1) / "data/keep").st_ino
    assert os.lstat(path / "data/link").st_ino == os.lstat(path / "data/orig").st_ino
    # directories are our own inodes, never the layer's
    assert os.lstat(path / "data").st_ino != os.lstat(store.layer_path(d2) / "data").st_ino
    # layer trees still hold their markers
    assert (store.layer_path(d2) / "data/.wh.gone").exists()


def test_cached_and_recorded(store):
    from container.schema import models as m

    d1 = add_layer(store, tm.tar(tm.file("a", b"a")))
    d2 = add_layer(store, tm.tar(tm.file("b", b"b")))
    chain, path = ensure_snapshot(store, [d1, d2])
    row = m.Snapshot.get(m.Snapshot.chain_id == chain)
    assert row.top_diff_id == d2 and row.parent == d1 and row.entries == 2 and row.size == 2  # two 1-byte files
    before = row.last_used
    ino = os.lstat(path).st_ino
    chain2, path2 = ensure_snapshot(store, [d1, d2])
    assert (chain2, path2) == (chain, path) and os.lstat(path2).st_ino == ino
    assert m.Snapshot.get(m.Snapshot.chain_id == chain).last_used >= before
    assert not [p for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp-")]


def test_implicit_dirs_keep_lower_attributes(store):
    d1 = add_layer(store, tm.tar(tm.dir("tmp", mode=0o1777, mtime=1_000_000), tm.dir("opt", mode=0o700)))
    d2 = add_layer(store, tm.tar(tm.file("tmp/new", b"n"), tm.file("opt/x/y", b"y")))
    _, path = ensure_snapshot(store, [d1, d2])
    assert stat.S_IMODE(os.lstat(path / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(path / "opt").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(path / "opt/x").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o755
    with pytest.raises(OSError):
        os.getxattr(path / "opt/x", "user.container.implicit")


def test_hardlinks_into_lower_layers(store):
    d1 = add_layer(store, tm.tar(tm.dir("bin"), tm.file("bin/busybox", b"bb", mode=0o755),
                                 tm.file("etc/old", b"old")))
    d2 = add_layer(store, tm.tar(tm.dir("bin"), tm.hardlink("bin/sh", "bin/busybox"),
                                 tm.hardlink("bin/sh2", "./bin/sh"), tm.dir("new"),
                                 tm.hardlink("new/old-link", "/etc/old")))
    # in the layer tree: placeholders, no copy of the lower file
    assert os.getxattr(store.layer_path(d2) / "bin/sh", "user.container.hardlink") == b"bin/busybox"
    _, path = ensure_snapshot(store, [d1, d2])
    bb = os.lstat(path / "bin/busybox")
    assert os.lstat(path / "bin/sh").st_ino == bb.st_ino == os.lstat(path / "bin/sh2").st_ino
    assert bb.st_ino == os.lstat(store.layer_path(d1) / "bin/busybox").st_ino
    assert (path / "new/old-link").read_bytes() == b"old"
    for p in ("bin/sh", "new/old-link", "bin"):
        assert "user.container.hardlink" not in os.listxattr(path / p, follow_symlinks=False)
        assert "user.container.hardlinks" not in os.listxattr(path / p, follow_symlinks=False)
    # the target missing in every lower layer: a clear error, no snapshot left behind
    d3 = add_layer(store, tm.tar(tm.hardlink("x", "no/such/file")))
    with pytest.raises(LayerError, match="not found in lower layers"):
        ensure_snapshot(store, [d1, d3])
    assert not [p for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp-")]


def test_a_link_to_a_placeholder_and_a_target_named_like_the_hold(store):
    """A second link (d/h2) to a layer's link into a lower layer (h) is that lower file too, not the
    empty placeholder; a link whose target names a whiteout (the merge's own hold directory among
    them) is refused, as a target no lower layer can hold."""
    d1 = add_layer(store, tm.tar(tm.file("a", b"old"), tm.dir("d")))
    d2 = add_layer(store, tm.tar(tm.hardlink("h", "a"), tm.hardlink("d/h2", "h")))
    _, path = ensure_snapshot(store, [d1, d2])
    a = os.lstat(path / "a")
    assert os.lstat(path / "d/h2").st_ino == os.lstat(path / "h").st_ino == a.st_ino
    assert (path / "d/h2").read_bytes() == b"old"
    d3 = add_layer(store, tm.tar(tm.hardlink("h2", ".wh..container-hold/0"), tm.hardlink("h1", "a")))
    with pytest.raises(LayerError, match="not found in lower layers"):
        ensure_snapshot(store, [d1, d3])


def test_root_entry_attributes(store):
    d1 = add_layer(store, tm.tar(tm.dir(".", mode=0o750), tm.file("a", b"a")))
    _, path = ensure_snapshot(store, [d1])
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o750


def test_missing_layer_is_a_clear_error(store):
    from container.engine.errors import StoreError

    with pytest.raises(StoreError, match="not unpacked"):
        ensure_snapshot(store, ["sha256:" + "0" * 64])
    with pytest.raises(LayerError):
        ensure_snapshot(store, [])


def test_exdev_falls_back_to_copy(store, monkeypatch):
    import errno as _errno

    d1 = add_layer(store, tm.tar(tm.file("f", b"data", mode=0o4755), tm.symlink("s", "f"), tm.fifo("p"),
                                 tm.dir("d"), tm.file("d/g", b"g")))
    real_link = os.link

    def exdev(*a, **kw):
        raise OSError(_errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", exdev)
    _, path = ensure_snapshot(store, [d1])
    monkeypatch.setattr(os, "link", real_link)
    assert (path / "f").read_bytes() == b"data"
    assert stat.S_IMODE(os.lstat(path / "f").st_mode) == 0o4755
    assert os.lstat(path / "f").st_ino != os.lstat(store.layer_path(d1) / "f").st_ino
    assert os.readlink(path / "s") == "f" and stat.S_ISFIFO(os.lstat(path / "p").st_mode)
    assert (path / "d/g").read_bytes() == b"g"


# -- against umoci ------------------------------------------------------------------------------------

def umoci_rootfs(layout: Path, tag: str, bundle: Path) -> Path:
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return bundle / "rootfs"


def diff_trees(ours: dict, theirs: dict) -> list[str]:
    out = []
    for p in sorted(set(ours) | set(theirs)):
        if ours.get(p) != theirs.get(p):
            out.append(f"{p}: ours={ours.get(p)} umoci={theirs.get(p)}")
    return out


@pytest.mark.skipif(not ROOT or not shutil.which("umoci"), reason="umoci unpack as root")
def test_equals_umoci_on_handmade_layers(store, tmp_path):
    layers = [
        tm.tar(tm.dir("etc"), tm.file("etc/passwd", b"root\n"), tm.dir("bin"),
               tm.file("bin/busybox", tm.seed_bytes(50_000), mode=0o755), tm.hardlink("bin/sh", "bin/busybox"),
               tm.symlink("bin/ls", "busybox"), tm.dir("usr"), tm.dir("usr/lib"), tm.symlink("lib", "usr/lib"),
               tm.dir("d2f"), tm.file("d2f/a", b"a"), tm.file("f2d", b"f"), tm.dir("home"),
               tm.dir("home/u", mode=0o750, uid=1000, gid=1000), tm.file("home/u/.profile", b"p", uid=1000, gid=1000),
               tm.dir("opq"), tm.file("opq/old", b"o"), tm.dir("opq/sub"), tm.file("opq/sub/old2", b"o2"),
               tm.fifo("fifo"), tm.file("sticky", b"", mode=0o1644), tm.dir("tmp", mode=0o1777)),
        tm.tar(tm.file(".wh.d2f"), tm.dir("d2f"), tm.file("d2f/b", b"b"), tm.dir("f2d"), tm.file("f2d/c", b"c"),
               tm.dir("opq"), tm.file("opq/.wh..wh..opq"), tm.file("opq/new", b"n"),
               tm.dir("etc"), tm.file("etc/.wh.passwd"), tm.dir("bin"), tm.file("bin/busybox", b"new busybox")),
        tm.tar(tm.dir("etc"), tm.file("etc/passwd", b"root again\n", mode=0o600),
               tm.file(".wh.fifo"), tm.dir("fifo"), tm.dir("home"), tm.file("home/.wh.u"),
               tm.dir("usr"), tm.dir("usr/lib"), tm.hardlink("usr/lib/busybox-link", "bin/busybox"),
               tm.hardlink("usr/lib/f2d-c", "/f2d/c")),
    ]
    info = tm.oci_layout(tmp_path / "oci", layers)
    diff_ids = [add_layer(store, t) for t in layers]
    assert diff_ids == info["diff_ids"]
    _, ours = ensure_snapshot(store, diff_ids)
    theirs = umoci_rootfs(tmp_path / "oci", "latest", tmp_path / "bundle")
    assert diff_trees(tree(ours), tree(theirs)) == []


@pytest.mark.skipif(not ROOT or not shutil.which("umoci"), reason="umoci unpack as root")
def test_links_to_lower_files_the_layer_then_changes_equal_umoci(store, tmp_path):
    """A layer that links to a lower layer's file and later in its tar replaces, removes or turns
    that path into a symlink: the link keeps the lower file (tar order), as umoci makes it; a
    root-level opaque marker does not lose it either."""
    layers = [
        tm.tar(tm.dir("etc"), tm.file("etc/conf", b"old conf"), tm.dir("bin"), tm.file("bin/a", b"A", mode=0o755),
               tm.file("etc/t", b"T"), tm.file("top", b"top"), tm.dir("var"), tm.dir("var/lib"),
               tm.file("var/lib/db", b"db")),
        tm.tar(tm.dir("etc"), tm.hardlink("etc/h1", "etc/conf"), tm.file("etc/conf", b"new conf"),
               tm.dir("keep"), tm.hardlink("keep/h2", "bin/a"), tm.dir("bin"), tm.file("bin/.wh.a"),
               tm.hardlink("etc/h3", "etc/t"), tm.symlink("etc/t", "conf"),
               tm.hardlink("h4", "top"), tm.file("top", b"new top"),
               tm.dir("var"), tm.dir("var/lib"), tm.dir("var/lib/x"), tm.hardlink("var/lib/x/h5", "var/lib/db"),
               tm.file("var/lib/.wh.db")),
        tm.tar(tm.dir("etc"), tm.file("etc/conf", b"conf 3"), tm.hardlink("etc/h6", "etc/h1"),
               tm.file("etc/h1", b"h1 3")),
    ]
    info = tm.oci_layout(tmp_path / "oci", layers)
    diff_ids = [add_layer(store, t) for t in layers]
    assert diff_ids == info["diff_ids"]
    _, two = ensure_snapshot(store, diff_ids[:2])
    assert (two / "etc/h1").read_bytes() == b"old conf" and (two / "etc/conf").read_bytes() == b"new conf"
    assert (two / "keep/h2").read_bytes() == b"A" and not os.path.lexists(two / "bin/a")
    assert (two / "etc/h3").read_bytes() == b"T" and os.readlink(two / "etc/t") == "conf"
    assert (two / "h4").read_bytes() == b"top" and (two / "var/lib/x/h5").read_bytes() == b"db"
    assert not os.path.lexists(two / ".wh..container-hold")
    theirs = umoci_rootfs(tmp_path / "oci", "latest", tmp_path / "bundle")
    _, ours = ensure_snapshot(store, diff_ids)
    assert (ours / "etc/h6").read_bytes() == b"old conf"
    assert diff_trees(tree(ours), tree(theirs)) == []
    sub = tm.oci_layout(tmp_path / "oci2", layers[:2])
    assert sub["diff_ids"] == diff_ids[:2]
    assert diff_trees(tree(two), tree(umoci_rootfs(tmp_path / "oci2", "latest", tmp_path / "b2"))) == []
    # (umoci applies an opaque marker where its tar has it, and then cannot make the link at all;
    # whiteouts apply to the lower layers, so the link still names the lower file)
    opq = add_layer(store, tm.tar(tm.file(".wh..wh..opq"), tm.hardlink("was-conf", "etc/h1")))
    _, path = ensure_snapshot(store, diff_ids[:2] + [opq])
    assert sorted(os.listdir(path)) == ["was-conf"] and (path / "was-conf").read_bytes() == b"old conf"


@pytest.mark.skipif(not ROOT or not shutil.which("umoci"), reason="umoci unpack as root")
@pytest.mark.parametrize("name", ["layered", "busybox", "shared-a"])
def test_equals_umoci_on_test_images(store, tmp_path, built_images, name):
    img = built_images[name]
    diff_ids = []
    for layer in img.layers:
        blob = (img.oci_dir / "blobs" / "sha256" / layer.digest.split(":", 1)[1]).read_bytes()
        diff_ids.append(add_layer(store, blob, layer.media_type))
    assert diff_ids == img.diff_ids
    _, ours = ensure_snapshot(store, diff_ids)
    theirs = umoci_rootfs(img.oci_dir, img.tag, tmp_path / "bundle")
    assert diff_trees(tree(ours), tree(theirs)) == []


@pytest.mark.skipif(not ROOT or not shutil.which("setpriv"), reason="needs root to drop capabilities")
def test_without_capabilities_mode_0000_dirs_and_no_chown(tmp_path):
    """uid 0 without CAP_DAC_OVERRIDE/CHOWN/MKNOD (rootless-like): 0000 dirs across layers still merge,
    devices are skipped with a warning, owners stay ours; nothing raises."""
    l1 = tm.tar(tm.dir("locked", mode=0), tm.file("locked/a", b"a", mode=0), tm.dir("locked/in", mode=0),
                tm.file("locked/in/z", b"z"), tm.chardev("dev/null"), tm.file("o", b"x", uid=1000))
    l2 = tm.tar(tm.file("locked/.wh.a"), tm.file("locked/b", b"b"), tm.file("locked/in/y", b"y"))
    (tmp_path / "l1.tar").write_bytes(l1)
    (tmp_path / "l2.tar").write_bytes(l2)
    script = f"""
import os
from pathlib import Path
from container.engine.layer.unpack import unpack_layer
from container.engine.layer.snapshot import merge_layers
t = Path({str(tmp_path)!r})
for i in (1, 2):
    (t / f"L{{i}}").mkdir()
    st = unpack_layer(open(t / f"l{{i}}.tar", "rb"), t / f"L{{i}}")
    print(i, st.skipped, len(st.warnings))
(t / "S").mkdir()
merge_layers([t / "L1", t / "L2"], t / "S")
print("merged")
"""
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 1 2" in r.stdout and "merged" in r.stdout
    s = tmp_path / "S"
    assert stat.S_IMODE(os.lstat(s / "locked").st_mode) == 0
    assert stat.S_IMODE(os.lstat(tmp_path / "L1/locked").st_mode) == 0      # restored after the merge
    os.chmod(s / "locked", 0o700)
    os.chmod(s / "locked/in", 0o700)
    assert sorted(os.listdir(s / "locked")) == ["b", "in"] and sorted(os.listdir(s / "locked/in")) == ["y", "z"]
    assert not (s / "dev/null").exists() and os.lstat(s / "o").st_uid == 0
