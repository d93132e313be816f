"""Usage records: what blobs, layer trees and snapshots weigh on disk, read from their rows.

df, gc and fsck used to walk every tree for its inodes; the rows now carry what a walk would find
(schema/models.py: blob/layer/snapshot .disk .inodes .inode), measured once per published thing
and kept while the thing's inode on disk (free from the directory listing: DirEntry.inode()) is
the one measured. A row without a record, or whose record names another inode, is measured
(walked) and the record written back (`Sizes.save`); `fsck --repair` fills them all.

The accounting is engine/maint/inventory.py's (st_blocks * 512, each inode once) under one
invariant of the store's layout: every inode linked from two places has one of its links in a
layer tree (snapshots are directories plus hardlinks into their chain's layers; blobs, container
dirs and ingest partials hold their own inodes). So

- a blob file or a layer tree weighs all of its inodes ("all"),
- anything else weighs the inodes all of whose links lie inside it ("own": a snapshot's dirs and
  copies; a container's upper dir) — container dirs, ingest and orphans are measured live;

and what deleting a set of units frees is the sum of their weights, unless a snapshot that stays
is linked into a layer tree that goes (then the inodes are counted exactly, inventory.Accounting).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from container.engine.maint.inventory import StoreRows, Unit, measure_freed, scan

RECORDED = ("blob", "layer", "snapshot")      # the unit kinds whose weight a row records


def tree_usage(path: str) -> tuple[int, int, int, int]:
    """(all bytes, all inodes, own bytes, own inodes) of the tree at `path` (itself included, symlinks
    not followed: inventory.scan). "own": inodes all of whose links are inside the tree (directories
    always)."""
    seen: dict[tuple[int, int], list[int]] = {}      # (dev, ino) -> [bytes, nlink, links seen]
    all_b = all_n = own_b = own_n = 0
    for key, b, nlink in scan(path):
        if nlink <= 1:
            all_b += b
            all_n += 1
            own_b += b
            own_n += 1
            continue
        x = seen.get(key)
        if x is None:
            seen[key] = [b, nlink, 1]
            all_b += b
            all_n += 1
        else:
            x[2] += 1
    for b, nlink, links in seen.values():
        if links >= nlink:
            own_b += b
            own_n += 1
    return all_b, all_n, own_b, own_n


def entry_inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


class Sizes:
    """Each unit's weight ("all" for blobs and layer trees, "own" for the rest), from the records
    where they hold, measured otherwise; the measurements to record are kept for save()."""

    def __init__(self, st: StoreRows, present_layers: dict[str, int] | None = None):
        self.st = st
        self.present_layers = present_layers      # diff_id -> st_ino of its tree on disk (None: not known)
        self.weight: dict[str, int] = {}          # path -> bytes
        self.all_of: dict[str, int] = {}          # path -> all its inodes' bytes, when measured
        self.pending: dict[str, dict[str, tuple[int, int, int]]] = {k: {} for k in RECORDED}
        self.measured = 0                         # units walked (not read from records)
        self._chains: dict[str, tuple[str, int]] | None = None

    # -- which layers a snapshot links: its chain, from the images' layer lists
    def _index(self) -> None:
        chains: dict[str, tuple[str, int]] = {}
        for iid in self.st.layers_of():
            for n, c in enumerate(self.st.chains_of(iid)):
                chains.setdefault(c, (iid, n + 1))
        self._chains = chains

    def chain_layers(self, chain_id: str) -> list[str] | None:
        """The diff_ids of a snapshot's chain (None when no image names the chain)."""
        if self._chains is None:
            self._index()
        assert self._chains is not None
        at = self._chains.get(chain_id)
        if at is None:
            s = self.st.snapshots.get(chain_id)
            return [s.top_diff_id] if s is not None and s.chain_id == s.top_diff_id else None
        return [il.diff_id for il in self.st.layers_of()[at[0]][:at[1]]]

    def stamp(self, kind: str, key: str, ino: int | None) -> int | None:
        """What a record's `inode` must be to hold: the thing's st_ino; for a snapshot, its dir's st_ino
        together with those of its chain's layer trees (0 for one that is gone), since what it shares
        with them changes when one goes or is replaced. None: no record can be trusted."""
        if kind != "snapshot" or ino is None:
            return ino
        if self.present_layers is None:
            return None
        ls = self.chain_layers(key)
        if ls is None:
            return ino
        pl = self.present_layers
        return hash((ino, *[pl.get(d, 0) for d in ls])) & ((1 << 63) - 1)

    # -- weights
    def of(self, u: Unit) -> int:
        """The unit's weight (cached by path)."""
        return self.weight_of(u.kind, u.key, os.fspath(u.path), u.ino, layers_dir=u.category == "layers")

    def weight_of(self, kind: str, key: str, path: str, ino: int | None, *, layers_dir: bool = False) -> int:
        """kind blob|layer|snapshot (key: its digest; a row's record is used when its inode is `ino`),
        or anything else (measured: container, ingest, tmp, orphan). layers_dir: a tmp tree in layers/."""
        w = self.weight.get(path)
        if w is not None:
            return w
        row = None
        if kind == "blob":
            row = self.st.blobs.get(key)
        elif kind == "layer":
            row = self.st.layers.get(key)
        elif kind == "snapshot":
            row = self.st.snapshots.get(key)
        if row is not None and row.disk is not None and row.inode is not None:
            if ino is None:
                ino = entry_inode(path)
            if row.inode == self.stamp(kind, key, ino):
                self.weight[path] = row.disk
                return row.disk
        self.measured += 1
        if kind == "blob":
            try:
                s = os.lstat(path)
                all_b = own_b = s.st_blocks * 512
                all_n = own_n = 1
                if ino is None:
                    ino = s.st_ino
            except OSError:
                all_b = all_n = own_b = own_n = 0
        else:
            all_b, all_n, own_b, own_n = tree_usage(path)
        self.all_of[path] = all_b
        if kind in ("blob", "layer") or layers_dir:
            w, n = all_b, all_n
        else:
            w, n = own_b, own_n
        if row is not None and kind in RECORDED:
            stamp = self.stamp(kind, key, ino if ino is not None else entry_inode(path))
            if stamp is not None:
                self.pending[kind][key] = (w, n, stamp)
        self.weight[path] = w
        return w

    def bulk(self, kind: str, entries: Iterable[os.DirEntry]) -> dict[str, int]:
        """name -> weight for the entries of blobs/ (kind "blob"), layers/ ("layer") or snapshots/
        ("snapshot"): the records where they hold, measured otherwise (rows or not)."""
        rows = {"blob": self.st.blobs, "layer": self.st.layers, "snapshot": self.st.snapshots}[kind]
        snap = kind == "snapshot"
        out: dict[str, int] = {}
        lstat = os.lstat
        for e in entries:
            name = e.name
            key = "sha256:" + name
            r = rows.get(key)
            if r is None and kind == "blob":          # an unrecorded file: one lstat, nothing to record
                try:
                    out[name] = lstat(e.path).st_blocks * 512
                except OSError:
                    out[name] = 0
            elif r is not None and r.disk is not None and r.inode == (self.stamp(kind, key, e.inode()) if snap
                                                                      else e.inode()):
                out[name] = r.disk
            else:
                out[name] = self.weight_of(kind, key, e.path, e.inode(), layers_dir=kind == "layer")
        return out

    def needs_exact(self, going: set[str], kept_snapshots: Iterable[str]) -> bool:
        """Whether deleting layer trees `going` (diff_ids) must be counted inode by inode: a snapshot
        tree that stays (`kept_snapshots`: chain ids, or the names of tmp trees) links one of them."""
        if not going:
            return False
        for c in kept_snapshots:
            ls = self.chain_layers(c)
            if ls is None or going.intersection(ls):
                return True
        return False

    def freed(self, units: Iterable[Unit], kept_snapshots: Iterable[str]) -> tuple[int, dict[int, int]]:
        """What deleting `units` frees, and each unit's share (as inventory.Accounting.freed)."""
        units = list(units)
        if self.needs_exact({u.key for u in units if u.kind == "layer"}, kept_snapshots):
            return measure_freed(units)
        per = {id(u): self.of(u) for u in units}
        return sum(per.values()), per

    def save(self) -> int:
        """Write the pending measurements into their rows (best effort: a read-only database keeps
        them unrecorded, measured again next time). Returns how many were recorded."""
        from container.schema import Blob, Layer, Snapshot, update_many, write_txn

        n = sum(len(v) for v in self.pending.values())
        if not n:
            return 0
        try:
            with write_txn():
                update_many(Blob.digest, [Blob.disk, Blob.inode],
                            ((w, ino, d) for d, (w, _, ino) in self.pending["blob"].items()))
                update_many(Layer.diff_id, [Layer.disk, Layer.inodes, Layer.inode],
                            ((w, k, ino, d) for d, (w, k, ino) in self.pending["layer"].items()))
                update_many(Snapshot.chain_id, [Snapshot.disk, Snapshot.inodes, Snapshot.inode],
                            ((w, k, ino, d) for d, (w, k, ino) in self.pending["snapshot"].items()))
        except Exception:        # noqa: BLE001 - a record is an optimisation; never fail the reader
            return 0
        self.pending = {k: {} for k in RECORDED}
        return n


def forget_linking(st: StoreRows, diff_ids: Iterable[str]) -> None:
    """Drop the records of the snapshots that may link layer trees `diff_ids` (deleted or rewritten):
    those whose chain holds one, and those no image names."""
    going = set(diff_ids)
    if not going:
        return
    sz = Sizes(st)
    forget("snapshot", [c for c in st.snapshots if (ls := sz.chain_layers(c)) is None or going.intersection(ls)])


def forget(kind: str, keys: Iterable[str]) -> None:
    """Drop the records of things rewritten in place (fsck re-unpacks, snapshot rebuilds)."""
    from container.schema import Blob, Layer, Snapshot, delete_in

    col = {"blob": Blob.digest, "layer": Layer.diff_id, "snapshot": Snapshot.chain_id}[kind]
    model = col.model
    keys = list(keys)
    delete_in(col, keys, set_null=(model.disk, model.inode))
