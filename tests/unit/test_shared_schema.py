"""Schema step 4 (docs/shared-store.md): the host table and lease.host, added to a version-1 store
on SQLite and on PostgreSQL; locate's host id and lease expiry."""

import pytest

from container.schema import SCHEMA_VERSION
from container.schema.db import open_database


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "metadata.db")


def test_version_1_store_gains_hosts(url):
    db = open_database(url)
    db.execute_sql("DROP TABLE host")
    db.execute_sql("ALTER TABLE lease DROP COLUMN host")
    db.execute_sql("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    db = open_database(url)
    assert db.execute_sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert "host" in {c.name for c in db.get_columns("lease")}
    assert {c.name for c in db.get_columns("host")} == {"id", "heartbeat", "pid"}
    db.close()


def test_host_id_and_expiry(monkeypatch, tmp_path):
    from container.engine.errors import StoreError
    from container.engine.locate import host_id, lease_expiry

    monkeypatch.setenv("CONTAINER_HOST_ID", "node-7")
    assert host_id() == "node-7"
    monkeypatch.setenv("CONTAINER_HOST_ID", "../etc")
    with pytest.raises(StoreError):
        host_id()
    monkeypatch.delenv("CONTAINER_HOST_ID")
    assert host_id()                                   # /etc/machine-id or the hostname
    cfg = tmp_path / "config.toml"
    cfg.write_text("[storage]\nlease_expiry = 42\n")
    monkeypatch.setenv("CONTAINER_CONFIG", str(cfg))
    monkeypatch.delenv("CONTAINER_LEASE_EXPIRY", raising=False)
    assert lease_expiry() == 42
    monkeypatch.setenv("CONTAINER_LEASE_EXPIRY", "nope")
    with pytest.raises(StoreError):
        lease_expiry()
