"""The usage record the extractor counts (engine/layer/tally.py) is what a walk of the tree finds
(engine/maint/usage.tree_usage: bytes of each inode once, inodes), on ext4 and tmpfs, with and
without dedupe -- so df after a pull reads it instead of walking -- and none when unsure."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest

import tarmaker as tm

from container.engine.layer import dedupe
from container.engine.layer.index import EntryRecorder
from container.engine.layer.unpack import unpack_layer
from container.engine.maint.usage import tree_usage

BIG = tm.seed_bytes(200_000, seed=5)
LONG = "t/" + "x" * 200        # a symlink target too long to live in the inode


def layer() -> bytes:
    names = [tm.file(f"d{i // 40}/f{i}", BIG[: 700 * (i % 9)] + b"%d" % i, mtime=7) for i in range(300)]
    return tm.tar(
        tm.dir("etc/"), tm.file("etc/big", BIG), tm.file("etc/big-again", BIG),      # one object (dedupe)
        *names,
        tm.file("deep/implicit/parents/file", b"data"),                             # dirs the tar never names
        tm.hardlink("etc/big-link", "etc/big"),                                     # an in-layer hardlink
        tm.hardlink("etc/lower-link", "usr/bin/from-lower"),                        # a placeholder
        tm.symlink("etc/short", "big"), tm.symlink("etc/long", LONG),
        tm.file("etc/.wh.gone"), tm.file("opt/.wh..wh..opq"), tm.fifo("run/fifo"),
        tm.dir("wide/"), *[tm.file(f"wide/n{i:04d}-{'y' * 60}") for i in range(400)],   # a directory past one block
    )


def unpack(dest: Path, tar: bytes, share: bool) -> tuple:
    dest.mkdir()
    rec = EntryRecorder()
    sharer = dedupe.Sharer(dest.parent / "objects") if share else None
    try:
        st = unpack_layer(io.BytesIO(tar), dest, recorder=rec, sharer=sharer)
    finally:
        if sharer is not None:
            sharer.close()
    return st.usage


@pytest.mark.parametrize("share", [False, True], ids=["plain", "dedupe"])
@pytest.mark.parametrize("base", ["/var/tmp", "/dev/shm"], ids=["ext4", "tmpfs"])
def test_the_extractor_counts_what_a_walk_finds(base, share):
    if not os.path.isdir(base):
        pytest.skip(f"no {base}")
    with tempfile.TemporaryDirectory(dir=base) as d:
        tree = Path(d) / "tree"
        got = unpack(tree, layer(), share)
        assert got is not None
        want_bytes, want_inodes, _, _ = tree_usage(os.fspath(tree))
        assert got == (want_bytes, want_inodes, os.lstat(tree).st_ino)
        if share:            # a second layer sharing the objects weighs its own inodes all the same
            again = unpack(Path(d) / "again", layer(), True)
            assert again is not None and again[:2] == tree_usage(os.fspath(Path(d) / "again"))[:2]


def test_a_layer_that_replaces_what_it_made_is_left_to_be_measured(tmp_path):
    tar = tm.tar(tm.file("a/f", BIG), tm.file("a", b"now a file"))
    assert unpack(tmp_path / "t", tar, False) is None
