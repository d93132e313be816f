"""prune: choose the containers and images to drop (docker semantics), then the gc sweep.

    image prune       images without a named tag and without a container (dangling)
    image prune -a    every image no container uses
    container prune   containers whose containers/<id>/lock is not held (created, exited, or a
                      "running" row whose supervisor died: engine/containers.py)
    system prune [-a] container prune, then image prune [-a], then gc, in one sweep
    volume prune      volumes no container uses (prune_volumes)

`--filter until=` keeps what is newer than a timestamp or a duration ago (parse_filters).
"""

from __future__ import annotations

import datetime as _dt
import re

from container.cas.lock import is_held
from container.engine.errors import ContainerError
from container.engine.maint.gc import Plan, execute, make_plan, measure
from container.schema.base import utcnow

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from collections.abc import Collection

# -- "until" filters (docker: unix timestamp, RFC 3339 date/time, or a duration like 24h, 1h30m) ----

_DUR_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|m|s|ms))+$")
_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def parse_until(value: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """A docker `until=` value as a naive UTC datetime."""
    now = now or utcnow()
    v = value.strip()
    if _DUR_RE.match(v):
        secs = 0.0
        for num, unit in _DUR_PART.findall(v):
            secs += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return now - _dt.timedelta(seconds=secs)
    if re.fullmatch(r"\d+(\.\d+)?", v):
        return _dt.datetime.fromtimestamp(float(v), _dt.timezone.utc).replace(tzinfo=None)
    try:
        t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ContainerError(f"invalid filter 'until={value}': use a timestamp, an RFC 3339 date "
                             f"or a duration such as 24h") from None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


def parse_filters(filters: list[str] | None) -> _dt.datetime | None:
    """`--filter` values: only until=<timestamp|duration>; the last one wins. None without any."""
    until = None
    for f in filters or []:
        k, sep, v = f.partition("=")
        if not sep or k.strip() != "until":
            raise ContainerError(f"invalid filter {f!r}: only until=<timestamp|duration> is supported")
        until = parse_until(v)
    return until


def select_containers(store, *, until: _dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """container prune: (ids to remove, notes on skipped). Stopped = its lock is not held."""
    from container.schema import Container

    ids: list[str] = []
    skipped: list[str] = []
    from container.engine.leases import container_host, hosts_view

    hosts = hosts_view(store)
    for c in Container.select().order_by(Container.created):
        host = container_host(c.config)
        if hosts is not None and not hosts.mine(host):
            if hosts.alive(host):
                continue                # another host's: it says whether it runs, by its heartbeat
            if until is None or (c.created and c.created < until):
                ids.append(c.id)        # its host stopped beating: stopped too
            continue
        # The supervisor holds containers/<id>/lock from before the row exists until it has recorded
        # the exit, so a free lock means stopped: created, exited, or "running" whose supervisor died.
        if until is not None and c.created and c.created >= until:
            continue
        if is_held(store.containers_dir / c.id / "lock"):
            continue
        ids.append(c.id)
    return ids, skipped


def select_images(store, *, all: bool, until: _dt.datetime | None = None,
                  dropping_containers: Collection[str] = frozenset()) -> list[str]:
    """image prune: dangling (no named tag, no container) or, with all, every image no container uses."""
    from container.schema import Container, Image, Tag

    used = {c.image_id for c in Container.select(Container.id, Container.image)
            if c.image_id and c.id not in dropping_containers}
    named = {t.image_id for t in Tag.select(Tag.image, Tag.tag).where(Tag.tag.is_null(False))}
    out = []
    for im in Image.select().order_by(Image.pulled):
        if im.id in used:
            continue
        if not all and im.id in named:
            continue
        if until is not None:
            when = im.created or im.pulled
            if when and when >= until:
                continue
        out.append(im.id)
    return out


def prune(store, *, containers: bool = False, images: str | None = None, until: _dt.datetime | None = None,
          dry_run: bool = False, lock_timeout: float | None = None) -> Plan:
    """containers: prune stopped containers; images: None | "dangling" | "all". Then the gc sweep."""
    with store.lock(exclusive=True, timeout=lock_timeout):
        store.db()
        skipped: list[str] = []
        drop_c: list[str] = []
        if containers:
            drop_c, skipped = select_containers(store, until=until)
        drop_i: list[str] = []
        if images:
            drop_i = select_images(store, all=images == "all", until=until, dropping_containers=set(drop_c))
        plan = make_plan(store, drop_containers=drop_c, drop_images=drop_i)
        plan.skipped = skipped + plan.skipped
        return measure(plan) if dry_run else execute(store, plan)


def prune_volumes(store, *, dry_run: bool = False, lock_timeout: float | None = None) -> tuple[list[str], int]:
    """volume prune: every volume no container uses (podman's rule; docker 23+ keeps named ones
    unless --all). Returns (names removed, bytes freed as df measures them)."""
    from pathlib import Path

    from container.engine.maint.inventory import Unit, measure_freed
    from container.engine.volumes import remove_unused, unused_volumes

    with store.lock(exclusive=True, timeout=lock_timeout):
        store.db()
        names = [v.name for v in unused_volumes(store)]
        units = [Unit("volumes", "volume", n, Path(store.volume_path(n))) for n in names]
        freed, per = measure_freed(units)
        if dry_run:
            return names, freed
        gone = set(remove_unused(store, names))
        return [n for n in names if n in gone], sum(per[id(u)] for u in units if u.key in gone)
