"""A layer unpacked in its own process (engine/layer/worker.py) says what the in-process unpack
says: the same tree and diff_id, and the same warnings reach the user's log (the worker keeps
them without importing logging: engine/lazylog.py)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import logging
import os

import pytest

from container.engine.layer.snapshot import merge_layers
from container.engine.layer.stream import unpack_blob
from container.engine.layer.worker import merge_in_worker, unpack_in_worker
from tests import tarmaker as tm

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def _layer() -> bytes:
    # an rpm database that is not SQLite: the package parser warns, the unpack goes on
    return gzip.compress(tm.tar(tm.dir("var"), tm.dir("var/lib"), tm.dir("var/lib/rpm"),
                                tm.file("var/lib/rpm/rpmdb.sqlite", b"not a database" * 100),
                                tm.file("etc/hostname", b"box\n")))


def _unpack(how, tmp_path, caplog):
    dest = tmp_path / how
    dest.mkdir()
    fn = unpack_in_worker if how == "process" else unpack_blob
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="container"):
        stats, diff_id = fn(io.BytesIO(_layer()), GZ, dest, None)
    notes = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("container.")]
    return stats, diff_id, notes, (dest / "etc/hostname").read_bytes()


def test_worker_relays_the_warnings_the_in_process_unpack_logs(tmp_path, caplog):
    s1, d1, notes1, host1 = _unpack("thread", tmp_path, caplog)
    s2, d2, notes2, host2 = _unpack("process", tmp_path, caplog)
    assert d1 == d2 and host1 == host2 == b"box\n"
    assert s1.entries == s2.entries == 5
    assert any(n == "container.packages" and lvl == logging.WARNING and "cannot parse /var/lib/rpm/rpmdb.sqlite" in m
               for n, lvl, m in notes1), notes1
    assert notes2 == notes1
    assert sorted(s1.index.rows) == sorted(s2.index.rows)
    rows = {r[0]: r for r in s2.index.rows}
    assert rows["/etc/hostname"][10] == hashlib.sha256(b"box\n").hexdigest()


def _tree(root):
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        out[rel] = (st.st_mode, st.st_nlink if p.is_file() and not p.is_symlink() else 0,
                    os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None))
    return out


def test_snapshot_merged_in_a_process_is_the_merge_in_process(tmp_path):
    """A big pull merges its snapshot in a process (engine/layer/worker.py merge_in_worker): the
    same tree, counts and errors as engine/layer/snapshot.merge_layers in the caller."""
    lower = gzip.compress(tm.tar(tm.dir("etc"), tm.file("etc/a", b"lower a"), tm.file("etc/b", b"gone"),
                                 tm.dir("opt"), tm.file("opt/x", b"x"), tm.symlink("lnk", "/etc/a")))
    upper = gzip.compress(tm.tar(tm.dir("etc"), tm.file("etc/a", b"upper a", mode=0o600), tm.file("etc/.wh.b"),
                                 tm.dir("opt"), tm.file("opt/.wh..wh..opq"), tm.file("opt/y", b"y")))
    layers = []
    for i, blob in enumerate((lower, upper)):
        d = tmp_path / f"layer{i}"
        d.mkdir()
        unpack_blob(io.BytesIO(blob), GZ, d, None)
        layers.append(d)
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    got_here = merge_layers(layers, tmp_path / "here")
    got_there = merge_in_worker(layers, tmp_path / "there")
    assert got_here == got_there
    here, there = _tree(tmp_path / "here"), _tree(tmp_path / "there")
    assert here == there
    assert here["etc/a"][2] == b"upper a" and "etc/b" not in here and "opt/x" not in here and "opt/y" in here
    # the upper layer onto the lower's merge, in the process (a pull that had the lower one stored)
    (tmp_path / "onto").mkdir()
    below = merge_layers(layers[:1], tmp_path / "onto")
    assert merge_in_worker(layers[1:], tmp_path / "onto", onto=below[0]) == got_here
    assert _tree(tmp_path / "onto") == _tree(tmp_path / "here")      # (link counts now one higher)
    (tmp_path / "there2").mkdir()
    with pytest.raises(OSError) as e:
        merge_in_worker([tmp_path / "no-such-layer"], tmp_path / "there2")
    assert e.value.errno == errno.ENOENT


def test_a_merge_process_whose_parent_is_gone_stops_at_once(tmp_path):
    """The merge process ends as soon as its stdin ends (its parent died: it must not go on writing
    into the store once the pull and its lock are gone); with the parent there, it answers."""
    import subprocess
    import sys

    from container.engine.layer import worker

    layer = tmp_path / "layer"
    layer.mkdir()
    for i in range(5000):
        (layer / f"f{i}").write_bytes(b"x")
    (tmp_path / "dest").mkdir()
    cmd = [sys.executable, "-P", "-c", worker._BOOT, "merge", str(tmp_path / "dest"), str(layer)]
    gone = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert gone.returncode == 1 and gone.stdout == b""
    assert len(os.listdir(tmp_path / "dest")) < 5000
    (tmp_path / "dest2").mkdir()
    assert merge_in_worker([layer], tmp_path / "dest2")[0] == 5000


def test_captured_log_records_are_formatted_as_logging_formats_them(monkeypatch):
    from container.engine import lazylog

    monkeypatch.setattr(lazylog, "_sink", None)
    sink = lazylog.capture()
    log = lazylog.get("container.test")
    log.debug("not kept %s", 1)
    log.info("%s of %d", "two", 3)
    log.warning("%(a)s-%(b)s", {"a": 1, "b": 2})
    log.warning("a bad format %d", "x")          # (logging reports it; it never fails the caller)
    assert [(n, lvl) for n, lvl, _ in sink] == [("container.test", 20), ("container.test", 30), ("container.test", 30)]
    assert [t for _, _, t in sink][:2] == ["two of 3", "1-2"] and sink[2][2].startswith("a bad format %d")
