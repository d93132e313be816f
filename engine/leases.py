"""Leases: work in flight (a pull) that gc must not sweep (design.md invariant 3, style.md §9.5).

A lease is a gc root until it is released, or until it has expired AND the
process that took it is dead (a lease of a live process is honoured past its
expiry; a crashed pull's lease keeps its partial work for a resume until the
expiry). What a lease protects is named by its items:

    kind "blob"      key "sha256:<hex>"   blobs/sha256/<hex> (and its Blob row, if any)
    kind "layer"     key "sha256:<hex>"   layers/<hex>/ (diff_id; and its Layer row)
    kind "snapshot"  key "sha256:<hex>"   snapshots/<hex>/ (chain id; and its Snapshot row)
    kind "ingest"    key "sha256:<hex>"   ingest/<hex>/ (a partial download, for resume)

Use from a pull (the store lock is held shared by the caller; every function
opens its own short write transaction, or joins the caller's):

    from container.engine import leases
    lid = leases.create_lease(store, ttl=3600)          # at the start
    leases.add_lease_item(store, lid, "blob", digest)   # BEFORE the bytes are written
    ...                                                 # (so a gc can never see them unnamed)
    with write_txn():                                   # the transaction that records the image
        ...insert Image/ImageLayer/Tag rows...
        leases.release_lease(store, lid)                # deletes the lease and its items

or, equivalently, `with leases.lease(store) as lid:` (released on exit either way;
call release_lease inside your final transaction when you want it atomic with it).

gc (engine/maint/gc.py) reads leases with `live_leases()`; `is_live()` is the rule.

A shared store (docs/shared-store.md): a lease names the host that took it (lease.host), and every
host beats its heartbeat (the host table) from its commands and its running containers. Another
host's pid means nothing here, so another host's lease is live while that host's heartbeat is
younger than the lease expiry (engine/locate.lease_expiry, $CONTAINER_LEASE_EXPIRY); after that
the host counts as gone and gc reclaims its leases, containers and ROOT/hosts/<id>/.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from container.schema.base import utcnow

KINDS = ("blob", "layer", "snapshot", "ingest")

DEFAULT_TTL = 3600.0


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists (on this host). None = unknown = alive."""
    if pid is None:
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # A zombie (killed, not yet reaped by its parent) holds nothing any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        state = stat[stat.rindex(b")") + 2: stat.rindex(b")") + 3]
        if state in (b"Z", b"X"):
            return False
    except (OSError, ValueError):
        pass
    return True


def create_lease(store, ttl: float = DEFAULT_TTL, *, pid: int | None = None) -> str:
    """Create a lease that expires in `ttl` seconds, owned by `pid` (default: this process)."""
    from container.schema import Lease, write_txn

    store.db()
    lid = uuid.uuid4().hex
    now = utcnow()
    with write_txn():
        Lease.create(id=lid, pid=os.getpid() if pid is None else pid, created=now,
                     expires=now + _dt.timedelta(seconds=ttl), host=store.host_id if store.shared else None)
    return lid


def add_lease_item(store, lease_id: str, kind: str, key: str) -> None:
    """Name one thing the lease protects (idempotent). Call it before writing the thing."""
    from container.schema import LeaseItem, write_txn

    if kind not in KINDS:
        raise ValueError(f"lease item kind must be one of {KINDS}, not {kind!r}")
    store.db()
    with write_txn():
        LeaseItem.insert(lease=lease_id, kind=kind, key=str(key)).on_conflict_ignore().execute()


def extend_lease(store, lease_id: str, ttl: float = DEFAULT_TTL) -> None:
    """Push the expiry out (a long pull may call it now and then)."""
    from container.schema import Lease, write_txn

    store.db()
    with write_txn():
        Lease.update(expires=utcnow() + _dt.timedelta(seconds=ttl)).where(Lease.id == lease_id).execute()


def release_lease(store, lease_id: str) -> None:
    """Delete the lease and its items (idempotent). Joins the caller's transaction if one is open."""
    from container.schema import Lease, LeaseItem, write_txn

    store.db()
    with write_txn():
        LeaseItem.delete().where(LeaseItem.lease == lease_id).execute()
        Lease.delete().where(Lease.id == lease_id).execute()


@contextmanager
def lease(store, ttl: float = DEFAULT_TTL) -> Iterator[str]:
    """create_lease ... release_lease, released on exit whatever happens (an exception included)."""
    lid = create_lease(store, ttl)
    try:
        yield lid
    finally:
        release_lease(store, lid)


def process_started(pid: int) -> _dt.datetime | None:
    """When process `pid` started (UTC, from /proc), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        secs = btime + ticks / os.sysconf("SC_CLK_TCK")
        return _dt.datetime.fromtimestamp(secs, _dt.timezone.utc).replace(tzinfo=None)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def is_live(lease_row, now: _dt.datetime | None = None, hosts: HostView | None = None) -> bool:
    """A lease is a gc root unless it has expired AND its process is gone; another host's (a shared
    store, `hosts`) while that host's heartbeat is fresh.

    A pid reused by a process that started after the lease was taken does not count as its owner."""
    now = now or utcnow()
    if hosts is not None and not hosts.mine(getattr(lease_row, "host", None)):
        return hosts.alive(lease_row.host)
    if lease_row.expires > now:
        return True
    if not pid_alive(lease_row.pid):
        return False
    if lease_row.pid is not None:
        started = process_started(lease_row.pid)
        if started is not None and started > lease_row.created + _dt.timedelta(seconds=2):
            return False
    return True


def live_leases(now: _dt.datetime | None = None, hosts: HostView | None = None) -> tuple[list[Any], list[Any]]:
    """(live lease rows, dead lease rows). Needs the database open."""
    from container.schema import Lease

    live: list[Any] = []
    dead: list[Any] = []
    for row in Lease.select():
        (live if is_live(row, now, hosts) else dead).append(row)
    return live, dead


def protected(now: _dt.datetime | None = None, hosts: HostView | None = None) -> dict[str, set[str]]:
    """kind -> set of keys named by live leases."""
    from container.schema import LeaseItem

    live, _ = live_leases(now, hosts)
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    ids = [r.id for r in live]
    if ids:
        for it in LeaseItem.select().where(LeaseItem.lease.in_(ids)):
            out.setdefault(it.kind, set()).add(it.key)
    return out


# -- hosts of a shared store ------------------------------------------------------------------------
def expiry_seconds() -> float:
    """How long after its last heartbeat another host's leases and containers expire."""
    from container.engine.locate import lease_expiry

    return lease_expiry()


class HostView:
    """Which hosts of a shared store are alive at `now` (heartbeat younger than the expiry)."""

    def __init__(self, store, now: _dt.datetime | None = None, expiry: float | None = None):
        from container.schema import Host

        self.me = store.host_id
        now = now or utcnow()
        cut = now - _dt.timedelta(seconds=expiry_seconds() if expiry is None else expiry)
        self.beats = {h.id: h.heartbeat for h in Host.select()}
        self.live = {h for h, t in self.beats.items() if t >= cut} | {self.me}

    def mine(self, host: str | None) -> bool:
        return host is None or host == self.me

    def alive(self, host: str | None) -> bool:
        return self.mine(host) or host in self.live

    def gone(self) -> set[str]:
        """Hosts that beat once and stopped: their state is reclaimable."""
        return set(self.beats) - self.live


def hosts_view(store, now: _dt.datetime | None = None) -> HostView | None:
    """The HostView of a shared store, None for a single-host one."""
    return HostView(store, now) if store.shared else None


def container_host(config_json: str | None) -> str | None:
    """The host a container row belongs to (its config's "host"; None: this store's only host)."""
    import json

    try:
        host = json.loads(config_json or "{}").get("host")
    except (ValueError, AttributeError):
        return None
    return host if isinstance(host, str) and host else None
