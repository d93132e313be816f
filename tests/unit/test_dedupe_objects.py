"""engine.layer.dedupe: identical files of two unpacked trees become one inode; metadata is part of
the key; a layer that swaps a directory for a symlink cannot steer the linking outside its tree;
the sweep removes only objects nothing links."""

from __future__ import annotations

import io
import os
from pathlib import Path

import tarmaker as tm

from container.engine.layer import dedupe
from container.engine.layer.index import EntryRecorder
from container.engine.layer.unpack import unpack_layer

DATA = tm.seed_bytes(70_000, seed=3)


def unpack(tar: bytes, dest: Path, objs: Path) -> dedupe.Result:
    """Unpack with the index and dedupe on, as a pull does: files shared as they are written."""
    dest.mkdir()
    rec = EntryRecorder()
    sharer = dedupe.Sharer(objs)
    try:
        unpack_layer(io.BytesIO(tar), dest, recorder=rec, sharer=sharer)
    finally:
        sharer.close()
    rec.finish()
    return sharer.res


def test_identical_files_share_an_inode_and_metadata_is_in_the_key(tmp_path):
    objs = tmp_path / "objects"
    t1 = tm.tar(tm.file("a", DATA, mtime=1), tm.file("a2", DATA, mtime=1), tm.file("b", DATA, mtime=2), tm.file("c", DATA, mode=0o600, mtime=1),
                tm.file("empty", b""))
    t2 = tm.tar(tm.file("x/a", DATA, mtime=1), tm.file("x/b", DATA, mtime=3))
    r1 = unpack(t1, tmp_path / "l1", objs)
    assert (r1.created, r1.linked) == (3, 1) and r1.within == r1.saved >= len(DATA)   # a2: a's inode
    assert r1.held == sum(os.lstat(tmp_path / "l1" / n).st_blocks * 512 for n in ("a", "b", "c"))
    r2 = unpack(t2, tmp_path / "l2", objs)
    assert (r2.created, r2.linked) == (1, 1) and r2.saved >= len(DATA) and r2.within == 0
    ino = lambda p: os.lstat(tmp_path / p).st_ino  # noqa: E731
    assert ino("l1/a") == ino("l2/x/a")
    assert len({ino("l1/a"), ino("l1/b"), ino("l1/c"), ino("l2/x/b")}) == 4      # mtime, mode differ
    assert (tmp_path / "l2/x/a").read_bytes() == DATA and os.lstat(tmp_path / "l1/empty").st_nlink == 1
    assert not [n for n in os.listdir(tmp_path / "l2/x") if n.startswith(".dd-")]
    # a tree removed: its objects go with the sweep, the shared one stays
    for p in ("a", "a2", "b", "c", "empty"):
        os.unlink(tmp_path / "l1" / p)
    os.rmdir(tmp_path / "l1")
    n, freed = dedupe.sweep(objs, tmp_path)
    assert n == 2 and freed >= 2 * len(DATA)
    assert os.lstat(tmp_path / "l2/x/a").st_nlink == 2 and (tmp_path / "l2/x/a").read_bytes() == DATA


def test_a_directory_replaced_by_a_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(DATA)
    os.utime(outside / "f", (1, 1))
    os.chmod(outside / "f", 0o644)
    before = os.lstat(outside / "f")
    objs = tmp_path / "objects"
    seed = tm.tar(tm.file("f", DATA, mtime=1))
    unpack(seed, tmp_path / "l0", objs)
    # d/f is shared while it is written; then d becomes a symlink to the outside dir and a file
    # written through it must land inside the tree, not link the outside file to the object
    hostile = tm.tar(tm.file("d/f", DATA, mtime=1), tm.symlink("d", str(outside)), tm.file("d/f", DATA, mtime=1))
    res = unpack(hostile, tmp_path / "l1", objs)
    assert res.linked == 2 and res.created == 0
    assert os.path.islink(tmp_path / "l1/d")
    after = os.lstat(outside / "f")
    assert (after.st_ino, after.st_nlink) == (before.st_ino, 1)


def test_an_xattr_is_part_of_the_key_and_files_without_any_still_share(tmp_path):
    """The sharer lists a file's xattrs only when the extractor set some (or the filesystem adds its
    own): a file with a user.* xattr never shares an inode with the same bytes without it, or with
    another value, and plain files still do."""
    objs = tmp_path / "objects"
    x = lambda v: {"SCHILY.xattr.user.note": v}  # noqa: E731
    t1 = tm.tar(tm.file("plain", DATA, mtime=1), tm.entry("tagged", data=DATA, mtime=1, pax_extra=x("one")),
                tm.entry("tagged2", data=DATA, mtime=1, pax_extra=x("two")))
    t2 = tm.tar(tm.file("plain", DATA, mtime=1), tm.entry("tagged", data=DATA, mtime=1, pax_extra=x("one")))
    r1 = unpack(t1, tmp_path / "l1", objs)
    if os.getxattr(tmp_path / "l1/tagged", "user.note") != b"one":      # pragma: no cover
        return                                                          # (a filesystem without user xattrs)
    assert (r1.created, r1.linked) == (3, 0)
    r2 = unpack(t2, tmp_path / "l2", objs)
    assert (r2.created, r2.linked) == (0, 2)
    ino = lambda p: os.lstat(tmp_path / p).st_ino  # noqa: E731
    assert ino("l1/plain") == ino("l2/plain") and ino("l1/tagged") == ino("l2/tagged")
    assert len({ino("l1/plain"), ino("l1/tagged"), ino("l1/tagged2")}) == 3
    assert os.listxattr(tmp_path / "l2/plain") == [] and os.getxattr(tmp_path / "l2/tagged", "user.note") == b"one"
