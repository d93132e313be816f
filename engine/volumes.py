"""Volumes: the rows (schema Volume, VolumeUse) and the directories ROOT/volumes/<name>/_data.

    create_volume(store, name, labels) / list_volumes / get_volume / remove_volume(store, name)
    attach(store, cid, uses)       a container's volumes, created when missing, and its VolumeUse rows
    release(store, cid, failed=)   before a container's row goes: which of its volumes go with it
    unused_volumes(store)          what `volume prune` removes (engine/maint/prune.py measures it)

A volume is in use while a VolumeUse row names it: one per (container, destination), made in the
same transaction that creates a missing volume, deleted with the container's row (ON DELETE
CASCADE). remove_volume refuses a volume in use; VolumeUse.volume is ON DELETE RESTRICT, so a
`volume rm` racing a run's attach fails one of the two, never both half-way. Rows first, files
second: a volume's directory is made after its row is committed and removed after its row is
deleted (a leftover directory without a row is counted by df, never served).

Anonymous volumes (`-v /path`, docker's 64-hex names) go with their container at `rm -v` and at
the end of `run --rm`. What is mounted where is engine/runtime/mounts.py's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from container.engine.errors import Conflict, ContainerError, VolumeNotFound

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    driver: str
    labels: dict
    options: dict
    mountpoint: str
    anonymous: bool
    created: object
    containers: tuple[str, ...] = field(default=())      # ids of the containers using it


def valid_volume_name(name: str) -> bool:
    """docker's local volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least)."""
    return _NAME_RE.fullmatch(name) is not None and len(name) <= 255


def check_volume_name(name: str) -> None:
    if not valid_volume_name(name):
        raise ContainerError(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                             f'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                             f'directory, use absolute path')


def new_anonymous_name() -> str:
    return os.urandom(32).hex()


def data_path(store, name: str) -> str:
    """ROOT/volumes/<name>/_data: what is mounted."""
    return os.path.join(str(store.volume_path(name)), "_data")


def _info(row, users: tuple[str, ...] = ()) -> VolumeInfo:
    def obj(text: str) -> dict:
        try:
            v = json.loads(text or "{}")
        except ValueError:
            return {}
        return v if isinstance(v, dict) else {}

    return VolumeInfo(name=row.name, driver=row.driver, labels=obj(row.labels), options=obj(row.options),
                      mountpoint=row.mountpoint, anonymous=bool(row.anonymous), created=row.created,
                      containers=users)


def _users() -> dict[str, tuple[str, ...]]:
    from container.schema import VolumeUse

    out: dict[str, set[str]] = {}
    for u in VolumeUse.select(VolumeUse.volume, VolumeUse.container):
        out.setdefault(u.__data__["volume"], set()).add(u.__data__["container"])
    return {k: tuple(sorted(v)) for k, v in out.items()}


def ensure_dir(store, name: str) -> str:
    """The volume's _data directory, made when missing (0755, as docker's); its path."""
    p = data_path(store, name)
    try:
        os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
        try:
            os.mkdir(p, 0o755)
        except FileExistsError:
            pass
    except OSError as e:
        raise ContainerError(f"cannot create the directory of volume {name}: {e.strerror or e}") from None
    return p


def _insert(store, name: str, labels: dict, anonymous: bool) -> bool:
    """The Volume row, inside the caller's transaction; False when it already existed."""
    from container.schema import Volume

    if Volume.get_or_none(Volume.name == name) is not None:
        return False
    Volume.insert(name=name, driver="local", labels=json.dumps(labels, sort_keys=True), options="{}",
                  mountpoint=data_path(store, name), anonymous=anonymous).execute()
    return True


def create_volume(store, name: str | None = None, labels: dict | None = None) -> VolumeInfo:
    """docker volume create [NAME]: an existing volume of that name is returned as it is."""
    from container.schema import Volume, write_txn

    if name is None:
        name = new_anonymous_name()
    check_volume_name(name)
    store.db()
    with store.lock(exclusive=False):
        with write_txn():
            made = _insert(store, name, dict(labels or {}), False)
        try:
            ensure_dir(store, name)
        except ContainerError:
            if made:
                with write_txn():
                    Volume.delete().where(Volume.name == name).execute()
            raise
    return get_volume(store, name)


def get_volume(store, name: str) -> VolumeInfo:
    from container.schema import Volume

    store.db()
    row = Volume.get_or_none(Volume.name == name)
    if row is None:
        raise VolumeNotFound(f"No such volume: {name}")
    return _info(row, _users().get(name, ()))


def list_volumes(store) -> list[VolumeInfo]:
    from container.schema import Volume

    store.db()
    users = _users()
    return [_info(r, users.get(r.name, ())) for r in Volume.select().order_by(Volume.name)]


def _remove_dirs(store, names) -> None:
    from container.cas.fsutil import remove_under

    for n in names:
        p = store.volume_path(n)
        if os.path.lexists(p):
            remove_under(store.volumes_dir, p)


def remove_volume(store, name: str) -> None:
    """docker volume rm: refused while a container uses it (docker's "volume is in use")."""
    from container.schema import Volume, VolumeUse, write_txn

    store.db()
    with write_txn():
        row = Volume.get_or_none(Volume.name == name)
        if row is None:
            raise VolumeNotFound(f"No such volume: {name}")
        users = sorted({u.__data__["container"] for u in VolumeUse.select().where(VolumeUse.volume == name)})
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        Volume.delete().where(Volume.name == name).execute()
    _remove_dirs(store, [name])


def unused_volumes(store) -> list[VolumeInfo]:
    """The volumes no container uses (what `volume prune` removes)."""
    return [v for v in list_volumes(store) if not v.containers]


def remove_unused(store, names) -> list[str]:
    """Remove those of `names` that are (still) unused: rows in one transaction, then dirs; the names
    removed."""
    from container.schema import Volume, VolumeUse, write_txn

    names = list(names)
    if not names:
        return []
    with write_txn():
        used = {u.__data__["volume"] for u in VolumeUse.select(VolumeUse.volume).where(VolumeUse.volume.in_(names))}
        gone = [n for n in names if n not in used]
        if gone:
            Volume.delete().where(Volume.name.in_(gone)).execute()
    _remove_dirs(store, gone)
    return gone


def attach(store, cid: str, uses: list[tuple[str, str, bool]]) -> list[str]:
    """(name, destination, anonymous) of container `cid` (whose row exists): the missing volumes
    created, the VolumeUse rows inserted, one transaction; then their dirs. The names created."""
    from container.schema import VolumeUse, write_txn

    made = []
    with write_txn():
        for name, dest, anonymous in uses:
            if _insert(store, name, {}, anonymous):
                made.append(name)
            VolumeUse.insert(volume=name, container=cid, destination=dest).execute()
    for name, _, _ in uses:
        ensure_dir(store, name)
    return made


def release(store, cid: str, *, failed: bool = False) -> list[str]:
    """Before container `cid`'s row is deleted: the volumes that go with it, those only it uses and
    that are anonymous, or (failed: its creation is being undone) were created for it. The caller
    passes them to remove_unused() once the row is gone."""
    from container.schema import Container, Volume, VolumeUse

    store.db()
    mine = [u.__data__["volume"] for u in VolumeUse.select(VolumeUse.volume).where(VolumeUse.container == cid)]
    if not mine:
        return []
    others = {u.__data__["volume"] for u in VolumeUse.select(VolumeUse.volume)
              .where(VolumeUse.volume.in_(mine), VolumeUse.container != cid)}
    c = Container.get_or_none(Container.id == cid)
    out = []
    for v in Volume.select().where(Volume.name.in_(mine)):
        if v.name in others:
            continue
        if v.anonymous or (failed and c is not None and v.created is not None and c.created is not None
                           and v.created >= c.created):
            out.append(v.name)
    return sorted(set(out))
