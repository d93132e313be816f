"""engine.layer.topdown: the top-down ("upper wins") merge: the cases where it differs in *how* it works
from the bottom-up merge (whiteouts re-added, opaque in the middle, type flips, attributes of
implicit dirs, whiteout + same name in one layer, the hardlink-placeholder fallback), and a
differential property: on random 3-layer stacks both merges build the same tree."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tarmaker as tm  # noqa: E402
from checks import tree  # noqa: E402

from container.engine.layer import snapshot as snap  # noqa: E402
from container.engine.errors import LayerError  # noqa: E402
from container.engine.layer.merge import merge_layers_bottom_up, merge_onto  # noqa: E402
from container.engine.layer.topdown import TopDownUnsupported, merge_layers_top_down  # noqa: E402
from container.engine.layer.unpack import unpack_layer  # noqa: E402

ROOT = os.geteuid() == 0


def layers_from(base: Path, *tars: bytes) -> list[Path]:
    out = []
    for i, t in enumerate(tars):
        p = base / f"L{i}"
        p.mkdir()
        unpack_layer(io.BytesIO(t), p)
        out.append(p)
    return out


def both(base: Path, layers: list[Path]) -> Path:
    """Merge top-down (the default path) and bottom-up; assert they agree; return the top-down tree."""
    td, bu = base / "td", base / "bu"
    td.mkdir()
    bu.mkdir()
    n_td = merge_layers_top_down(layers, td)
    n_bu = merge_layers_bottom_up(layers, bu)
    assert tree(td) == tree(bu)
    assert n_td == n_bu == (len(tree(td)), 0)
    return td


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_whited_out_then_re_added(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.dir("d", mode=0o700), tm.file("d/a", b"a"), tm.file("d/b", b"b"), tm.file("f", b"old")),
        tm.tar(tm.file(".wh.d"), tm.file(".wh.f")),
        tm.tar(tm.file("d/c", b"c"), tm.file("f", b"new")),
    )
    s = both(tmp_path, layers)
    assert sorted(os.listdir(s / "d")) == ["c"]
    assert mode(s / "d") == 0o755             # the re-added dir is implicit in its layer: not 0700
    assert (s / "f").read_bytes() == b"new"
    assert os.lstat(s / "f").st_ino == os.lstat(layers[2] / "f").st_ino


def test_opaque_dir_in_a_middle_layer(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.dir("o", mode=0o750), tm.file("o/a", b"a"), tm.dir("o/sub"), tm.file("o/sub/x", b"x")),
        tm.tar(tm.file("o/.wh..wh..opq"), tm.file("o/m", b"m")),
        tm.tar(tm.file("o/t", b"t"), tm.file("o/sub/y", b"y")),
    )
    s = both(tmp_path, layers)
    assert sorted(os.listdir(s / "o")) == ["m", "sub", "t"]
    assert os.listdir(s / "o/sub") == ["y"]   # layer 0's o/sub is hidden: only layer 2's child
    assert mode(s / "o") == 0o750             # opaque hides children, not the lower dir's attributes


def test_file_dir_file_and_dir_file_dir(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.file("x", b"0"), tm.dir("y"), tm.file("y/old", b"old")),
        tm.tar(tm.dir("x"), tm.file("x/in", b"in"), tm.file("y", b"1")),
        tm.tar(tm.file("x", b"2"), tm.dir("y", mode=0o711), tm.file("y/new", b"new")),
    )
    s = both(tmp_path, layers)
    assert stat.S_ISREG(os.lstat(s / "x").st_mode) and (s / "x").read_bytes() == b"2"
    assert os.listdir(s / "y") == ["new"] and mode(s / "y") == 0o711


@pytest.mark.skipif(not ROOT, reason="owners need root")
def test_dir_attributes_from_topmost_explicit_layer(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.dir("d", mode=0o700, uid=1), tm.file("d/a", b"a"), tm.dir("e", mode=0o710)),
        tm.tar(tm.dir("d", mode=0o750, uid=2, gid=3), tm.file("d/b", b"b"), tm.file("e/f", b"f")),
        tm.tar(tm.file("d/c", b"c"), tm.file("e/g", b"g")),       # d and e implicit here
    )
    s = both(tmp_path, layers)
    st_d = os.lstat(s / "d")
    assert (mode(s / "d"), st_d.st_uid, st_d.st_gid) == (0o750, 2, 3)
    assert sorted(os.listdir(s / "d")) == ["a", "b", "c"]
    assert mode(s / "e") == 0o710 and sorted(os.listdir(s / "e")) == ["f", "g"]
    assert "user.container.implicit" not in os.listxattr(s / "d")


def test_whiteout_and_the_same_name_in_one_layer(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.file("n", b"old"), tm.dir("e"), tm.file("e/old", b"o")),
        tm.tar(tm.file(".wh.n"), tm.file("n", b"new"), tm.file(".wh.e"), tm.dir("e"), tm.file("e/new", b"n")),
    )
    s = both(tmp_path, layers)
    assert (s / "n").read_bytes() == b"new"
    assert os.listdir(s / "e") == ["new"]
    assert not any(".wh." in p for p in tree(s))


def test_placeholder_falls_back_to_bottom_up(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.dir("bin"), tm.file("bin/busybox", b"bb", mode=0o755), tm.file("gone", b"g")),
        tm.tar(tm.file(".wh.gone"), tm.dir("bin"), tm.hardlink("bin/sh", "bin/busybox")),
    )
    assert os.getxattr(layers[1] / "bin/sh", "user.container.hardlink") == b"bin/busybox"
    with pytest.raises(TopDownUnsupported):
        (tmp_path / "td").mkdir()
        merge_layers_top_down(layers, tmp_path / "td")
    s = tmp_path / "S"
    s.mkdir()
    assert snap.merge_layers(layers, s)[0] == 3          # bin, bin/busybox, bin/sh
    assert sorted(tree(s)) == ["bin", "bin/busybox", "bin/sh"]
    assert os.lstat(s / "bin/sh").st_ino == os.lstat(s / "bin/busybox").st_ino \
        == os.lstat(layers[0] / "bin/busybox").st_ino
    # a placeholder whose target is nowhere: the bottom-up merge's clear error
    (tmp_path / "bad").mkdir()
    bad = layers_from(tmp_path / "bad", tm.tar(tm.file("a", b"a")), tm.tar(tm.hardlink("x", "no/such")))
    (tmp_path / "S2").mkdir()
    with pytest.raises(LayerError, match="not found in lower layers"):
        snap.merge_layers(bad, tmp_path / "S2")


def test_mode_0000_layer_dirs_are_restored(tmp_path):
    layers = layers_from(
        tmp_path,
        tm.tar(tm.dir("locked", mode=0), tm.file("locked/a", b"a"), tm.dir("locked/in", mode=0),
               tm.file("locked/in/z", b"z")),
        tm.tar(tm.file("locked/b", b"b"), tm.file("locked/in/y", b"y")),
    )
    s = both(tmp_path, layers)
    assert mode(s / "locked") == 0 and mode(s / "locked/in") == 0
    assert mode(layers[0] / "locked") == 0 and mode(layers[0] / "locked/in") == 0
    assert sorted(os.listdir(s / "locked")) == ["a", "b", "in"] and sorted(os.listdir(s / "locked/in")) == ["y", "z"]


# -- differential: top-down == bottom-up on random stacks ---------------------------------------------

NAMES = ["a", "b", "c"]
path_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)
kind_st = st.sampled_from(["file", "file", "dir", "dir", "symlink", "whiteout", "opaque", "fifo"])
entry_st = st.tuples(path_st, kind_st, st.sampled_from([0o755, 0o700, 0o750, 0o644]),
                     st.sampled_from([0, 1000]), st.binary(max_size=3))
layer_st = st.lists(entry_st, max_size=8)


def layer_tar(entries) -> bytes:
    kinds: dict[tuple, str] = {}
    parts = []
    for path, kind, m, uid, data in entries:
        if path in kinds or any(kinds.get(path[:i]) not in (None, "dir") for i in range(1, len(path))):
            continue           # one entry per path; nothing under a non-directory of the same layer
        if kind != "dir" and any(k[:len(path)] == path for k in kinds):
            continue
        kinds[path] = kind
        name = "/".join(path)
        parent = "/".join(path[:-1])
        if kind == "file":
            parts.append(tm.file(name, data, mode=m & 0o777, uid=uid))
        elif kind == "dir":
            parts.append(tm.dir(name, mode=m, uid=uid))
        elif kind == "symlink":
            parts.append(tm.symlink(name, "../" + "/".join(reversed(path)), uid=uid))
        elif kind == "fifo":
            parts.append(tm.fifo(name, mode=m & 0o666))
        elif kind == "whiteout":
            parts.append(tm.file((parent + "/" if parent else "") + ".wh." + path[-1]))
        else:                  # opaque marker in the directory `name`
            kinds[path] = "dir"
            parts.append(tm.file(name + "/.wh..wh..opq"))
    return tm.tar(*parts)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_st, min_size=3, max_size=3))
def test_top_down_equals_bottom_up_on_random_stacks(stack):
    with tempfile.TemporaryDirectory(prefix="td-diff-") as d:
        base = Path(d)
        layers = layers_from(base, *(layer_tar(e) for e in stack))
        before = _fds()
        both(base, layers)
        assert _fds() == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_st, min_size=2, max_size=3), st.data())
def test_merging_the_rest_onto_a_merged_prefix_equals_one_merge(stack, data):
    """A pull merges the layers it has while it downloads the others, then those onto that tree
    (merge_onto): the same tree and entry count as one merge of the whole stack."""
    split = data.draw(st.integers(1, len(stack) - 1))
    with tempfile.TemporaryDirectory(prefix="onto-diff-") as d:
        base = Path(d)
        layers = layers_from(base, *(layer_tar(e) for e in stack))
        whole, two = base / "whole", base / "two"
        whole.mkdir()
        two.mkdir()
        n = snap.merge_layers(layers, whole)
        below = snap.merge_layers(layers[:split], two)
        before = _fds()
        assert merge_onto(layers[split:], two, below[0]) == n
        assert _fds() == before
        assert tree(two) == tree(whole)
        assert stat.S_IMODE(os.lstat(two).st_mode) == stat.S_IMODE(os.lstat(whole).st_mode)


def _merged_without_capabilities(tmp_path: Path, tars: list[bytes], merge: str) -> str:
    """Unpack `tars` into tmp_path/L0.. and run `merge` (Python with L: the layer dirs, S: an
    empty dest; it prints its result) in a process without capabilities (as root: setpriv drops
    them; as a user there are none). Its stdout."""
    for i, t in enumerate(tars):
        (tmp_path / f"l{i}.tar").write_bytes(t)
    script = f"""
from pathlib import Path
from container.engine.layer.unpack import unpack_layer
from container.engine.layer.snapshot import merge_layers
from container.engine.layer.merge import merge_onto
t = Path({str(tmp_path)!r})
L = [t / f"L{{i}}" for i in range({len(tars)})]
for i, d in enumerate(L):
    d.mkdir()
    unpack_layer(open(t / f"l{{i}}.tar", "rb"), d)
S = t / "S"
S.mkdir()
{merge}
"""
    cmd = [sys.executable, "-c", script]
    if ROOT:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to drop capabilities")
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_merge_onto_a_locked_root_without_capabilities(tmp_path):
    """Without CAP_DAC_OVERRIDE the merged prefix's root may be read-only (its layer said 0555): the
    rest still lands, and the root keeps the mode the stack gives it."""
    out = _merged_without_capabilities(
        tmp_path, [tm.tar(tm.dir(".", mode=0o555), tm.file("a", b"a")), tm.tar(tm.file("b", b"b"))],
        "n = merge_layers(L[:1], S)\nprint(merge_onto(L[1:], S, n[0]))")
    assert out.strip() == "(2, 0)"
    s = tmp_path / "S"
    assert sorted(os.listdir(s)) == ["a", "b"] and mode(s) == 0o555


def test_a_locked_root_takes_later_layers_and_their_links_without_capabilities(tmp_path):
    """A 0555 root from the base layer, then a layer linking to the base's file, then one adding at
    the root: without CAP_DAC_OVERRIDE (a rootless pull) all of it lands, the root ends 0555."""
    tars = [tm.tar(tm.dir(".", mode=0o555), tm.file("a", b"a"), tm.dir("d")), tm.tar(tm.hardlink("d/h", "a")),
            tm.tar(tm.file("d/x", b"x"), tm.file("b", b"b"))]
    out = _merged_without_capabilities(tmp_path, tars, "print(merge_layers(L, S))")
    assert out.startswith("(5,"), out          # a, b, d, d/h, d/x
    s = tmp_path / "S"
    assert sorted(os.listdir(s)) == ["a", "b", "d"] and mode(s) == 0o555
    assert (s / "d/h").read_bytes() == b"a" and os.lstat(s / "d/h").st_ino == os.lstat(s / "a").st_ino


@pytest.mark.skipif(not ROOT, reason="needs root to own 0000 dirs it cannot read (setpriv)")
def test_fallback_without_capabilities_clears_mode_0000_dirs(tmp_path):
    """The top-down pass has already built a 0000 directory when it meets a placeholder: without
    CAP_DAC_OVERRIDE the fallback must still empty dest before merging bottom-up."""
    # directory order is the filesystem's: with 20 locked dirs beside it, the placeholder's dir is
    # almost surely not the first one built
    locked = [p for i in range(20) for p in (tm.dir(f"d{i}", mode=0), tm.file(f"d{i}/f", b"f"))]
    out = _merged_without_capabilities(
        tmp_path, [tm.tar(tm.file("z", b"z")), tm.tar(*locked, tm.hardlink("zz/link", "z"))],
        "print(merge_layers(L, S))")
    assert out.startswith("(43,")         # z, zz, zz/link, 20 dirs with a file each
    s = tmp_path / "S"
    assert os.lstat(s / "zz/link").st_ino == os.lstat(s / "z").st_ino
    assert all(mode(s / f"d{i}") == 0 for i in range(20))


def test_too_many_open_dirs_falls_back(tmp_path):
    """A deep directory present in every layer keeps (layers + 1) fds per level open top-down;
    under a low RLIMIT_NOFILE the merge falls back to the bottom-up one (2 per level), same tree."""
    deep = "/".join(f"p{i}" for i in range(20))
    for i in range(3):
        (tmp_path / f"l{i}.tar").write_bytes(tm.tar(tm.file(f"{deep}/f{i}", b"x"), tm.file(f"top{i}", b"t")))
    script = f"""
import resource
from pathlib import Path
from container.engine.layer.unpack import unpack_layer
from container.engine.layer import snapshot as snap
from container.engine.layer.topdown import TopDownUnsupported, merge_layers_top_down
t = Path({str(tmp_path)!r})
layers = []
for i in range(3):
    (t / f"L{{i}}").mkdir()
    unpack_layer(open(t / f"l{{i}}.tar", "rb"), t / f"L{{i}}")
    layers.append(t / f"L{{i}}")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
(t / "TD").mkdir()
try:
    merge_layers_top_down(layers, t / "TD")
    print("top-down fit")
except TopDownUnsupported:
    print("fallback")
(t / "S").mkdir()
print(snap.merge_layers(layers, t / "S"))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["fallback", "(26, 0)"]       # 20 dirs, 3 files deep, 3 on top
    s = tmp_path / "S"
    assert sorted(os.listdir(s / deep)) == ["f0", "f1", "f2"]
    assert sorted(os.listdir(s)) == ["p0", "top0", "top1", "top2"]


def _recorded(base: Path, tars) -> tuple[list[Path], list]:
    """The layer trees of `tars` under base and the index rows the extractor recorded for each."""
    from container.engine.layer.index import EntryRecorder

    layers, rows = [], []
    for i, t in enumerate(tars):
        p = base / f"L{i}"
        p.mkdir()
        rec = EntryRecorder()
        unpack_layer(io.BytesIO(t), p, recorder=rec)
        rec.finish(p)
        layers.append(p)
        rows.append(rec.rows)
    return layers, rows


def _listing_of(layers_rows) -> dict:
    """`files`' merged tree (engine/image/contents.merge_rows) of recorded rows, as {path: type}."""
    from container.engine.image.contents import merge_rows

    rows = [(p, t, wh, pos, link, m, u, g, size, mtime, xa, sha)
            for pos, rs in enumerate(layers_rows)
            for (p, t, m, u, g, size, mtime, link, xa, wh, sha) in rs]
    return {n.path.lstrip("/"): (n.type, n.mode) for n in merge_rows(rows).values()}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_st, min_size=2, max_size=3))
def test_files_listing_equals_the_snapshot_on_random_stacks(stack):
    """What `files` lists from the index rows is the tree the snapshot merge builds: the same paths,
    types and modes (a symlink replaced by a layer's implicit directory included)."""
    kind = {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l", stat.S_IFIFO: "p"}
    with tempfile.TemporaryDirectory(prefix="files-diff-") as d:
        base = Path(d)
        layers, recorded = _recorded(base, [layer_tar(e) for e in stack])
        merged = base / "m"
        merged.mkdir()
        snap.merge_layers(layers, merged)
        want = {path: (kind[stat.S_IFMT(t)], m) for path, (t, m, *_rest) in tree(merged).items()}
        assert _listing_of(recorded) == want


def test_files_listing_of_a_symlink_replaced_by_an_implicit_directory(tmp_path):
    """lib -> usr/lib in the base, lib/x in the next layer (its tar does not name lib): the snapshot
    has a directory lib holding x, and so does the listing (it listed lib as the symlink)."""
    tars = [tm.tar(tm.dir("usr"), tm.dir("usr/lib"), tm.file("usr/lib/y", b"y"), tm.symlink("lib", "usr/lib")),
            tm.tar(tm.file("lib/x", b"x"))]
    listing = _listing_of(_recorded(tmp_path, tars)[1])
    assert listing["lib"] == ("d", 0o755) and "lib/x" in listing and "lib/y" not in listing


def test_files_listing_of_links_into_lower_layers_and_aufs_names(tmp_path):
    """A link to a lower layer's file lists that file's size and digest; AUFS metadata names
    (.wh..wh.plnk), which never reach the snapshot, are not listed."""
    import hashlib

    from container.engine.image.contents import merge_rows

    tars = [tm.tar(tm.file("a", b"abc"), tm.dir(".wh..wh.plnk"), tm.file(".wh..wh.plnk/1.2", b"x")),
            tm.tar(tm.hardlink("h", "a"))]
    rows = [(p, t, wh, pos, link, m, u, g, size, mtime, xa, sha)
            for pos, rs in enumerate(_recorded(tmp_path, tars)[1])
            for (p, t, m, u, g, size, mtime, link, xa, wh, sha) in rs]
    tree = merge_rows(rows)
    assert sorted(tree) == ["/a", "/h"]
    assert (tree["/h"].size, tree["/h"].sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    # a link made before its target in the same tar, and a link to a link into a lower layer:
    # both are the file they link (the snapshot's inode)
    for name, tars in (("fwd", [tm.tar(tm.file("z")), tm.tar(tm.hardlink("h", "a"), tm.file("a", b"abc"))]),
                       ("chain", [tm.tar(tm.file("a", b"abc")), tm.tar(tm.hardlink("p1", "a"),
                                                                       tm.hardlink("h", "p1"))])):
        (tmp_path / name).mkdir()
        rows = [(p, t, wh, pos, link, m, u, g, size, mtime, xa, sha)
                for pos, rs in enumerate(_recorded(tmp_path / name, tars)[1])
                for (p, t, m, u, g, size, mtime, link, xa, wh, sha) in rs]
        assert merge_rows(rows)["/h"].size == 3, name
    # a directory its own layer replaces by a file later in its tar: its rows go with it
    (tmp_path / "again").mkdir()
    one = _recorded(tmp_path / "again", [tm.tar(tm.dir("d"), tm.file("d/a", b"x"), tm.file("d", b"f"))])[1]
    assert _listing_of(one) == {"d": ("f", 0o644)}
