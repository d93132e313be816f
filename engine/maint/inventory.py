"""The store's inventory, shared by gc, df and fsck: its rows, its directories and what they weigh.

Rows: `load_rows()` reads every row a sweep or a check needs, once, as light namedtuples
(`StoreRows`); `recount_refs()` sets Blob.refs / Layer.refs to the edges that name them.
Disk: a `Unit` is one deletable thing on disk (a blob
file, a layer tree, a container dir, ...) scanned into its inodes; `Accounting` adds units up.

Sizes are **disk usage, st_blocks * 512**, the number `du -B1` shows (not st_size), and every
inode is counted once by (st_dev, st_ino) however many hardlinks name it (layers/ and
snapshots/ share inodes). Directories count their own blocks. Each unit is scanned once into
its list of inodes (with multiplicity: a hardlink inside one tree counts twice). Then:

- the size of a set of units = the blocks of the union of their inodes;
- what deleting a set of units frees = the blocks of the inodes all of whose links lie inside
  the set (a layer file still linked from a kept snapshot is not freed).
"""

from __future__ import annotations

import os
import stat as _stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from container.cas import Digest
from container.engine.image.reference import familiar

# -- rows ------------------------------------------------------------------------------------------


@dataclass
class StoreRows:
    """Every row of the metadata database a sweep or a check looks at (attribute names as the
    models' *_id accessors): lists, or dicts keyed by the row's primary key."""

    tags: list
    images: dict
    image_layers: list
    containers: dict
    snapshots: dict
    layers: dict
    blobs: dict
    leases: list
    memo: dict = field(default_factory=dict, repr=False)

    def layers_of(self) -> dict[str, list]:
        """image id -> its image_layers rows, base first (computed once)."""
        if "layers_of" not in self.memo:
            by: dict[str, list] = {}
            for il in self.image_layers:
                by.setdefault(il.image_id, []).append(il)
            self.memo["layers_of"] = by
        return self.memo["layers_of"]

    def chains_of(self, image_id: str) -> list[str]:
        """The chain ids of every prefix of the image's layer stack (its snapshots' names; once)."""
        from container.engine.image.identity import chain_ids

        memo = self.memo.setdefault("chains", {})
        c = memo.get(image_id)
        if c is None:
            c = memo[image_id] = chain_ids([il.diff_id for il in self.layers_of().get(image_id, [])])
        return c


def load_rows() -> StoreRows:
    """Read the StoreRows of the open database (the caller holds the store lock it needs)."""
    from container.schema import Blob, Container, Image, ImageLayer, Layer, Lease, Snapshot, Tag

    def q(model, *cols):
        return list(model.select(*cols).namedtuples())

    def raw(model, cols: str, order: str = "") -> list:
        """A big table without peewee's per-row work: plain tuples as namedtuples named as the
        columns (no conversion: these columns hold strings and integers)."""
        from collections import namedtuple

        nt = namedtuple(model.__name__ + "Row", cols)  # type: ignore[misc]
        sql = f"SELECT {', '.join(cols.split())} FROM {model._meta.table_name}" + (f" ORDER BY {order}" if order else "")
        return [nt._make(r) for r in model._meta.database.execute_sql(sql).fetchall()]

    return StoreRows(
        tags=q(Tag, Tag.id, Tag.repository, Tag.tag, Tag.digest, Tag.image.alias("image_id")),
        images={i.id: i for i in q(Image, Image.id, Image.manifest.alias("manifest_digest"),
                                   Image.config.alias("config_digest"), Image.index.alias("index_digest"),
                                   Image.chain_id, Image.created, Image.pulled)},
        image_layers=raw(ImageLayer, "image_id position blob_digest diff_id media_type", "image_id, position"),
        containers={c.id: c for c in q(Container, Container.id, Container.name, Container.image.alias("image_id"),
                                       Container.image_ref, Container.snapshot.alias("chain_id"),
                                       Container.status, Container.created)},
        snapshots={x.chain_id: x for x in raw(Snapshot, "chain_id top_diff_id disk inodes inode")},
        layers={x.diff_id: x for x in raw(Layer, "diff_id refs disk inodes inode")},
        blobs={b.digest: b for b in raw(Blob, "digest size refs media_type disk inode verified")},
        leases=q(Lease, Lease.id, Lease.pid, Lease.created, Lease.expires),
    )


def recount_refs() -> None:
    """Blob.refs / Layer.refs := the number of edges naming them (inside the caller's transaction).
    Plain tuples (no peewee rows): this runs on every gc, over every row."""
    from container.schema import Blob, Layer, update_many

    db = Blob._meta.database
    q = lambda sql: db.execute_sql(sql).fetchall()  # noqa: E731
    brefs: dict[str, int] = {}
    for row in q("SELECT manifest_digest, config_digest, index_digest FROM image"):
        for d in row:
            if d:
                brefs[d] = brefs.get(d, 0) + 1
    lrefs: dict[str, int] = {}
    for bd, diff in q("SELECT blob_digest, diff_id FROM image_layer"):
        brefs[bd] = brefs.get(bd, 0) + 1
        lrefs[diff] = lrefs.get(diff, 0) + 1
    blobs = q("SELECT digest, refs FROM blob")
    update_many(Blob.digest, [Blob.refs], [(brefs.get(d, 0), d) for d, refs in blobs if refs != brefs.get(d, 0)])
    layers = q("SELECT diff_id, refs FROM layer")
    update_many(Layer.diff_id, [Layer.refs], [(lrefs.get(d, 0), d) for d, refs in layers if refs != lrefs.get(d, 0)])


def tag_name(t) -> str:
    """A Tag row as docker shows it: familiar repository, then :tag or @digest."""
    return f"{familiar(t.repository)}:{t.tag}" if t.tag else f"{familiar(t.repository)}@{t.digest}"


# -- disk ------------------------------------------------------------------------------------------

def digest_path(d: Path, digest: str) -> Path | None:
    """d/<hex> for a valid sha256 digest; None for anything else (a tampered row never becomes a path)."""
    return d / Digest.parse(digest).hex if Digest.is_valid(digest) else None


def scan(path: Path | str) -> list[tuple[tuple[int, int], int, int]]:
    """Every inode under `path` (itself included, symlinks not followed) as ((dev, ino), bytes, nlink).

    Directories get nlink 1 (they cannot be hardlinked; their st_nlink counts subdirs)."""
    out: list[tuple[tuple[int, int], int, int]] = []
    try:
        st = os.lstat(path)
    except OSError:
        return out
    if _stat.S_ISDIR(st.st_mode):
        out.append(((st.st_dev, st.st_ino), st.st_blocks * 512, 1))
        _scan_dir(os.fspath(path), out)
    else:
        out.append(((st.st_dev, st.st_ino), st.st_blocks * 512, st.st_nlink))
    return out


def _scan_dir(path: str, out: list) -> None:
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if _stat.S_ISDIR(st.st_mode):
                    out.append(((st.st_dev, st.st_ino), st.st_blocks * 512, 1))
                    stack.append(e.path)
                else:
                    out.append(((st.st_dev, st.st_ino), st.st_blocks * 512, st.st_nlink))


@dataclass
class Unit:
    """One deletable thing on disk: a category, a key (digest, id, name) and a path."""

    category: str            # images | layers | snapshots | containers | ingest
    kind: str                # blob | layer | snapshot | container | ingest | orphan | tmp
    key: str
    path: Path | str
    inodes: list = field(default_factory=list, repr=False)
    ino: int | None = None   # st_ino of path when listed (DirEntry.inode(): no stat)

    def load(self) -> "Unit":
        self.inodes = scan(self.path)
        return self


class Accounting:
    """Units and the inodes they name, for sizes and for what a deletion frees."""

    def __init__(self, units: Iterable[Unit] = ()):
        self.units: list[Unit] = []
        self.size_of: dict[tuple[int, int], int] = {}
        self.nlink_of: dict[tuple[int, int], int] = {}
        for u in units:
            self.add(u)

    def add(self, u: Unit) -> Unit:
        if not u.inodes:
            u.load()
        for key, size, nlink in u.inodes:
            self.size_of[key] = size
            self.nlink_of[key] = nlink
        self.units.append(u)
        return u

    def size(self, units: Iterable[Unit]) -> int:
        seen: set = set()
        total = 0
        for u in units:
            for key, size, _ in u.inodes:
                if key not in seen:
                    seen.add(key)
                    total += size
        return total

    def freed(self, units: Iterable[Unit], also: set | frozenset = frozenset()) -> tuple[int, dict[int, int]]:
        """Bytes freed by deleting `units`: inodes all of whose links are among them (`also`: inodes
        with one more link that goes with the others: dedupe's objects, swept by gc).

        Returns (total, {id(unit): bytes attributed to it}) — each freed inode
        attributed to the first unit that names it."""
        units = list(units)
        count: dict[tuple[int, int], int] = dict.fromkeys(also, 1)
        for u in units:
            for key, _, _ in u.inodes:
                count[key] = count.get(key, 0) + 1
        per: dict[int, int] = {}
        done: set = set()
        total = 0
        for u in units:
            n = 0
            for key, size, nlink in u.inodes:
                if key in done:
                    continue
                if count[key] >= nlink:
                    done.add(key)
                    n += size
            per[id(u)] = n
            total += n
        return total, per


def measure_freed(units: Iterable[Unit]) -> tuple[int, dict[int, int]]:
    """Scan `units` (if not yet) and return what deleting them frees (see Accounting.freed)."""
    acc = Accounting(units)
    return acc.freed(acc.units)
