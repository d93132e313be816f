"""Leases and containers across hosts (docs/shared-store.md), in process on a real PostgreSQL:
another host's lease lives while its heartbeat is fresh, whatever its pid; gc's plan keeps another
live host's container and drops a gone host's with its state dir."""

import datetime as dt

import pytest

from container.engine import leases
from container.engine.store import Store
from container.schema import Container, Host, Lease, write_txn
from container.schema.base import utcnow


@pytest.fixture
def store(tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("CONTAINER_HOST_ID", "host-a")
    monkeypatch.setenv("CONTAINER_LEASE_EXPIRY", "60")
    s = Store(tmp_path / "root", pg_url)
    s.db()
    yield s
    s.close()


def beat(host: str, age: float) -> None:
    with write_txn():
        Host.insert(id=host, heartbeat=utcnow() - dt.timedelta(seconds=age)).on_conflict(
            conflict_target=[Host.id], update={Host.heartbeat: utcnow() - dt.timedelta(seconds=age)}).execute()


def test_per_host_dirs_and_heartbeat(store):
    assert store.shared and store.containers_dir == store.root / "hosts" / "host-a" / "containers"
    assert store.host_containers_dir("host-b") == store.root / "hosts" / "host-b" / "containers"
    assert Host.get_by_id("host-a").heartbeat > utcnow() - dt.timedelta(seconds=30)   # opening beat


def test_other_hosts_leases_follow_their_heartbeat(store):
    old = utcnow() - dt.timedelta(hours=2)
    with write_txn():
        for lid, host in (("mine-dead", "host-a"), ("b-lease", "host-b"), ("c-lease", "host-c")):
            # expired long ago, pid 1 (alive here, meaningless for another host)
            Lease.create(id=lid, pid=1 if host != "host-a" else 2 ** 22 + 7, created=old,
                         expires=old + dt.timedelta(seconds=1), host=host)
    beat("host-b", 5)            # fresh
    beat("host-c", 600)          # stopped beating 10 minutes ago (expiry 60 s)
    live, dead = leases.live_leases(hosts=leases.hosts_view(store))
    assert {x.id for x in live} == {"b-lease"}
    assert {x.id for x in dead} == {"mine-dead", "c-lease"}
    assert leases.hosts_view(store).gone() == {"host-c"}


def test_gc_reclaims_only_gone_hosts_containers(store):
    from container.engine.maint.gc import make_plan

    beat("host-b", 5)
    beat("host-c", 600)
    with write_txn():
        for cid, host in (("b" * 64, "host-b"), ("c" * 64, "host-c")):
            Container.create(id=cid, name=f"on-{host}", config=f'{{"host": "{host}"}}', status="running")
            d = store.host_containers_dir(host) / cid
            d.mkdir(parents=True)
    plan = make_plan(store)
    assert [c[0] for c in plan.containers] == ["c" * 64]
    assert [u.path for u in plan.units if u.kind == "container"] == [store.host_containers_dir("host-c") / ("c" * 64)]
