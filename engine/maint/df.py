"""Disk usage that adds up: `container df` (the report as data; cli/system.py draws it).

One source: the database says what each path is (image, layer, snapshot,
container, ingest, orphan); the disk says how big it is, measured as
engine/maint/inventory.py says (st_blocks, each inode once). What a deletion frees
is what prune and gc report as "reclaimed space".

docker's rows ("docker": Images, Containers) say what docker's do: Images is the bytes the
images hold (their manifests and configs, their layers' blobs and trees, their snapshots; an
inode shared by several images once). The finer summary rows partition the store, so they add up to the total: each inode is
attributed to the first row that names it, in the order Manifests (manifests,
configs, indexes), Layers (compressed layer blobs + unpacked trees), Snapshots,
Containers, Ingest, Unreferenced (files no row nor live lease names: gc deletes them), Local
Volumes (volumes/<name>/ with a row: docker's third row too). The skeleton directories, the lock and the database files are reported
apart ("metadata"; "database" is the metadata.db* part of it), so that
total + metadata = `du -sB1 ROOT`.
"""

from __future__ import annotations

from pathlib import Path

from container.cas.lock import is_held
from container.engine.image.identity import chain_ids
from container.engine.maint.gc import make_plan
from container.engine.maint.inventory import (Accounting, StoreRows, Unit, digest_path, list_dir, load_rows, scan,
                                              tag_name)
from container.engine.maint.prune import select_containers, select_images

# -- container df ----------------------------------------------------------------------------------

CATEGORIES = ("images", "layers", "snapshots", "containers", "ingest", "orphans", "volumes")
TITLES = {"images": "Manifests", "layers": "Layers", "snapshots": "Snapshots", "containers": "Containers",
          "volumes": "Local Volumes", "ingest": "Ingest", "orphans": "Unreferenced"}


def classify(store, st: StoreRows) -> list[Unit]:
    """Every top-level thing in blobs/ layers/ snapshots/ containers/ ingest/, classified, scanned.

    What no row and no live lease names (crash leftovers, `.tmp-*` trees) is "orphans" (the
    Unreferenced row): gc deletes it."""
    from container.engine import leases as L

    leased = L.protected()
    layer_blobs = {il.blob_digest for il in st.image_layers}
    units: list[Unit] = []
    for e in list_dir(store.blobs.dir):
        d = "sha256:" + e.name
        b = st.blobs.get(d)
        if b is None and d not in leased["blob"]:
            cat = "orphans"
        else:
            cat = "layers" if d in layer_blobs or (b is not None and "layer" in (b.media_type or "")) else "images"
        units.append(Unit(cat, "blob", d, Path(e.path)))
    for e in list_dir(store.layers_dir):
        d = "sha256:" + e.name
        cat = "layers" if d in st.layers or d in leased["layer"] else "orphans"
        units.append(Unit(cat, "layer", d, Path(e.path)))
    for e in list_dir(store.snapshots_dir):
        d = "sha256:" + e.name
        cat = "snapshots" if d in st.snapshots or d in leased["snapshot"] else "orphans"
        units.append(Unit(cat, "snapshot", d, Path(e.path)))
    for e in list_dir(store.containers_dir):
        cat = "containers" if e.name in st.containers else "orphans"
        units.append(Unit(cat, "container", e.name, Path(e.path)))
    from container.schema import Volume

    volume_names = {v.name for v in Volume.select(Volume.name)}
    for e in list_dir(store.volumes_dir):
        units.append(Unit("volumes" if e.name in volume_names else "orphans", "volume", e.name, Path(e.path)))
    for e in list_dir(store.ingest_dir):
        units.append(Unit("ingest", "ingest", e.name, Path(e.path)))
    order = {c: i for i, c in enumerate(CATEGORIES)}
    units.sort(key=lambda u: order[u.category])
    for u in units:
        u.load()
    return units


def disk_usage(store, *, verbose: bool = False) -> dict:
    """The df report (a dict, the JSON shape). Taken under the shared store lock: a consistent view."""
    with store.lock(exclusive=False):
        store.db()
        st = load_rows()
        units = classify(store, st)
        by_path = {str(u.path): u for u in units}
        acc = Accounting()
        for u in units:
            acc.add(u)

        # sizes: each inode attributed to the first category naming it
        owner: dict = {}
        size = {c: 0 for c in CATEGORIES}
        for u in units:
            for key, sz, _ in u.inodes:
                if key not in owner:
                    owner[key] = u.category
                    size[u.category] += sz

        # metadata: database files, lock, the skeleton dirs, anything else at the top of ROOT
        meta_units = [Unit("metadata", "dir", p.name, p) for p in
                      (store.root, store.root / "blobs", store.blobs.dir, store.layers_dir, store.snapshots_dir,
                       store.containers_dir, store.volumes_dir, store.ingest_dir)]
        metadata = 0
        for mu in meta_units:
            st_ = scan(mu.path)[:1]
            for key, sz, _ in st_:
                if key not in owner:
                    owner[key] = "metadata"
                    metadata += sz
        skeleton = {"blobs", "layers", "snapshots", "containers", "volumes", "ingest"}
        database = 0
        for e in list_dir(store.root):
            if e.name in skeleton:
                continue
            for key, sz, _ in scan(e.path):
                if key not in owner:
                    owner[key] = "metadata"
                    metadata += sz
                    if e.name.startswith(store.db_path.name):
                        database += sz

        def plan_units(plan) -> list[Unit]:
            out = []
            for pu in plan.units:
                u = by_path.get(str(pu.path))
                out.append(u if u is not None else pu.load())
            order = {c: i for i, c in enumerate(CATEGORIES)}
            out.sort(key=lambda u: order.get(u.category, 99))
            return out

        # reclaimable: what `image prune -a` (then its gc sweep) frees, and what `container prune` frees
        recl = {c: 0 for c in CATEGORIES}
        p_img = make_plan(store, drop_images=select_images(store, all=True), state=st)
        pu = plan_units(p_img)
        _, per = acc.freed(pu)
        for u in pu:
            if u.category != "containers":
                recl[u.category] += per[id(u)]
        drop_c, _ = select_containers(store)
        p_con = make_plan(store, drop_containers=drop_c, state=st)
        pu = [u for u in plan_units(p_con) if u.category == "containers"]
        _, per = acc.freed(pu)
        recl["containers"] = sum(per[id(u)] for u in pu)
        # volumes: what `volume prune` frees (the volumes no container uses)
        from container.engine.volumes import list_volumes

        vols = list_volumes(store)
        unused = {v.name for v in vols if not v.containers}
        pu = [u for u in units if u.category == "volumes" and u.key in unused]
        recl["volumes"] = acc.freed(pu)[0]

        used_images = {c.image_id for c in st.containers.values() if c.image_id}
        active_layers = {il.diff_id for il in st.image_layers if il.image_id in used_images}
        active_snaps = {c.chain_id for c in st.containers.values() if c.chain_id}
        ingest_units = [u for u in units if u.category == "ingest"]
        active_ingest = sum(1 for u in ingest_units if is_held(u.path / "lock"))
        counts = {
            "images": (len(st.images), len(used_images & set(st.images))),
            "layers": (len(st.layers), len(active_layers)),
            "snapshots": (len(st.snapshots), len(active_snaps & set(st.snapshots))),
            "containers": (len(st.containers), sum(1 for c in st.containers.values() if c.status == "running")),
            "volumes": (len(vols), len(vols) - len(unused)),
            "ingest": (len(ingest_units), active_ingest),
            "orphans": (sum(1 for u in units if u.category == "orphans"), 0),
        }
        report: dict = {                       # summary: the fine rows, in CATEGORIES order
            "summary": [{"type": TITLES[c], "total": counts[c][0], "active": counts[c][1], "size": size[c],
                         "reclaimable": recl[c]} for c in CATEGORIES],
            "total": sum(size.values()),
            "reclaimable": sum(recl.values()),
            "metadata": metadata,
            "database": database,
            "size_unit": "disk usage: st_blocks*512, hardlinked inodes counted once",
        }
        held = _per_image(store, st, units)
        images_row = {"type": "Images", "total": counts["images"][0], "active": counts["images"][1],
                      "size": held["images_total"],
                      "reclaimable": recl["images"] + recl["layers"] + recl["snapshots"]}
        report["docker"] = [images_row] + [r for r in report["summary"] if r["type"] in ("Containers",
                                                                                        "Local Volumes")]
        report["images_total"] = held["images_total"]
        if verbose:
            report.update(held)
            by_key = {u.key: u for u in units if u.category == "volumes"}
            report["volumes"] = [{"name": v.name, "links": len(v.containers),
                                  "size": acc.size([by_key[v.name]]) if v.name in by_key else 0} for v in vols]
    return report


def _per_image(store, st: StoreRows, units: list[Unit]) -> dict:
    by_path = {str(u.path): u for u in units}
    layers_of: dict[str, list] = {}
    for il in st.image_layers:
        layers_of.setdefault(il.image_id, []).append(il)
    tags_of: dict[str, list[str]] = {}
    for t in st.tags:
        tags_of.setdefault(t.image_id, []).append(tag_name(t))
    nctr: dict[str, int] = {}
    for c in st.containers.values():
        if c.image_id:
            nctr[c.image_id] = nctr.get(c.image_id, 0) + 1

    img_inodes: dict[str, set] = {}
    users: dict = {}
    sizes: dict = {}
    for iid, im in st.images.items():
        paths = [digest_path(store.blobs.dir, d) for d in (im.manifest_digest, im.config_digest, im.index_digest) if d]
        diff_ids = []
        for il in layers_of.get(iid, []):
            paths.append(digest_path(store.blobs.dir, il.blob_digest))
            paths.append(digest_path(store.layers_dir, il.diff_id))
            diff_ids.append(il.diff_id)
        snaps = set(chain_ids(diff_ids))
        if im.chain_id:
            snaps.add(im.chain_id)
        paths += [digest_path(store.snapshots_dir, c) for c in snaps]
        s: set = set()
        for p in paths:
            u = by_path.get(str(p)) if p is not None else None
            if u is None:
                continue
            for key, sz, _ in u.inodes:
                s.add(key)
                sizes[key] = sz
        img_inodes[iid] = s
        for key in s:
            users[key] = users.get(key, 0) + 1
    images = []
    shared_once: set = set()
    for iid, im in sorted(st.images.items(), key=lambda kv: kv[1].pulled or 0, reverse=True):
        s = img_inodes[iid]
        total = sum(sizes[k] for k in s)
        unique = sum(sizes[k] for k in s if users[k] == 1)
        shared_once.update(k for k in s if users[k] > 1)
        images.append({"id": iid, "config_digest": im.config_digest, "tags": tags_of.get(iid, []),
                       "created": str(im.created) if im.created else None,
                       "size": total, "shared": total - unique, "unique": unique,
                       "containers": nctr.get(iid, 0)})
    all_img = set().union(*img_inodes.values()) if img_inodes else set()
    containers = []
    for cid, c in st.containers.items():
        u = by_path.get(str(store.containers_dir / cid))
        containers.append({"id": cid, "name": c.name, "image": c.image_ref or (c.image_id or ""),
                           "status": c.status, "size": sum(sz for _, sz, _ in (u.inodes if u else []))})
    return {"images": images, "images_total": sum(sizes[k] for k in all_img),
            "images_shared": sum(sizes[k] for k in shared_once), "containers": containers}
