"""A layer unpacked in its own process (engine/layer/worker.py) says what the in-process unpack
says: the same tree and diff_id, and the same warnings reach the user's log (the worker keeps
them without importing logging: engine/lazylog.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging

from container.engine.layer.stream import unpack_blob
from container.engine.layer.worker import unpack_in_worker
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
