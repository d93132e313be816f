"""The contents index in the DB: per-layer `file` rows, per-image `package` rows, the merged view.

    store_layer(diff_id, rows, packages, source)   one bulk insert per table, inside the caller's write_txn()
    unindexed(diff_ids) -> [diff_id, ...]          layers with no index yet (a store older than the index)
    merged(image_id) -> {path: Node}               the image's tree: whiteouts and opaque dirs applied
    image_rows_sql(param, detail) / merge_rows(rows, detail) / pick(tree, path)
                                                   its parts, for engine/image/quickfiles.py (no peewee)
    diff(a, b) -> Changes                          added / changed / removed between two merged trees
    record_image_packages(image_id)                the image's package rows, from its layers' databases
    drop_layers(diff_ids) / drop_image(image_id)   with the layer (gc) / the image (rmi, gc)

Rows come from engine/layer/index.py (at unpack, or from a tree walk). The merged view is one
top-down pass over the rows of every layer of the image: an entry is shown from the highest layer
that has it, unless a higher layer whited it (or an ancestor) out, made an ancestor opaque, or
put a non-directory at an ancestor; directories the tars never named are added as the extractor
makes them (0755 root). Paths are absolute ("/etc/passwd").
"""

from __future__ import annotations

from typing import NamedTuple

OPAQUE_LEAF = "/.wh..wh..opq"
FILE_COLUMNS = ("diff_id", "path", "type", "mode", "uid", "gid", "size", "mtime", "link", "xattrs", "whiteout",
                "sha256")
CHUNK = 5000


class Node(NamedTuple):
    """One entry of a merged tree; `position` is the layer (image_layer.position) that set it.
    (A tuple: the merge makes ~10k of them per `files`, and a tuple is the cheapest to make.)"""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    link: str | None
    xattrs: str | None
    sha256: str | None
    position: int


class Changes:
    """What diff() found (a plain class: dataclasses costs `files` ~8 ms of imports)."""

    def __init__(self) -> None:
        self.added: list[Node] = []
        self.changed: list[tuple[Node, Node]] = []     # (in a, in b)
        self.removed: list[Node] = []


def _db():
    from container.schema import database

    return database.obj


def _executemany(sql: str, rows: list[tuple]) -> None:
    db = _db()
    cur = db.cursor()
    for i in range(0, len(rows), CHUNK):
        cur.executemany(sql, rows[i:i + CHUNK])


def store_layer(diff_id: str, rows: list[tuple], packages: list[tuple], source: str = "unpack") -> bool:
    """Record a layer's entries and package databases (rows as engine/layer/index.py makes them) in
    bulk, inside the caller's write_txn(); False when the layer was indexed already."""
    from container.schema import LayerIndex

    if LayerIndex.select().where(LayerIndex.layer == diff_id).exists():
        return False
    p = _db().param
    # (two byte names may escape to one text); in path order, as the (diff_id, path) index keeps
    # them: its pages fill at the end instead of splitting all over (~10% of the insert)
    rows = sorted({r[0]: r for r in rows}.values())
    LayerIndex.insert(layer=diff_id, files=len(rows), source=source).execute()
    if rows:
        _executemany(f"INSERT INTO file ({', '.join(FILE_COLUMNS)}) VALUES ({', '.join([p] * len(FILE_COLUMNS))})",
                     [(diff_id,) + tuple(r) for r in rows])
    if packages:
        _executemany(f"INSERT INTO layer_package (diff_id, db_path, manager, name, version, arch, source) "
                     f"VALUES ({', '.join([p] * 7)})", [(diff_id,) + tuple(r) for r in packages])
    return True


def unindexed(diff_ids) -> list[str]:
    from container.schema import LayerIndex

    want = list(dict.fromkeys(diff_ids))
    if not want:
        return []
    if len(want) > 500:           # every layer (fsck): one scan of the index, no 25k-value IN
        have = {r[0] for r in LayerIndex.select(LayerIndex.layer).tuples()}
    else:
        have = {r[0] for r in LayerIndex.select(LayerIndex.layer).where(LayerIndex.layer.in_(want)).tuples()}
    return [d for d in want if d not in have]


def drop_layers(diff_ids) -> None:
    """The index rows of layers being deleted (inside the caller's write_txn())."""
    from container.schema import File, LayerIndex, LayerPackage, Package, delete_in

    ids = list(diff_ids)
    if not ids:
        return
    delete_in(File.layer, ids)
    delete_in(LayerPackage.layer, ids)
    delete_in(Package.layer, ids, set_null=(Package.layer,))
    delete_in(LayerIndex.layer, ids)


def drop_image(image_ids) -> None:
    from container.schema import Package, delete_in

    delete_in(Package.image, image_ids)


# -- the merged view -------------------------------------------------------------------------------
def image_rows_sql(param: str, detail: bool = True) -> str:
    """The query of an image's (image_id = param) rows for merge_rows: (path, type, whiteout,
    position, link) and with `detail` (..., mode, uid, gid, size, mtime, xattrs, sha256) after
    them (the five columns alone fetch in half the time)."""
    cols = ", f.mode, f.uid, f.gid, f.size, f.mtime, f.xattrs, f.sha256" if detail else ""
    return (f"SELECT f.path, f.type, f.whiteout, il.position, f.link{cols} FROM file f "
            f"JOIN image_layer il ON il.diff_id = f.diff_id WHERE il.image_id = {param}")


def merged(image_id: str, *, only: list[str] | None = None, under: str | None = None,
           detail: bool = True) -> dict[str, Node]:
    """The image's merged tree from its layers' rows (see the module docstring). With `only` (paths)
    and `under` (a directory): just those paths and what is under `under`, with every marker and
    ancestor that decides whether they are visible (record_image_packages: no full tree).
    detail=False: nodes with only path, type, link and position (mode, owner, size... 0/None)."""
    where, args = "", ()             # type: tuple[str, tuple[str, ...]]
    p = _db().param
    if only is not None:
        want = set()
        for path in only + ([under] if under else []):
            q = path
            while q.rfind("/") > 0:
                want.add(q)
                q = q[:q.rfind("/")]
            want.add(q)
        where = f" AND (f.whiteout <> 0 OR f.path IN ({', '.join([p] * len(want))})"
        args = tuple(sorted(want))
        if under:
            where += f" OR f.path LIKE {p}"
            args += (under + "/%",)      # (a fixed path without LIKE's wildcards)
        where += ")"
    rows = _db().execute_sql(image_rows_sql(p, detail) + where, (image_id, *args)).fetchall()
    return merge_rows(rows, detail)


def merge_rows(rows, detail: bool = True) -> dict[str, Node]:
    """The merged tree of an image's rows as image_rows_sql() selects them (see the module docstring)."""
    by_pos: dict[int, list] = {}
    for r in rows:
        by_pos.setdefault(r[3], []).append(r)
    seen: dict[str, Node] = {}
    blocked: set[str] = set()      # whited out, or a non-directory, in a higher layer
    opaque: set[str] = set()       # directories a higher layer made opaque
    all_gone = False               # an opaque root in a higher layer
    if detail:
        def make(r):
            return Node(r[0], r[1], r[5], r[6], r[7], r[8], r[9], r[4], r[10], r[11], r[3])
    else:
        def make(r):
            return Node(r[0], r[1], 0, 0, 0, 0, 0, r[4], None, None, r[3])

    implicit: set[str] = set()     # directories only a layer's deeper paths made (no row of their own)

    def parents(path: str, pos: int) -> None:
        """The directories above a visible entry of layer `pos` are directories of the tree: those
        no row names are made by the extractor (0755 root), and shadow what lower layers have at
        that path (a symlink replaced by the directory, as the snapshot merge and overlayfs do)."""
        q = path
        while True:
            i = q.rfind("/")
            if i <= 0:
                return
            q = q[:i]
            have = seen.get(q)
            if have is not None:
                if q not in implicit:
                    return
                if have.position > pos:            # (made by the lowest layer that holds it)
                    seen[q] = have._replace(position=pos)
                continue
            implicit.add(q)
            seen[q] = Node(q, "d", 0o755, 0, 0, 0, 0, None, None, None, pos)

    for pos in sorted(by_pos, reverse=True):
        hides: dict[str, bool] = {"": all_gone}      # directory -> its children are hidden (this layer)

        def dir_hides(d: str) -> bool:
            h = hides.get(d)
            if h is None:
                h = hides[d] = d in blocked or d in opaque or dir_hides(d[:d.rfind("/")])
            return h

        check = bool(blocked or opaque or all_gone)
        new_blocked: list[str] = []
        new_opaque: list[str] = []
        for r in by_pos[pos]:
            path = r[0]
            if not r[2] and "/.wh..wh." in path:
                continue                        # AUFS metadata (.wh..wh.plnk): never in the tree
            if r[2]:
                d, _, leaf = path.rpartition("/")
                if r[2] == 2:
                    new_opaque.append(d)
                else:
                    new_blocked.append(d + "/" + leaf[4:])
                if d and not (check and (d in blocked or dir_hides(d[:d.rfind("/")]))):
                    parents(path, pos)          # (the marker's directory is one of the layer's)
                continue
            if r[1] != "d":
                new_blocked.append(path)
            if path in seen and not (path in implicit and r[1] == "d"):
                continue
            if check and dir_hides(path[:path.rfind("/")]):
                continue
            if check and path in blocked:       # gone, but not the directories above it
                parents(path, pos)
                continue
            if path in implicit:                # a lower layer names the directory: its attributes
                implicit.discard(path)
            seen[path] = make(r)
            parents(path, pos)
        blocked.update(new_blocked)
        for d in new_opaque:
            if d == "":
                all_gone = True
            opaque.add(d)
    links = False
    for path, node in seen.items():
        if node.type == "l" and node.mode != 0o777:
            seen[path] = node._replace(mode=0o777)     # what lstat says of every Linux symlink
        links = links or (node.type == "h" and not node.size)
    if links:
        _link_sizes(seen, by_pos)
    return seen


def _link_target(seen: dict[str, Node], node: Node, lowest: dict[str, int], depth: int = 0) -> Node | None:
    """The file a hardlink's inode is, where the listing knows it: its target as the link's layer
    found it (tar order: from a lower layer, unless no lower layer has the path and the link's own
    layer adds it), through links to links."""
    path = "/" + node.link.lstrip("/") if node.link else ""
    t = seen.get(path)
    if t is None or depth > 8:
        return None
    if not (t.position < node.position or (t.position == node.position
                                           and lowest.get(path, node.position) >= node.position)):
        return None                 # (a later change to the path: not the linked file)
    if t.type == "f" or (t.type == "h" and t.size):
        return t
    return _link_target(seen, t, lowest, depth + 1) if t.type == "h" else None


def _link_sizes(seen: dict[str, Node], by_pos: dict[int, list]) -> None:
    """A hardlink row whose layer did not hold its target's content (a link into a lower layer, or
    made before its target in the tar) gets the size and digest of the file it is."""
    targets = {"/" + n.link.lstrip("/") for n in seen.values() if n.type == "h" and n.link}
    lowest: dict[str, int] = {}        # target path -> the lowest layer with a row for it
    for pos, rs in by_pos.items():
        for r in rs:
            if not r[2] and r[0] in targets and lowest.get(r[0], pos) >= pos:
                lowest[r[0]] = pos
    for path, node in list(seen.items()):
        if node.type == "h" and not node.size:
            t = _link_target(seen, node, lowest)
            if t is not None:
                seen[path] = node._replace(size=t.size, sha256=node.sha256 or t.sha256)


def _same(a: Node, b: Node) -> bool:
    return (a.type == b.type and a.mode == b.mode and a.uid == b.uid and a.gid == b.gid and a.size == b.size
            and a.sha256 == b.sha256 and a.link == b.link and a.xattrs == b.xattrs
            and (a.type == "d" or a.mtime == b.mtime or (a.sha256 is not None and a.sha256 == b.sha256)))


def diff(a: dict[str, Node], b: dict[str, Node]) -> Changes:
    """What changes from tree a to tree b, sorted by path (mtime-only changes are not changes)."""
    out = Changes()
    for path in sorted(a.keys() | b.keys()):
        x, y = a.get(path), b.get(path)
        if x is None and y is not None:
            out.added.append(y)
        elif y is None and x is not None:
            out.removed.append(x)
        elif x is not None and y is not None and not _same(x, y):
            out.changed.append((x, y))
    return out


# -- packages --------------------------------------------------------------------------------------
def _os_release_path(tree: dict[str, Node]) -> str | None:
    for p in ("/etc/os-release", "/usr/lib/os-release"):
        n = tree.get(p)
        if n is not None and n.type == "f":
            return p
    return None


def record_image_packages(image_id: str, tree: dict[str, Node] | None = None) -> int:
    """(Re)write the image's package rows from the databases its merged tree holds; each with the
    lowest layer of the run of layers, ending at the top one, that wrote the database with the
    package at the same version (the layer that last changed it). Inside the caller's write_txn()."""
    from container.engine.image.packages import DB_PATHS, DPKG_STATUS_D, is_package_db
    from container.schema import ImageLayer, Package

    tree = merged(image_id, only=list(DB_PATHS), under=DPKG_STATUS_D.rstrip("/")) if tree is None else tree
    dbs = [p for p, n in tree.items() if n.type == "f" and is_package_db(p) and "os-release" not in p]
    osr = _os_release_path(tree)
    if osr:
        dbs.append(osr)
    Package.delete().where(Package.image == image_id).execute()
    if not dbs:
        return 0
    diff_of = {r.position: r.diff_id for r in ImageLayer.select(ImageLayer.position, ImageLayer.layer)
               .where(ImageLayer.image == image_id)}
    p = _db().param
    writers: dict[str, list[int]] = {}
    content: dict[tuple[int, str], dict[tuple[str, str, str], tuple[str, str]]] = {}
    marks = ", ".join([p] * len(dbs))
    for pos, path in _db().execute_sql(
            f"SELECT il.position, f.path FROM file f JOIN image_layer il ON il.diff_id = f.diff_id "
            f"WHERE il.image_id = {p} AND f.type = 'f' AND f.whiteout = 0 AND f.path IN ({marks})",
            (image_id, *dbs)).fetchall():
        writers.setdefault(path, []).append(pos)
    for pos, path, manager, name, version, arch, source in _db().execute_sql(
            f"SELECT il.position, lp.db_path, lp.manager, lp.name, lp.version, lp.arch, lp.source FROM layer_package "
            f"lp JOIN image_layer il ON il.diff_id = lp.diff_id WHERE il.image_id = {p} AND lp.db_path IN ({marks})",
            (image_id, *dbs)).fetchall():
        content.setdefault((pos, path), {})[(manager, name, arch)] = (version, source)
    rows = []
    for path in dbs:
        top = tree[path].position
        below = sorted((w for w in writers.get(path, ()) if w <= top), reverse=True)
        for key, (version, source) in content.get((top, path), {}).items():
            last = top
            for w in below[1:]:
                v = content.get((w, path), {}).get(key)
                if v is None or v[0] != version:
                    break
                last = w
            rows.append((image_id, key[0], key[1], version, key[2], source, diff_of.get(last), last))
    if rows:
        _executemany(f"INSERT INTO package (image_id, manager, name, version, arch, source, diff_id, position) "
                     f"VALUES ({', '.join([p] * 8)})", rows)
    return len(rows)


def subtree(image_id: str, path: str | None = None, *, detail: bool = True) -> list[Node]:
    """The merged tree sorted by path, or only `path` and what is under it (a symlink is not
    followed); ContainerError when the tree has no such path. detail: as merged()."""
    return pick(merged(image_id, detail=detail), path)


def pick(tree: dict[str, Node], path: str | None = None) -> list[Node]:
    """subtree()'s selection from a merged tree."""
    if path in (None, "", "/"):
        return [tree[p] for p in sorted(tree)]
    p = "/" + "/".join(c for c in str(path).split("/") if c and c != ".")
    if p not in tree:
        from container.engine.errors import ContainerError

        raise ContainerError(f"{path}: no such file or directory in the image")
    pre = p + "/"
    return [tree[p]] + [tree[q] for q in sorted(q for q in tree if q.startswith(pre))]


def image_packages(image_id: str) -> list[dict]:
    """The image's package rows as dicts, by manager then name (os-release first)."""
    from container.schema import Package

    q = (Package.select(Package.manager, Package.name, Package.version, Package.arch, Package.source,
                        Package.layer, Package.position).where(Package.image == image_id).tuples())
    rows = [dict(zip(("manager", "name", "version", "arch", "source", "diff_id", "layer"), r)) for r in q]
    return sorted(rows, key=lambda r: (r["manager"] != "os-release", r["manager"], r["name"], r["arch"]))
