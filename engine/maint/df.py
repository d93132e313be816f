"""Disk usage that adds up: `container df` (the report as data; cli/system.py draws it).

One source: the database says what each path is (image, layer, snapshot,
container, ingest, orphan) and what it weighs (the usage records, engine/maint/usage.py: read,
not walked; a thing without a record is measured once and recorded); container dirs, ingest
partials and orphans are measured live. Sizes are st_blocks*512, each inode once
(engine/maint/inventory.py). What a deletion frees is what prune and gc report as "reclaimed space".

docker's rows ("docker": Images, Containers) say what docker's do: Images is the bytes the
images hold (their manifests and configs, their layers' blobs and trees, their snapshots; an
inode shared by several images once). The finer summary rows partition the store, so they add up to the total: each inode is
attributed to one row, in the order Manifests (manifests,
configs, indexes), Layers (compressed layer blobs + unpacked trees), Snapshots (what a snapshot
does not share with its layer trees),
Containers, Ingest, Unreferenced (files no row nor live lease names: gc deletes
them), Local Volumes (volumes/<name>/ with a row, measured live: docker's third row too). The skeleton directories, the lock and the database files are reported
apart ("metadata"; "database" is the metadata.db* part of it), so that
total + metadata = `du -sB1 ROOT`.
"""

from __future__ import annotations

import os

from container.cas.lock import is_held
from container.engine.maint.gc import make_plan
from container.engine.maint.inventory import StoreRows, Unit, measure_freed, scan, tag_name
from container.engine.maint.prune import select_containers, select_images
from container.engine.maint.usage import Sizes

# -- container df ----------------------------------------------------------------------------------

CATEGORIES = ("images", "layers", "snapshots", "containers", "ingest", "orphans", "volumes")
TITLES = {"images": "Manifests", "layers": "Layers", "snapshots": "Snapshots", "containers": "Containers",
          "volumes": "Local Volumes", "ingest": "Ingest", "orphans": "Unreferenced"}


def disk_usage(store, *, verbose: bool = False) -> dict:
    """The df report (a dict, the JSON shape). Taken under the shared store lock: a consistent view."""
    from container.engine import leases as L
    from container.engine.maint.gc import TMP_PREFIX, list_all
    from container.engine.maint.inventory import load_rows

    with store.lock(exclusive=False):
        store.db()
        st = load_rows()
        listing = list_all(store)
        ents = {k: listing[str(d)] for k, d in (("blob", store.blobs.dir), ("layer", store.layers_dir),
                                                 ("snapshot", store.snapshots_dir))}
        sz = Sizes(st, {"sha256:" + e.name: e.inode() for e in ents["layer"]})
        weight = {k: sz.bulk(k, v) for k, v in ents.items()}     # kind -> name -> bytes

        # each entry's row (CATEGORIES): named by a row or a live lease, else Unreferenced
        leased = L.protected()
        layer_blobs = {il.blob_digest[7:] for il in st.image_layers}
        cat: dict[str, dict[str, str]] = {"blob": {}, "layer": {}, "snapshot": {}}
        for e in ents["blob"]:
            d = "sha256:" + e.name
            b = st.blobs.get(d)
            if b is None and d not in leased["blob"]:
                cat["blob"][e.name] = "orphans"
            elif e.name in layer_blobs or (b is not None and "layer" in (b.media_type or "")):
                cat["blob"][e.name] = "layers"
            else:
                cat["blob"][e.name] = "images"
        for kind, rows, title in (("layer", st.layers, "layers"), ("snapshot", st.snapshots, "snapshots")):
            for e in ents[kind]:
                d = "sha256:" + e.name
                cat[kind][e.name] = title if d in rows or d in leased[kind] else "orphans"
        others = [Unit("containers" if e.name in st.containers else "orphans", "container", e.name, e.path)
                  for e in listing[str(store.containers_dir)]]
        others += [Unit("ingest", "ingest", e.name, e.path) for e in listing[str(store.ingest_dir)]]
        from container.engine.volumes import list_volumes

        vols = list_volumes(store)
        volume_names = {v.name for v in vols}
        others += [Unit("volumes" if e.name in volume_names else "orphans", "volume", e.name, e.path)
                   for e in listing[str(store.volumes_dir)]]

        size = {c: 0 for c in CATEGORIES}
        for kind, names in cat.items():
            w = weight[kind]
            for name, c in names.items():
                size[c] += w[name]
        for u in others:
            size[u.category] += sz.of(u)

        # metadata: database files, lock, the skeleton dirs, anything else at the top of ROOT
        metadata = 0
        for p in (store.root, store.root / "blobs", store.blobs.dir, store.layers_dir, store.snapshots_dir,
                  store.containers_dir, store.volumes_dir, store.ingest_dir):
            try:
                metadata += os.lstat(p).st_blocks * 512
            except OSError:
                pass
        # dedupe's objects: the trees' records count a linked object once per tree; what that counts
        # twice is taken off Layers ("deduplicated": that plus what sharing inside a tree saved); an
        # object nothing links is Unreferenced
        deduplicated = twice = 0
        from container.engine.maint import objects as O

        objs = O.summary(store)               # the ledger, walked when it does not hold
        if objs is not None:
            metadata += objs.own
            size["orphans"] += objs.loose
            held_b, within = objs.held, objs.within
            twice = max(0, held_b - objs.live)          # counted by more than one tree's record
            size["layers"] -= twice
            deduplicated = twice + within        # what dedupe saves: across trees and inside them
        skeleton = {"blobs", "layers", "snapshots", "containers", "volumes", "ingest", "objects"}
        database = 0
        with os.scandir(store.root) as it:
            top = list(it)
        for e in top:
            if e.name in skeleton:
                continue
            n = sum(b for _, b, _ in scan(e.path))
            metadata += n
            if e.name.startswith(store.db_path.name):
                database += n

        # reclaimable: what `image prune -a` (then its gc sweep) frees, and what `container prune` frees
        recl = {c: 0 for c in CATEGORIES}
        plan = make_plan(store, drop_images=select_images(store, all=True), state=st, listing=listing,
                         content_units=False)
        going = {k: [e for e in ents[k] if e.name not in plan.kept[k] and not e.name.startswith(TMP_PREFIX)]
                 for k in ents}
        tmp_going = {os.fspath(u.path) for u in plan.units}
        kept_snaps = ["sha256:" + e.name for e in ents["snapshot"]
                      if e.name in plan.kept["snapshot"] or (e.name.startswith(TMP_PREFIX) and e.path not in tmp_going)]
        category_of = {os.fspath(u.path): u.category for u in others}
        for k in ents:
            for e in ents[k]:
                if e.name.startswith(TMP_PREFIX):
                    category_of[e.path] = cat[k][e.name]
        extra = [Unit(category_of.get(os.fspath(u.path), u.category), u.kind, u.key, u.path) for u in plan.units]
        if sz.needs_exact({"sha256:" + e.name for e in going["layer"]}, kept_snaps):
            content = [Unit(cat[k][e.name], k, "sha256:" + e.name, e.path) for k in ents for e in going[k]]
            _, per = measure_freed(content + extra)
            for u in content + extra:
                if u.category != "containers":
                    recl[u.category] += per[id(u)]
        else:
            for k in ents:
                wk, ck = weight[k], cat[k]
                for e in going[k]:
                    recl[ck[e.name]] += wk[e.name]
            for u in extra:
                if u.category != "containers":
                    recl[u.category] += sz.of(u)
        drop_c, _ = select_containers(store)        # `container prune` frees their dirs (measured live)
        dropped = set(drop_c)
        recl["containers"] = sum(sz.of(u) for u in others if u.category == "containers" and u.key in dropped)
        unused = {v.name for v in vols if not v.containers}     # what `volume prune` frees
        recl["volumes"] = sum(sz.of(u) for u in others if u.category == "volumes" and u.key in unused)
        if twice:
            # the going trees' records count a shared file once per tree: when every tree goes, the
            # objects go too and the excess is `twice`; otherwise bounded by the row's size
            if len(going["layer"]) == len(ents["layer"]):
                recl["layers"] -= twice
            recl["layers"] = max(0, min(recl["layers"], size["layers"]))

        used_images = {c.image_id for c in st.containers.values() if c.image_id}
        active_layers = {il.diff_id for il in st.image_layers if il.image_id in used_images}
        active_snaps = {c.chain_id for c in st.containers.values() if c.chain_id}
        ingest_units = [u for u in others if u.category == "ingest"]
        active_ingest = sum(1 for u in ingest_units if is_held(os.path.join(u.path, "lock")))
        n_orphans = sum(1 for names in cat.values() for c in names.values() if c == "orphans")
        counts = {
            "images": (len(st.images), len(used_images & set(st.images))),
            "layers": (len(st.layers), len(active_layers)),
            "snapshots": (len(st.snapshots), len(active_snaps & set(st.snapshots))),
            "containers": (len(st.containers), sum(1 for c in st.containers.values() if c.status == "running")),
            "volumes": (len(vols), len(vols) - len(unused)),
            "ingest": (len(ingest_units), active_ingest),
            "orphans": (n_orphans + sum(1 for u in others if u.category == "orphans"), 0),
        }
        report: dict = {                       # summary: the fine rows, in CATEGORIES order
            "summary": [{"type": TITLES[c], "total": counts[c][0], "active": counts[c][1], "size": size[c],
                         "reclaimable": recl[c]} for c in CATEGORIES],
            "total": sum(size.values()),
            "reclaimable": sum(recl.values()),
            "metadata": metadata,
            "database": database,
            "deduplicated": deduplicated,        # bytes saved by file-level dedupe (docs/contents.md)
            "size_unit": "disk usage: st_blocks*512, hardlinked inodes counted once",
        }
        held = _per_image(store, st, weight, cat, others, sz) if verbose else \
            {"images_total": _images_total(st, weight, cat)}
        images_row = {"type": "Images", "total": counts["images"][0], "active": counts["images"][1],
                      "size": held["images_total"] - twice,
                      "reclaimable": recl["images"] + recl["layers"] + recl["snapshots"]}
        report["docker"] = [images_row] + [r for r in report["summary"] if r["type"] in ("Containers",
                                                                                        "Local Volumes")]
        report["images_total"] = held["images_total"] - twice
        if verbose:
            report.update(held)
            report["images_total"] = held["images_total"] - twice
            by_key = {u.key: u for u in others if u.category == "volumes"}
            report["volumes"] = [{"name": v.name, "links": len(v.containers),
                                  "size": sz.of(by_key[v.name]) if v.name in by_key else 0} for v in vols]
        sz.save()
    return report


def _images_total(st: StoreRows, weight: dict, cat: dict) -> int:
    """What all images hold (each blob, tree and snapshot once): docker's Images size, without -v's
    per-image split."""
    names: dict[str, set[str]] = {"blob": set(), "layer": set(), "snapshot": set()}
    for im in st.images.values():
        names["blob"].update(d[7:] for d in (im.manifest_digest, im.config_digest, im.index_digest) if d)
        names["snapshot"].update(c[7:] for c in [*st.chains_of(im.id), im.chain_id] if c)
    names["blob"].update(il.blob_digest[7:] for il in st.image_layers)
    names["layer"].update(il.diff_id[7:] for il in st.image_layers)
    return sum(weight[k][n] for k, ns in names.items() for n in ns
               if cat[k].get(n, "orphans") != "orphans")


def _per_image(store, st: StoreRows, weight: dict, cat: dict, others: list[Unit], sz: Sizes) -> dict:
    """Each image's blobs, layer trees and snapshots (of its chain): size, shared with another image,
    unique. They hold disjoint inodes (engine/maint/usage.py's invariant): sums of weights add up."""
    tags_of: dict[str, list[str]] = {}
    for t in st.tags:
        tags_of.setdefault(t.image_id, []).append(tag_name(t))
    nctr: dict[str, int] = {}
    for c in st.containers.values():
        if c.image_id:
            nctr[c.image_id] = nctr.get(c.image_id, 0) + 1
    layers_of = st.layers_of()

    # what rows name, not Unreferenced: kind -> name -> weight
    named = {k: {n: weight[k][n] for n, c in cat[k].items() if c != "orphans"} for k in cat}
    nb, nl, ns = named["blob"], named["layer"], named["snapshot"]
    img_units: dict[str, dict] = {}       # image -> {(kind, name): weight}
    users: dict = {}
    for iid, im in st.images.items():
        mine: dict = {}
        for d in (im.manifest_digest, im.config_digest, im.index_digest):
            if d and d[7:] in nb:
                mine[("b", d[7:])] = nb[d[7:]]
        for il in layers_of.get(iid, []):
            h = il.blob_digest[7:]
            if h in nb:
                mine[("b", h)] = nb[h]
            h = il.diff_id[7:]
            if h in nl:
                mine[("l", h)] = nl[h]
        for c in [*st.chains_of(iid), im.chain_id]:
            if c and c[7:] in ns:
                mine[("s", c[7:])] = ns[c[7:]]
        img_units[iid] = mine
        for k in mine:
            users[k] = users.get(k, 0) + 1
    images = []
    every: dict = {}
    for iid, im in sorted(st.images.items(), key=lambda kv: kv[1].pulled or 0, reverse=True):
        mine = img_units[iid]
        every.update(mine)
        total = sum(mine.values())
        unique = sum(w for k, w in mine.items() if users[k] == 1)
        images.append({"id": iid, "config_digest": im.config_digest, "tags": tags_of.get(iid, []),
                       "created": str(im.created) if im.created else None,
                       "size": total, "shared": total - unique, "unique": unique,
                       "containers": nctr.get(iid, 0)})
    by_name = {u.key: u for u in others if u.kind == "container"}
    containers = []
    for cid, c in st.containers.items():
        u = by_name.get(cid)
        if u is not None:
            sz.of(u)
        containers.append({"id": cid, "name": c.name, "image": c.image_ref or (c.image_id or ""),
                           "status": c.status, "size": sz.all_of.get(os.fspath(u.path), 0) if u else 0})
    return {"images": images, "images_total": sum(every.values()),
            "images_shared": sum(w for k, w in every.items() if users[k] > 1), "containers": containers}
