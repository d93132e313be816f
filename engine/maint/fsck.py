"""`container fsck`: the store checked both ways, read-only unless --repair.

Checks (each finding is a Problem; exit 1 when any remains):
    missing-blob      a Blob row whose blobs/sha256/<hex> file is gone
    corrupt-blob      a blob file that does not hash to its name (all files are rehashed)
    missing-layer     a Layer row without layers/<hex>/
    missing-snapshot  a Snapshot row without snapshots/<hex>/
    missing-container a Container row without containers/<id>/
    orphan            a file or tree no row (nor live lease) names: blobs, layers, snapshots,
                      containers, stale ingest partials (no lock holder, no live lease)
    half-built        a `.tmp-*` tree left by a crash (no process that could still own it)
    refcount          Blob.refs / Layer.refs differ from the edges that name them
    deep              (--deep) an unpacked layer tree differs from its blob: the blob is re-streamed
                      through engine.layer.compression.open_layer_stream and replayed with the
                      extractor's own tar reader (engine/layer/verify.py); every entry's type, mode, size, content sha256, symlink target and
                      hardlink identity (and owner when root) is compared with the tree, and any
                      path the tar does not explain is reported. A layer in the contents index
                      (engine/maint/reindex.py) is checked against its `file` rows instead: no blob read.
Notes (not problems): dead leases, images no root reaches (gc removes both).

--repair (under the exclusive store lock, except the re-pull which takes its own shared lock):
    drops Blob/Layer/Snapshot rows that point at nothing and nothing needs; deletes orphans and
    half-built trees (cas.remove_under); deletes corrupt blobs; fixes refcounts; re-unpacks a
    missing or wrong layer tree from its blob; rebuilds a missing snapshot a container needs;
    re-downloads missing or corrupt blobs of images that are still tagged (engine.pull by digest);
    indexes layers unpacked before the contents index existed, from their trees.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from container.cas import Digest
from container.cas.fsutil import remove_under
from container.cas.lock import is_held

from container.engine.image import contents
from container.engine.image.identity import chain_ids
from container.engine.layer import dedupe
from container.engine.maint import reindex
from container.engine.maint.gc import Plan, list_all, make_plan
from container.engine.maint.inventory import StoreRows, digest_path, load_rows, recount_refs
from container.engine.maint.usage import Sizes


@dataclass
class Problem:
    """One finding: its kind (the table above), what it is about, a message, and what --repair did."""

    kind: str
    key: str
    detail: str
    path: Path | None = None
    fixed: str | None = None       # what --repair did, when it did


@dataclass
class Report:
    """Every finding and note of one fsck, and how many rows and files were checked."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> list[Problem]:
        return [p for p in self.problems if not p.fixed]

    def add(self, kind, key, detail, path=None) -> Problem:
        p = Problem(kind, key, detail, path)
        self.problems.append(p)
        return p


def _short(d: str) -> str:
    """The first 12 hex digits of a digest, for a message."""
    return d.split(":", 1)[-1][:12]


def check(store, *, deep: bool = False) -> tuple[Report, Plan, StoreRows]:
    """All checks, no changes. Returns the report, the gc plan (orphans) and the loaded rows."""
    store.db()
    rep = Report()
    st = load_rows()
    listing = list_all(store)
    plan = make_plan(store, state=st, listing=listing)   # what gc would sweep: orphans and unreachable rows
    blob_ents = {e.name: e for e in listing[str(store.blobs.dir)]}
    layer_ents = {e.name: e for e in listing[str(store.layers_dir)]}
    snap_ents = {e.name: e for e in listing[str(store.snapshots_dir)]}
    ctr_ents = {e.name: e for e in listing[str(store.containers_dir)]}

    def there(ents: dict, key: str, *, is_dir: bool) -> bool:
        e = ents.get(key[7:] if key.startswith("sha256:") else "")
        return e is not None and Digest.is_valid(key) and (e.is_dir() if is_dir else e.is_file())

    # rows -> files (the listing says what is there: no stat per row)
    for d in st.blobs:
        if not there(blob_ents, d, is_dir=False):
            rep.add("missing-blob", d, f"blob {d} is recorded but blobs/sha256/{_short(d)}… is missing",
                    digest_path(store.blobs.dir, d))
    for d in st.layers:
        if not there(layer_ents, d, is_dir=True):
            rep.add("missing-layer", d, f"layer {d} is recorded but layers/{_short(d)}… is missing",
                    digest_path(store.layers_dir, d))
    for d in st.snapshots:
        if not there(snap_ents, d, is_dir=True):
            rep.add("missing-snapshot", d, f"snapshot {d} is recorded but snapshots/{_short(d)}… is missing",
                    digest_path(store.snapshots_dir, d))
    host_of: dict[str, str | None] = {}
    if store.shared:                        # each host's containers under ROOT/hosts/<id>/
        from container.engine.leases import container_host
        from container.schema import Container

        host_of = {r.id: container_host(r.config) for r in Container.select(Container.id, Container.config)}
    for cid, c in st.containers.items():
        host = host_of.get(cid)
        if host is None or host == store.host_id:
            e = ctr_ents.get(cid)
            present = e is not None and e.is_dir()
        else:                               # another host's: not in this host's listing
            present = (store.host_containers_dir(host) / cid).is_dir()
        if not present:
            rep.add("missing-container", cid, f"container {cid[:12]} ({c.name}) has no directory "
                                              f"containers/{cid[:12]}…", store.containers_dir / cid)
    rep.checked.update(blob_rows=len(st.blobs), layer_rows=len(st.layers), snapshot_rows=len(st.snapshots),
                       container_rows=len(st.containers))

    # every blob file hashes to its name: rehashed unless fsck verified it and the file has not
    # changed since (same inode, size and ctime: a write, truncate or chmod moves the ctime); --deep
    # rehashes them all
    n = rehashed = 0
    verified: dict[str, int] = {}
    for name, e in blob_ents.items():
        d = "sha256:" + name
        if not Digest.is_valid(d):
            continue
        n += 1
        row = st.blobs.get(d)
        try:
            fst = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not deep and row is not None and row.verified == fst.st_ctime_ns and row.size == fst.st_size \
                and stat.S_ISREG(fst.st_mode):
            continue
        rehashed += 1
        try:
            ok = store.blobs.verify(Digest.parse(d))
        except OSError:
            ok = False
        if not ok:
            rep.add("corrupt-blob", d, f"blob {d} does not hash to its name", Path(e.path))
        elif row is not None and stat.S_ISREG(fst.st_mode):
            verified[d] = fst.st_ctime_ns
    rep.checked["blob_files"] = n
    rep.checked["blobs_rehashed"] = rehashed
    if verified:
        _record_verified(verified)

    # files -> rows: whatever gc would delete from disk is an orphan or a half-built tree
    reachable_rows = set(plan.blobs) | set(plan.layers) | set(plan.snapshots)
    root_prefix = os.path.join(os.fspath(store.root), "")
    corrupt = {os.fspath(p.path) for p in rep.problems if p.kind == "corrupt-blob" and p.path is not None}
    for u in plan.units:
        if os.fspath(u.path) in corrupt:
            continue
        rel = os.fspath(u.path)[len(root_prefix):]
        if u.kind == "tmp":
            rep.add("half-built", rel, f"half-built tree {rel} (left by an interrupted process)", Path(u.path))
        elif u.key in reachable_rows:
            continue     # unreachable but recorded: garbage, reported as a note below
        else:
            what = {"ingest": "stale partial download", "container": "container dir without a row"}.get(
                u.kind, "file no row names")
            rep.add("orphan", rel, f"orphan: {rel} ({what})", Path(u.path))
    if plan.images:
        rep.notes.append(f"{len(plan.images)} image(s) no tag or container references (gc removes them)")
    garbage = len(plan.blobs) + len(plan.layers) + len(plan.snapshots)
    if garbage:
        rep.notes.append(f"{garbage} unreferenced row(s) with their files (gc removes them)")
    if plan.leases:
        rep.notes.append(f"{len(plan.leases)} expired lease(s) of dead processes (gc removes them)")

    unindexed = [d for d in contents.unindexed(st.layers) if d not in plan.layers]
    if unindexed:
        rep.notes.append(f"{len(unindexed)} layer(s) not in the contents index (fsck --repair indexes them "
                         "from their trees)")

    sz = Sizes(st, {"sha256:" + n: e.inode() for n, e in layer_ents.items()})   # a snapshot's stamp
    stale = sum(1 for kind, rows, ents in (("blob", st.blobs, blob_ents), ("layer", st.layers, layer_ents),
                                           ("snapshot", st.snapshots, snap_ents))
                for d, r in rows.items() if (e := ents.get(d[7:])) is not None
                and (r.disk is None or r.inode != sz.stamp(kind, d, e.inode())))
    if stale:
        rep.notes.append(f"{stale} usage record(s) missing or stale (df measures them once; fsck --repair "
                         "records them)")

    for kind, key, stored, actual in plan.drift:
        rep.add("refcount", f"{kind} {key}", f"{kind} {key}: refs is {stored}, {actual} edge(s) name it")

    if deep:
        n = 0
        for il in _layer_sources(st):
            tree = digest_path(store.layers_dir, il.diff_id)
            if tree is None or not tree.is_dir() or not Digest.is_valid(il.blob_digest) \
                    or not store.blobs.has(Digest.parse(il.blob_digest)):
                continue
            n += 1
            diffs = reindex.check_tree(il.diff_id, tree)      # against the index rows, where they exist
            if diffs is None:
                diffs = verify_tree(store, il.blob_digest, il.media_type, il.diff_id, tree)
            if diffs:
                shown = "; ".join(diffs[:5]) + (f"; … {len(diffs) - 5} more" if len(diffs) > 5 else "")
                rep.add("deep", il.diff_id, f"layer {il.diff_id} differs from its blob: {shown}", tree)
        rep.checked["layer_trees_verified"] = n
    return rep, plan, st


def _record_verified(verified: dict[str, int]) -> None:
    """Blob.verified := the ctime each blob had when it hashed to its name (best effort: a
    read-only database rehashes them next time)."""
    from container.schema import Blob, update_many, write_txn

    try:
        with write_txn():
            update_many(Blob.digest, [Blob.verified], ((ns, d) for d, ns in verified.items()))
    except Exception:        # noqa: BLE001 - a record saves work next time; never fail the check
        pass


def _layer_sources(st) -> list:
    """One ImageLayer row per diff_id (its blob and media type), in a stable order."""
    seen: dict[str, object] = {}
    for il in st.image_layers:
        seen.setdefault(il.diff_id, il)
    return [seen[k] for k in sorted(seen)]


# -- --deep: the tar is the index (engine/layer/verify.py) ------------------------------------

def verify_tree(store, blob_digest: str, media_type: str, diff_id: str, tree: Path) -> list[str]:
    """Differences between layers/<diff_id>/ and the tar in its blob ([] = identical)."""
    from container.engine.errors import ContainerError
    from container.engine.layer.compression import open_layer_stream
    from container.engine.layer.verify import compare_tree, replay

    try:
        with store.blobs.open(Digest.parse(blob_digest)) as raw:
            model, got = replay(open_layer_stream(raw, media_type))
    except (ContainerError, OSError, ValueError) as e:
        return [f"cannot read blob {blob_digest}: {e}"]
    out: list[str] = []
    if got != diff_id:
        out.append(f"the blob's uncompressed digest is {got}, not {diff_id}")
    return out + compare_tree(model, tree)


# -- repair -----------------------------------------------------------------------------------------

def reunpack(store, blob_digest: str, media_type: str, diff_id: str) -> None:
    """Rebuild layers/<diff_id>/ from its blob: .tmp dir, unpack, check the diff_id, swap in."""
    import secrets

    from container.cas.fsutil import publish_dir

    from container.engine.errors import VerificationError
    from container.engine.layer.compression import HashingReader, open_layer_stream
    from container.engine.layer.unpack import unpack_layer

    final = store.layer_path(diff_id)
    tmp = store.layers_dir / f".tmp-fsck-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        with store.blobs.open(Digest.parse(blob_digest)) as raw:
            s = HashingReader(open_layer_stream(raw, media_type))
            unpack_layer(s, tmp)
            while s.read(1 << 20):
                pass
        if s.diff_id() != diff_id:
            raise VerificationError(f"blob {blob_digest} does not uncompress to {diff_id}")
        if os.path.lexists(final):
            remove_under(store.root, final)
        publish_dir(tmp, final)
        _forget_tree(diff_id)
        dedupe.forget(store.objects_dir, diff_id)     # the new tree links no object: what it held goes
    except BaseException:
        remove_under(store.root, tmp)
        raise


def _stale_snapshots(st: StoreRows, diff_id: str, used: set[str]) -> list[str]:
    """Snapshots built on a layer tree that was just re-unpacked and that no container uses: they
    link the old tree's inodes, so they go (rows and trees; the next run rebuilds them)."""
    sz = Sizes(st)
    return [c for c in st.snapshots if c not in used and diff_id in (sz.chain_layers(c) or [])]


def _forget_tree(diff_id: str) -> None:
    """A layer tree rewritten in place: its usage record and those of the snapshots linking it go."""
    from container.schema import write_txn

    from container.engine.maint.inventory import load_rows
    from container.engine.maint.usage import forget, forget_linking

    with write_txn():
        forget("layer", [diff_id])
        forget_linking(load_rows(), [diff_id])


def record_usage(store) -> int:
    """Measure every blob, layer tree and snapshot whose usage record is missing or stale, and
    record it (fsck --repair; df does the same lazily). Returns how many were recorded."""
    st = load_rows()
    listing = list_all(store)
    ents = {"blob": listing[str(store.blobs.dir)], "layer": listing[str(store.layers_dir)],
            "snapshot": listing[str(store.snapshots_dir)]}
    sz = Sizes(st, {"sha256:" + e.name: e.inode() for e in ents["layer"]})
    for k, v in ents.items():
        sz.bulk(k, v)
    return sz.save()


def fsck(store, *, repair: bool = False, deep: bool = False) -> Report:
    """Check the store (under the shared lock); with repair, fix what can be fixed (exclusive lock)."""
    if not repair:
        with store.lock(exclusive=False):
            rep, _, _ = check(store, deep=deep)
        return rep
    with store.lock(exclusive=True):
        rep, plan, st = check(store, deep=deep)
        repull = _repair_locked(store, rep, plan, st)
        n = reindex.index_layers(store, [d for d in st.layers if d not in plan.layers])
        if n:
            rep.notes.append(f"indexed {n} layer(s) from their trees")
    if repull:
        _repull(store, rep, repull)
    with store.lock(exclusive=False):
        n = record_usage(store)
    if n:
        rep.notes.append(f"recorded the disk usage of {n} blob(s), layer tree(s) and snapshot(s)")
    return rep


def _repair_locked(store, rep: Report, plan: Plan, st: StoreRows) -> dict[str, list[Problem]]:
    """Everything but downloads. Returns {pull reference: [problems it fixes]}."""
    from container.schema import Blob, Layer, Snapshot, write_txn

    from container.engine.errors import ContainerError

    by_kind: dict[str, list[Problem]] = {}
    for p in rep.problems:
        by_kind.setdefault(p.kind, []).append(p)

    # corrupt blobs go first (then they are missing blobs like any other)
    for p in by_kind.get("corrupt-blob", []):
        assert p.path is not None                   # check() names the file of a corrupt blob
        remove_under(store.root, p.path)
        p.fixed = "deleted the corrupt file"
        if p.key in st.blobs:
            by_kind.setdefault("missing-blob", []).append(Problem("missing-blob", p.key, p.detail, p.path))

    # which rows something still needs
    used_blobs: dict[str, list] = {}
    for im in st.images.values():
        for d in (im.manifest_digest, im.config_digest, im.index_digest):
            if d:
                used_blobs.setdefault(d, []).append(im.id)
    for il in st.image_layers:
        used_blobs.setdefault(il.blob_digest, []).append(il.image_id)
    used_layers = {il.diff_id for il in st.image_layers}
    used_snaps = {c.chain_id for c in st.containers.values() if c.chain_id}
    tags_of: dict[str, list] = {}
    for t in st.tags:
        tags_of.setdefault(t.image_id, []).append(t)
    src_of = {il.diff_id: il for il in _layer_sources(st)}

    repull: dict[str, list[Problem]] = {}
    drop_blobs, drop_layers, drop_snaps = [], [], []
    stale_snaps: list[str] = []
    for p in by_kind.get("missing-blob", []):
        if p.key not in used_blobs:
            drop_blobs.append(p.key)
            p.fixed = "dropped the row (nothing uses it)"
            continue
        ref = None
        for iid in used_blobs[p.key]:
            for t in tags_of.get(iid, []):
                ref = f"{t.repository}@{t.digest}"
                break
            if ref:
                break
        if ref:
            repull.setdefault(ref, []).append(p)
        else:
            p.detail += " (its image has no tag to re-download from)"
    for p in by_kind.get("missing-layer", []) + by_kind.get("deep", []):
        il = src_of.get(p.key)
        if p.key not in used_layers or il is None:
            if p.kind == "missing-layer":
                drop_layers.append(p.key)
                p.fixed = "dropped the row (no image uses it)"
            continue
        if store.blobs.has(Digest.parse(il.blob_digest)) and \
                store.blobs.verify(Digest.parse(il.blob_digest)):
            try:
                reunpack(store, il.blob_digest, il.media_type, il.diff_id)
                p.fixed = f"re-unpacked from blob {il.blob_digest[:19]}"
                stale_snaps += [c for c in _stale_snapshots(st, il.diff_id, used_snaps) if c not in stale_snaps]
            except (ContainerError, OSError) as e:
                p.detail += f" (re-unpack failed: {e})"
        else:
            iid = il.image_id
            tags = tags_of.get(iid, [])
            if tags:
                repull.setdefault(f"{tags[0].repository}@{tags[0].digest}", []).append(p)
    for p in by_kind.get("missing-snapshot", []):
        if p.key in used_snaps:
            continue            # rebuilt below, once its layers are back
        drop_snaps.append(p.key)
        p.fixed = "dropped the row (rebuilt on the next run)"
    snap_users = [c for c in st.containers.values() if c.chain_id in
                  {p.key for p in by_kind.get("missing-snapshot", [])}]

    with write_txn():
        # a Snapshot row names its top layer (RESTRICT): snapshots first
        if drop_layers:
            drop_snaps += [s.chain_id for s in st.snapshots.values() if s.top_diff_id in drop_layers
                           and s.chain_id not in used_snaps and s.chain_id not in drop_snaps]
        for k in drop_snaps + stale_snaps:
            Snapshot.delete().where(Snapshot.chain_id == k).execute()
        contents.drop_layers(drop_layers)
        for k in drop_layers:
            Layer.delete().where(Layer.diff_id == k).execute()
        for k in drop_blobs:
            Blob.delete().where(Blob.digest == k).execute()
        recount_refs()
    for k in stale_snaps:                   # built on a tree that was re-unpacked: rebuilt on the next run
        if os.path.lexists(store.snapshot_path(k)):
            remove_under(store.root, store.snapshot_path(k))
    for p in by_kind.get("refcount", []):
        p.fixed = "recounted"

    for p in by_kind.get("orphan", []) + by_kind.get("half-built", []):
        if p.path is None:
            continue
        if p.path.name and (p.path.parent == store.ingest_dir) and is_held(p.path / "lock"):
            continue
        try:
            remove_under(store.root, p.path)
            p.fixed = "deleted"
        except OSError as e:
            p.detail += f" (delete failed: {e.strerror or e})"

    # snapshots a container needs: rebuild from the layers of its image
    if snap_users:
        from container.engine.layer.snapshot import ensure_snapshot
        from container.engine.maint.usage import forget

        for c in snap_users:
            diffs = [il.diff_id for il in st.image_layers if il.image_id == c.image_id]
            if chain_ids(diffs)[-1:] != [c.chain_id]:
                continue
            try:
                forget("snapshot", [c.chain_id])
                ensure_snapshot(store, diffs)
                for p in by_kind["missing-snapshot"]:
                    if p.key == c.chain_id:
                        p.fixed = "rebuilt from its layers"
            except (ContainerError, OSError) as e:
                for p in by_kind["missing-snapshot"]:
                    if p.key == c.chain_id:
                        p.detail += f" (rebuild failed: {e})"
    return repull


def _repull(store, rep: Report, repull: dict[str, list[Problem]]) -> None:
    from container.schema import Tag, write_txn

    from container.engine.errors import ContainerError
    from container.engine.image.reference import parse
    from container.engine.pull import pull

    for ref, probs in repull.items():
        before = {t.id for t in Tag.select(Tag.id)}
        try:
            pull(store, parse(ref))
        except ContainerError as e:
            for p in probs:
                p.detail += f" (re-download from {ref} failed: {e})"
            continue
        with write_txn():        # pulling by digest adds a digest-only tag: keep the tags as they were
            Tag.delete().where(Tag.id.not_in(list(before)) if before else Tag.id.is_null(False)).execute()
        for p in probs:
            if p.kind == "missing-blob" and store.blobs.has(Digest.parse(p.key)):
                p.fixed = f"re-downloaded ({ref})"
            elif p.kind in ("missing-layer", "deep") and store.layer_path(p.key).is_dir():
                p.fixed = f"re-downloaded and unpacked ({ref})"
