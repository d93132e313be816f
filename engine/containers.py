"""Container queries: list, resolve (name, id or id prefix), remove; ContainerInfo is what they return.

Running a container is engine/runtime/ (runtime/run.py). A row says "running" while its
supervisor holds flock(ROOT/containers/<id>/lock); a "running" row whose lock nobody holds is a
supervisor that died (kill -9, reboot) and is reported as exited, exit code unknown.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from container.engine.errors import Conflict, ContainerNotFound


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str                      # what the user typed
    image_id: str | None            # manifest digest
    command: list[str]
    config: dict                    # env, workdir, user, hostname, entrypoint, cmd, tty, ... (runtime/run.py)
    isolation: str
    rootfs_mode: str
    status: str                     # created | running | exited
    exit_code: int | None
    pid: int | None
    created: object
    started: object
    finished: object
    chain_id: str | None = None
    path: str = ""                  # ROOT/containers/<id>

    @property
    def short_id(self) -> str:
        return self.id[:12]


def _container_lock_free(cdir) -> bool:
    """True when no supervisor holds containers/<id>/lock (the container is not running)."""
    from container.cas.lock import is_held

    return not is_held(os.path.join(cdir, "lock"))


def _host_gone(store, host) -> bool:
    """Another host of a shared store stopped beating (engine/leases.HostView): its containers are not running."""
    from container.engine.leases import hosts_view

    view = hosts_view(store)
    return view is not None and not view.alive(host)


def _info(store, row) -> ContainerInfo:
    try:
        cfg = json.loads(row.config or "{}")
    except ValueError:
        cfg = {}
    if not isinstance(cfg, dict):
        cfg = {}
    host = cfg.get("host")
    cdir = store.host_containers_dir(host if isinstance(host, str) else None) / row.id
    status, code = row.status, row.exit_code
    mine = not store.shared or host in (None, store.host_id)   # another host's lock is not ours to test
    if status in ("running", "restarting") and (_host_gone(store, host) if not mine else _container_lock_free(cdir)):
        status = "exited"          # its supervisor died (kill -9, reboot), or its host did: stale row
    try:
        cmd = json.loads(row.command or "[]")
    except ValueError:
        cmd = []
    return ContainerInfo(
        id=row.id, name=row.name, image=row.image_ref,
        image_id=row.__data__.get("image") or cfg.get("image_id"),     # (a read-only store's image: in config)
        command=cmd, config=cfg,
        isolation=row.isolation, rootfs_mode=row.rootfs_mode, status=status, exit_code=code,
        pid=row.pid, created=row.created, started=row.started, finished=row.finished,
        chain_id=row.__data__.get("snapshot"), path=str(cdir))


def list_containers(store, all: bool = False) -> list[ContainerInfo]:
    from container.schema import Container

    store.db()
    rows = Container.select().order_by(Container.created.desc())
    out = [_info(store, r) for r in rows]
    return out if all else [c for c in out if c.status in ("running", "restarting")]


def _find_row(store, name_or_id: str):
    from container.schema import Container

    store.db()
    key = name_or_id.lstrip("/")
    row = Container.get_or_none(Container.id == key) or Container.get_or_none(Container.name == key)
    if row is not None:
        return row
    if key and all(c in "0123456789abcdef" for c in key):
        rows = list(Container.select().where(Container.id.startswith(key)).limit(2))
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise ContainerNotFound(f"multiple containers match {name_or_id!r}: use a longer id")
    raise ContainerNotFound(f"No such container: {name_or_id}")


def resolve_container(store, name_or_id: str) -> ContainerInfo:
    return _info(store, _find_row(store, name_or_id))


def remove_container(store, name_or_id: str, force: bool = False) -> ContainerInfo:
    """docker rm: refuses a running container unless force (then SIGKILL, wait, remove)."""
    import signal

    from container.schema import Container, write_txn

    row = _find_row(store, name_or_id)
    info = _info(store, row)
    cdir = Path(info.path)                  # (on a shared store: under its host's dir)
    if info.status in ("running", "restarting"):
        if not force:
            raise Conflict(f"cannot remove container {name_or_id}: container is running: "
                           f"stop the container before removing or force remove (rm -f)")
        if row.pid:
            try:
                os.kill(row.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while not _container_lock_free(cdir) and time.monotonic() < deadline:
            time.sleep(0.02)
    with write_txn():
        Container.delete().where(Container.id == row.id).execute()
    from container.cas.fsutil import remove_under

    remove_under(cdir.parent, cdir)
    return info
