"""Garbage collection: mark from the roots, plan, delete rows, then files (design.md invariants 2-4, 7).
prune (engine/maint/prune.py) chooses containers and images to drop, then runs this same sweep.

Roots (style.md §9.5):
    - every Image row (an image goes by rmi or prune, never by gc alone: an untagged one, from
      `load`/`import` without a name or `rmi -f` while a container used it, stays until
      `image prune`, as docker's <none> images do),
    - every Container row, whatever its status,
    - every live Lease and its items (a lease is dead only when it has expired AND its
      pid is gone: engine/leases.py).

Volumes are never swept (only `volume rm`/`volume prune` remove them); a volumes/<name>/ dir
without a row is a crash leftover, and goes.

Edges: Image -> manifest/config/index blobs; ImageLayer -> layer blob + Layer row
(layers/<diffid>/); Image -> the Snapshot rows of its chain ids (the full stack and
any prefix: we keep the snapshots of every image that is kept, as docker keeps its
images' layer stacks: a snapshot is cheap to rebuild in CPU but costs a run's start
latency); Container -> its Snapshot row and containers/<id>/; Snapshot -> its top Layer.

Sweep, under the exclusive store lock (adders hold it shared, so no pull or create is
half-way through a write while we look):
    1. one write transaction deletes the unreachable rows (containers and images that
       prune chose, their tags, image_layers, layers, blobs, snapshots, dead leases) and
       sets Blob.refs / Layer.refs to the number of edges that name them (drift reported);
    2. after the commit, files: every blob, layer tree, snapshot tree and container dir
       that no kept row (nor live lease) names; `.tmp-*` half-built trees and loose
       ingest files older than the oldest lease of a live process (all of them when no
       live process holds a lease); ingest/<hex>/ partials whose flock is free and that no
       live lease names. Every delete goes through cas.remove_under(ROOT, path).
What was freed is measured (st_blocks of the inodes whose every link was deleted;
engine/maint/inventory.py) before the files go, not estimated from the DB.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

from container.cas import Digest
from container.cas.fsutil import remove_under
from container.cas.lock import is_held
from container.engine.maint.inventory import StoreRows, Unit, load_rows, recount_refs, tag_name
from container.engine.maint.objects import Summary
from container.engine.maint.weigh import Pool, Weigher
from container.engine.maint.usage import forget_linking
from container.schema.base import utcnow

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from container.schema import Lease

TMP_PREFIX = ".tmp-"


# -- flocks held by others -------------------------------------------------------------------------

def _try_hold(path: Path):
    """Take the flock on an existing `path` without waiting: the fd, None when held, -1 when absent."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _mounted_under(path: Path) -> bool:
    p = os.path.realpath(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if (mp.rstrip("/") + "/").startswith(p):
                    return True
    except OSError:
        pass
    return False


# -- the plan ---------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a sweep deletes: rows (ids) and units (paths), plus the refcount drift it fixes."""

    containers: list[tuple[str, str]] = field(default_factory=list)      # (id, name)
    images: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (id, config, [tag names])
    tags: list[int] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    drift: list[tuple[str, str, int, int]] = field(default_factory=list)  # (kind, key, stored, actual)
    skipped: list[str] = field(default_factory=list)
    # filled by measure()/execute()
    freed: int = 0
    unit_freed: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # what the sweep looked at (for the usage records' accounting, engine/maint/usage.py)
    rows: StoreRows | None = field(default=None, repr=False)
    present_layers: dict[str, int] = field(default_factory=dict, repr=False)   # diff_id -> its tree's st_ino
    kept_snapshots: list[str] = field(default_factory=list, repr=False)   # snapshot trees that stay
    kept: dict[str, set[str]] = field(default_factory=dict, repr=False)   # blob|layer|snapshot -> names kept
    objects_dir: Path | None = field(default=None, repr=False)     # dedupe's objects, when the store has them
    objects: Summary | None = field(default=None, repr=False)      # and their numbers (maint/objects.py)
    loose_objects: int = 0                   # objects nothing links now (swept)

    def empty(self) -> bool:
        return not (self.containers or self.images or self.tags or self.blobs or self.layers
                    or self.snapshots or self.leases or self.units or self.drift or self.loose_objects)


def make_plan(store, *, drop_containers: Iterable[str] = (), drop_images: Iterable[str] = (),
              now: _dt.datetime | None = None, state: StoreRows | None = None,
              listing: dict[str, list[os.DirEntry]] | None = None, content_units: bool = True) -> Plan:
    """Mark from the roots (minus what prune drops) and list every row and file to delete.
    `listing`: the store's directories as list_all() read them (else read here). Without
    content_units the plan lists no blob, layer or snapshot units but tmp trees: plan.kept says
    which entries of those dirs stay (df's reclaimable, counted from the usage records)."""
    from container.engine import leases as L

    store.db()
    now = now or utcnow()
    st = state if state is not None else load_rows()
    drop_c = set(drop_containers)
    hosts = L.hosts_view(store, now)          # a shared store: other hosts' leases and containers
    gone = hosts.gone() if hosts is not None else set()
    if gone:                                  # a host that stopped beating: its containers go
        from container.schema import Container

        drop_c |= {c.id for c in Container.select(Container.id, Container.config)
                   if L.container_host(c.config) in gone}
    drop_i = set(drop_images)
    plan = Plan(rows=st)
    from container.engine.maint import objects as O

    plan.objects = O.summary(store)           # dedupe's objects: the ledger, walked when it does not hold
    if plan.objects is not None:
        plan.objects_dir = store.objects_dir
        plan.loose_objects = plan.objects.n_loose
    ls_ = listing if listing is not None else list_all(store)

    def entries(d: Path, skip: set[str] | frozenset[str] = frozenset()) -> list[os.DirEntry]:
        return sorted((e for e in ls_[str(d)] if e.name not in skip), key=lambda e: e.name)

    # -- roots
    kept_containers = {cid: c for cid, c in st.containers.items() if cid not in drop_c}
    used_by_container = {c.image_id for c in kept_containers.values() if c.image_id}
    drop_i -= used_by_container              # never drop an image a kept container uses
    live: list[Lease] = []
    dead: list[Lease] = []
    for ls in st.leases:
        (live if L.is_live(ls, now, hosts) else dead).append(ls)
    from container.schema import LeaseItem

    lease_keys: dict[str, set[str]] = {k: set() for k in L.KINDS}
    if live:
        for it in LeaseItem.select().where(LeaseItem.lease.in_([x.id for x in live])):
            lease_keys.setdefault(it.kind, set()).add(it.key)
    alive_since = [x.created for x in live if (x.pid is not None and L.pid_alive(x.pid))
                   or (hosts is not None and not hosts.mine(x.host))]
    tmp_cutoff = min(alive_since) if alive_since else None   # keep .tmp-* newer than this

    # Every image row is a root: an image goes by rmi or prune (which name it in drop_i), never by
    # gc alone, so an image without a tag (`load` or `import` without a name, docker's <none>) stays
    # until `image prune` as with docker.
    images = (set(st.images) - drop_i) | (used_by_container & set(st.images))

    # -- mark
    blobs: set[str] = set(lease_keys["blob"])
    layers: set[str] = set(lease_keys["layer"])
    snapshots: set[str] = set(lease_keys["snapshot"])
    by_image = st.layers_of()
    for iid in images:
        im = st.images[iid]
        blobs.add(im.manifest_digest)
        blobs.add(im.config_digest)
        if im.index_digest:
            blobs.add(im.index_digest)
        for il in by_image.get(iid, []):
            blobs.add(il.blob_digest)
            layers.add(il.diff_id)
        snapshots.update(st.chains_of(iid))
        if im.chain_id:
            snapshots.add(im.chain_id)
    for c in kept_containers.values():
        if c.chain_id:
            snapshots.add(c.chain_id)
    for cid in list(snapshots):
        s = st.snapshots.get(cid)
        if s is not None and s.top_diff_id:
            layers.add(s.top_diff_id)

    # -- rows to delete
    for cid in sorted(drop_c):
        if cid in st.containers:
            plan.containers.append((cid, st.containers[cid].name))
    tags_of: dict[str, list] = {}
    for t in st.tags:
        tags_of.setdefault(t.image_id, []).append(t)
    for iid, im in st.images.items():
        if iid not in images:
            plan.images.append((iid, im.config_digest, [tag_name(t) for t in tags_of.get(iid, [])]))
            plan.tags += [t.id for t in tags_of.get(iid, [])]
    plan.blobs = sorted(d for d in st.blobs if d not in blobs)
    plan.layers = sorted(d for d in st.layers if d not in layers)
    plan.snapshots = sorted(d for d in st.snapshots if d not in snapshots)
    plan.leases = [x.id for x in dead]

    # -- refcount drift (stored vs the edges that exist now)
    brefs: dict[str, int] = {}
    for im in st.images.values():
        for d in (im.manifest_digest, im.config_digest, im.index_digest):
            if d:
                brefs[d] = brefs.get(d, 0) + 1
    lrefs: dict[str, int] = {}
    for il in st.image_layers:
        brefs[il.blob_digest] = brefs.get(il.blob_digest, 0) + 1
        lrefs[il.diff_id] = lrefs.get(il.diff_id, 0) + 1
    for d, b in st.blobs.items():
        if b.refs != brefs.get(d, 0):
            plan.drift.append(("blob", d, b.refs, brefs.get(d, 0)))
    for d, x in st.layers.items():
        if x.refs != lrefs.get(d, 0):
            plan.drift.append(("layer", d, x.refs, lrefs.get(d, 0)))

    # -- files
    # (only ever compared with directory entry names: a row that is no digest matches nothing)
    kept_blob_hex = {d[7:] for d in blobs if d.startswith("sha256:")}
    kept_layer_hex = {d[7:] for d in layers if d.startswith("sha256:")}
    kept_snap_hex = {d[7:] for d in snapshots if d.startswith("sha256:")}
    plan.kept = {"blob": kept_blob_hex, "layer": kept_layer_hex, "snapshot": kept_snap_hex}
    if not content_units:          # nothing but tmp trees is listed as a unit below
        kept_blob_hex = {e.name for e in ls_[str(store.blobs.dir)]}
        kept_layer_hex = kept_layer_hex | {e.name for e in ls_[str(store.layers_dir)] if not e.name.startswith(TMP_PREFIX)}
        kept_snap_hex = kept_snap_hex | {e.name for e in ls_[str(store.snapshots_dir)]
                                         if not e.name.startswith(TMP_PREFIX)}
    leased_ingest = {k.split(":", 1)[-1] for k in lease_keys["ingest"] | lease_keys["blob"]}

    def tmp_stale(path: Path) -> bool:
        if tmp_cutoff is None:
            return True
        try:
            mtime = _dt.datetime.fromtimestamp(os.lstat(path).st_mtime, _dt.timezone.utc).replace(tzinfo=None)
        except OSError:
            return False
        return mtime < tmp_cutoff

    for e in entries(store.blobs.dir, kept_blob_hex):
        cat = "images"
        d = "sha256:" + e.name
        if d in st.blobs and st.blobs[d].media_type and "layer" in st.blobs[d].media_type:
            cat = "layers"
        kind = "blob" if Digest.is_valid(d) else "orphan"
        plan.units.append(Unit(cat, kind, d if kind == "blob" else e.name, e.path, ino=e.inode()))
    for e in entries(store.layers_dir, kept_layer_hex):
        if e.name.startswith(TMP_PREFIX):
            if tmp_stale(Path(e.path)):
                plan.units.append(Unit("layers", "tmp", e.name, Path(e.path)))
        elif e.name not in kept_layer_hex:
            plan.units.append(Unit("layers", "layer", "sha256:" + e.name, e.path, ino=e.inode()))
    for e in entries(store.snapshots_dir, kept_snap_hex):
        if e.name.startswith(TMP_PREFIX):
            if tmp_stale(Path(e.path)):
                plan.units.append(Unit("snapshots", "tmp", e.name, Path(e.path)))
        elif e.name not in kept_snap_hex:
            plan.units.append(Unit("snapshots", "snapshot", "sha256:" + e.name, e.path, ino=e.inode()))
    plan.present_layers = {"sha256:" + e.name: e.inode() for e in ls_[str(store.layers_dir)]}
    going = {os.fspath(u.path) for u in plan.units if u.category == "snapshots"}
    plan.kept_snapshots = ["sha256:" + e.name for e in ls_[str(store.snapshots_dir)] if e.path not in going]
    for e in entries(store.containers_dir):
        if e.name in kept_containers:
            continue
        if e.name.startswith(TMP_PREFIX):
            if tmp_stale(Path(e.path)):
                plan.units.append(Unit("containers", "tmp", e.name, Path(e.path)))
            continue
        if e.name not in drop_c and is_held(Path(e.path) / "lock"):
            plan.skipped.append(f"containers/{e.name}: no row, but its lock is held; kept")
            continue
        plan.units.append(Unit("containers", "container", e.name, Path(e.path)))
    for host in sorted(gone):                 # the whole state dir of a host that is gone
        for e in _scan(store.host_containers_dir(host)):
            plan.units.append(Unit("containers", "container", e.name, Path(e.path)))
    # volumes/<name>/ without a volume row: a crash between a volume's row and its directory
    # (engine/volumes.py writes rows first, files second). A volume with a row is never swept.
    from container.schema import Volume

    volume_names = {v.name for v in Volume.select(Volume.name)}
    for e in entries(store.volumes_dir):
        if e.name not in volume_names:
            plan.units.append(Unit("volumes", "orphan", e.name, Path(e.path)))
    for e in entries(store.ingest_dir):
        p = Path(e.path)
        if e.is_dir(follow_symlinks=False) and Digest.is_valid("sha256:" + e.name):
            if e.name in leased_ingest:
                continue
            if is_held(p / "lock"):
                continue
            plan.units.append(Unit("ingest", "ingest", e.name, p))
        elif tmp_stale(p):
            plan.units.append(Unit("ingest", "orphan", e.name, p))
    return plan


def list_all(store) -> dict[str, list[os.DirEntry]]:
    """The entries of blobs/ layers/ snapshots/ containers/ volumes/ ingest/ (unsorted), keyed by the
    dir's path."""
    return {str(d): _scan(d) for d in (store.blobs.dir, store.layers_dir, store.snapshots_dir,
                                        store.containers_dir, store.volumes_dir, store.ingest_dir)}


def _scan(d) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except FileNotFoundError:
        return []


def measure(plan: Plan) -> Plan:
    """Scan the plan's units and work out what deleting them frees (each unit's share too)."""
    weigher = Weigher(plan, objects_dir=plan.objects_dir, dry_run=True)
    plan.freed, plan.unit_freed = weigher.freed(plan.units, with_objects=True)
    return plan


def execute(store, plan: Plan) -> Plan:
    """Rows in one transaction, then files (invariant 4). Sets plan.freed to what was actually freed."""
    from container.schema import (Blob, Container, Image, ImageLayer, Layer, Lease, LeaseItem, Snapshot, Tag,
                                  delete_in, write_txn)

    from container.engine.image import contents

    weigher = Weigher(plan, objects_dir=plan.objects_dir)   # measure before anything goes

    rows_change = bool(plan.containers or plan.tags or plan.images or plan.snapshots or plan.layers
                       or plan.blobs or plan.leases or plan.drift)
    with write_txn() if rows_change else contextlib.nullcontext():
        delete_in(Container.id, [c for c, _ in plan.containers])
        delete_in(Tag.id, plan.tags)
        image_ids = [i for i, _, _ in plan.images]
        if image_ids:
            contents.drop_image(image_ids)
        delete_in(ImageLayer.image, image_ids)
        delete_in(Image.id, image_ids)
        delete_in(Snapshot.chain_id, plan.snapshots)
        if plan.layers:
            contents.drop_layers(plan.layers)
        delete_in(Layer.diff_id, plan.layers)
        delete_in(Blob.digest, plan.blobs)
        delete_in(LeaseItem.lease, plan.leases)
        delete_in(Lease.id, plan.leases)
        if rows_change:
            recount_refs()

    done: list[Unit] = []
    simple = [u for u in plan.units if u.kind not in ("ingest", "container")]
    guarded = [u for u in plan.units if u.kind in ("ingest", "container")]
    resolved: dict[str, str] = {}       # realpath of the root and the store's dirs, once per sweep
    unlinked: set[int] | None = set() if plan.objects_dir is not None else None   # st_ino of files deleted

    def remove(u: Unit) -> Unit | None:
        try:
            remove_under(store.root, u.path, resolved, unlinked)
            return u
        except OSError as e:
            plan.errors.append(f"could not delete {u.path}: {e.strerror or e}")
            return None

    with Pool() as pool:
        done += [u for u in pool.map(remove, simple) if u is not None]
        for u in guarded:
            holder = None
            try:
                holder = _try_hold(Path(u.path) / "lock")
                if holder is None:          # a writer (a pull, a container's supervisor) took it since we looked
                    plan.skipped.append(f"{os.path.relpath(u.path, store.root)}: in use; kept")
                    continue
                if u.kind == "container" and _mounted_under(Path(u.path)):
                    plan.skipped.append(f"containers/{u.key}: something is mounted under it; kept")
                    continue
                if remove(u) is not None:
                    done.append(u)
            finally:
                if holder not in (None, -1):
                    os.close(holder)
        plan.freed, plan.unit_freed = weigher.freed(done)
        if plan.objects_dir is not None:            # dedupe's objects that no tree links any more
            from container.engine.maint import objects as O

            plan.freed += O.sweep(store, plan.objects, unlinked, weigher.held_by(done), pool.map)
    gone = [u.key for u in done if u.kind == "layer"]
    if gone and plan.rows is not None:      # a snapshot that linked a deleted tree now owns those inodes
        with write_txn():
            forget_linking(plan.rows, gone)
    plan.units = done
    return plan


# -- entry points --------------------------------------------------------------------------------------

def gc(store, *, dry_run: bool = False, lock_timeout: float | None = None) -> Plan:
    """Sweep everything no root reaches. With dry_run, only plan and measure."""
    with store.lock(exclusive=True, timeout=lock_timeout):
        plan = make_plan(store)
        return measure(plan) if dry_run else execute(store, plan)
