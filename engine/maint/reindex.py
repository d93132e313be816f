"""The contents index for layers unpacked before it existed, and trees checked against it.

    index_layers(store, diff_ids) -> n          walk layers/<hex>/ (never the blob), store the rows
    ensure_indexed(store, image)                 the same for one image's layers, on first use (files, packages)
    check_tree(diff_id, tree) -> [difference]   fsck --deep: the tree against its `file` rows (None: no rows)

A layer without a layer_index row is re-walked from its unpacked tree (engine/layer/index.walk_tree:
the content hashes come from the files, the package databases are parsed from them; hardlinks
inside the layer told from files dedupe linked by the objects dir; a placeholder for a lower
layer's file gets that file's mode, owner and mtime from its row: _lower_links), so a store
pulled before the index gains it by `container fsck --repair` or by the first `files`/`packages`/
`diff` that needs it, without a download. Images whose layers are then all indexed get their
package rows (engine/image/contents.record_image_packages).
"""

from __future__ import annotations

from container.engine.image import contents
from container.engine.layer import dedupe
from container.engine.layer.index import walk_tree
from container.engine.layer.owners import OwnerPolicy


def index_layers(store, diff_ids) -> int:
    """Index the given layers that have a tree and no index yet; returns how many. The caller holds
    the store lock (shared is enough: a tree in layers/ never changes)."""
    from container.schema import ImageLayer, write_txn

    from container.engine.maint.inventory import digest_path

    todo = contents.unindexed(diff_ids)
    low = _lowest_positions(todo)
    todo.sort(key=lambda d: low.get(d, 0))        # base layers first: a layer above asks their rows (_lower_links)
    done = []
    for d in todo:
        tree = digest_path(store.layers_dir, d)
        if tree is None or not tree.is_dir():
            continue
        rows, packages = walk_tree(tree, store.objects_dir, dups=dedupe.tree_dups(store.objects_dir, d))
        rows = _lower_links(d, rows)
        with write_txn():
            if contents.store_layer(d, rows, packages, source="tree"):
                done.append(d)
    if done:
        images = {r[0] for r in ImageLayer.select(ImageLayer.image).where(ImageLayer.layer.in_(done)).tuples()}
        for img in sorted(images):
            ids = [r[0] for r in ImageLayer.select(ImageLayer.layer).where(ImageLayer.image == img).tuples()]
            if not contents.unindexed(ids):
                with write_txn():
                    contents.record_image_packages(img)
    return len(done)


def _lowest_positions(diff_ids) -> dict[str, int]:
    from container.schema import ImageLayer
    import peewee

    if not diff_ids:
        return {}
    q = (ImageLayer.select(ImageLayer.layer, peewee.fn.MIN(ImageLayer.position))
         .where(ImageLayer.layer.in_(list(diff_ids))).group_by(ImageLayer.layer).tuples())
    return {d: p for d, p in q}


def _lower_links(diff_id: str, rows: list) -> list:
    """The "h" rows for a lower layer's file: the extractor's placeholder keeps only the target's
    path, so the mode, owner and mtime the tar's header gave (the target's: one inode) come from the
    target's row in the nearest lower layer of an image using this layer, when it is indexed; size
    and hash stay unset, as the recorder leaves them for a target outside its layer."""
    from container.schema import File, ImageLayer

    mine = {r[0] for r in rows}
    want = sorted({r[7] for r in rows if r[1] == "h" and r[7] not in mine})
    if not want:
        return rows
    this, low = ImageLayer.alias(), ImageLayer.alias()
    found: dict[str, tuple] = {}
    for i in range(0, len(want), 500):
        q = (File.select(File.path, File.mode, File.uid, File.gid, File.mtime)
             .join(low, on=(low.layer == File.layer))
             .join(this, on=((this.image == low.image) & (low.position < this.position)))
             .where((this.layer == diff_id) & (File.whiteout == 0) & File.path.in_(want[i:i + 500]))
             .order_by(low.position.desc()).tuples())
        for path, *attrs in q:
            found.setdefault(path, tuple(attrs))
    out = []
    for r in rows:
        t = found.get(r[7]) if r[1] == "h" and r[7] not in mine else None
        if t is not None:
            r = (r[0], "h", t[0], t[1], t[2], 0, t[3], r[7], r[8], r[9], None)
        out.append(r)
    return out


def ensure_indexed(store, diff_ids) -> int:
    """index_layers under the shared store lock, when something is missing (first use)."""
    if not contents.unindexed(diff_ids):
        return 0
    with store.lock(exclusive=False):
        return index_layers(store, diff_ids)


def check_tree(diff_id: str, tree) -> list[str] | None:
    """Differences between a layer tree and its `file` rows; None when the layer has no rows."""
    from container.schema import File

    if contents.unindexed([diff_id]):
        return None
    want = {r[0]: r for r in File.select(File.path, File.type, File.mode, File.uid, File.gid, File.size, File.link,
                                         File.sha256, File.whiteout).where(File.layer == diff_id).tuples()}
    have = {r[0]: r for r in walk_tree(tree, links=False)[0]}
    policy = OwnerPolicy.current()           # what the unpacker could set here (root, ranges, single id)
    out = []
    for path in sorted(want.keys() | have.keys()):
        w, h = want.get(path), have.get(path)
        if h is None:
            if w is not None and w[1] != "d":     # (a directory a later entry of its layer replaced)
                out.append(f"{path}: missing")
            continue
        if w is None:
            out.append(f"{path}: not in the layer")
            continue
        _p, typ, mode, uid, gid, size, link, sha, wh = w
        htyp = h[1]
        if typ == "h" and htyp == "f":
            htyp = "h"                            # a hardlink inside the layer is a second name of a file
        if wh:
            continue                              # markers are written 0600 root, whatever the tar said
        if htyp != typ:
            out.append(f"{path}: type {h[1]}, expected {typ}")
        elif typ in ("f",) and (h[5] != size or (sha is not None and h[10] != sha)):
            out.append(f"{path}: content differs")     # (no sha recorded: a sparse file, size only)
        elif typ == "l" and h[7] != link:
            out.append(f"{path}: symlink target {h[7]!r}, expected {link!r}")
        elif typ == "h":
            continue                              # a second name (or a placeholder for a lower layer's file)
        elif typ != "l" and h[2] != policy.file_mode(mode, typ == "d"):
            out.append(f"{path}: mode {h[2]:o}, expected {mode:o}")
        elif policy.owner(uid, gid)[0] is not None and (h[3], h[4]) != (uid, gid):
            out.append(f"{path}: owner {h[3]}:{h[4]}, expected {uid}:{gid}")    # (the layer's, both)
    return out
