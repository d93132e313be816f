"""The metadata DB: created on first use, refuses a newer schema, reports corruption in one line."""

from __future__ import annotations

import sqlite3

import pytest

from container.engine.errors import StoreError
from container.engine.store import Store
from container.schema import SCHEMA_VERSION


def test_created_with_wal_and_version(tmp_path):
    s = Store(tmp_path)
    db = s.db()
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    s.close()
    con = sqlite3.connect(tmp_path / "metadata.db")
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    Store(tmp_path).db()
    con = sqlite3.connect(tmp_path / "metadata.db")
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path).db()
    con = sqlite3.connect(tmp_path / "metadata.db")
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "999"


def test_corrupt_database_is_one_error(tmp_path):
    (tmp_path / "metadata.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open metadata database"):
        Store(tmp_path).db()


def test_unwritable_root_is_one_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="cannot use store root"):
        Store(f / "root").db()


def _open_fresh(root: str, barrier) -> None:
    from container.engine.store import Store

    barrier.wait()
    s = Store(root)
    s.db()
    from container.schema import Blob

    Blob.select().count()
    s.close()


def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(6):
        root = str(tmp_path / f"r{round_}")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_fresh, args=(root, barrier)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6, f"round {round_}"
