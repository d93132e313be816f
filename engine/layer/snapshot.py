"""Snapshots: the merged rootfs of a layer chain, cached in snapshots/<chain id>/ and recorded.

    ensure_snapshot(store, diff_ids) -> (chain_id, path)
    built = build_snapshot(store, diff_ids)          # the merge alone (no database): a pull overlaps it
    ensure_snapshot(store, diff_ids, built=built)    # with recording the image
    BackgroundMerge(store, diff_ids, ...)            # build_snapshot on a thread (pull): result(), discard()
    merge_layers(layers, dest) -> (entries, bytes)

merge_layers runs the top-down merge (engine/layer/topdown.py) and falls back to the bottom-up one
(engine/layer/merge.py, where the merge semantics are described) when a layer holds hardlinks
into lower layers or the top-down walk runs out of file descriptors.

Built in snapshots/.tmp-XXXX, renamed into place, recorded as a Snapshot row; a snapshot that
exists is returned at once (last_used updated). Call under store.lock(exclusive=False).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from container.engine.errors import LayerError, StoreError
from container.engine.image.identity import chain_ids
from container.engine.layer.merge import Merger, merge_layers_bottom_up, merge_onto
from container.engine.layer.topdown import TopDownUnsupported, merge_layers_top_down

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any


def merge_layers(layers: list[Path], dest: Path, *, count_bytes: bool = False) -> tuple[int, int]:
    """Merge layer trees (base first) into the existing empty directory dest: top-down, or
    bottom-up when a layer holds hardlinks into lower layers.

    -> (entries, bytes of regular files; 0 unless count_bytes)."""
    try:
        return merge_layers_top_down(layers, dest, count_bytes=count_bytes)
    except TopDownUnsupported:
        pass
    tfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        Merger().clear_dir(tfd)
    finally:
        os.close(tfd)
    return merge_layers_bottom_up(layers, dest, count_bytes=count_bytes)


def build_snapshot(store, diff_ids: list[str], *, process: bool = False, first: int | None = None,
                   onto: tuple[Path, int, int] | None = None) -> tuple[Path, int, int] | None:
    """The merge of ensure_snapshot without the database (a pull runs it on a thread while it
    records the image; `process`: the merge itself in a process of its own, engine/layer/worker.py):
    (temp dir under snapshots/, entries, bytes), or None when the snapshot's directory exists. Give
    the result to ensure_snapshot(..., built=), or remove_tree() it.

    In two steps, while a pull downloads the layers above the ones it has: `first` merges only
    diff_ids[:first]; its result, given as `onto` with the same `first`, gets the rest merged onto
    it (bottom-up: engine/layer/merge.merge_onto), which makes the same tree as one merge of all."""
    from container.cas.fsutil import remove_tree

    if not diff_ids:
        raise LayerError("an image without layers has no root filesystem")
    chain = chain_ids(list(diff_ids))[-1]
    if store.snapshot_path(chain).is_dir():
        if onto is not None:
            remove_tree(onto[0])
        return None
    k = len(diff_ids) if first is None else first
    names = diff_ids[k:] if onto is not None else diff_ids[:k]
    now = [store.layer_path(d) for d in names]
    for d, p in zip(names, now):
        if not p.is_dir():
            if onto is not None:
                remove_tree(onto[0])
            raise StoreError(f"layer {d} is not unpacked in the store (run fsck or pull again)")
    if onto is not None:
        tmp = onto[0]
    else:
        store.snapshots_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=store.snapshots_dir))
    try:
        if process:
            from container.engine.layer.worker import merge_in_worker

            entries, size = merge_in_worker(now, tmp, onto=None if onto is None else onto[1])
        elif onto is not None:
            entries, size = merge_onto(now, tmp, onto[1])
        else:
            entries, size = merge_layers(now, tmp)
    except OSError as e:
        remove_tree(tmp)
        raise LayerError(f"cannot build snapshot {chain}: {e.strerror or e}"
                         + (f" ({e.filename!r})" if e.filename else "")) from None
    except BaseException:
        remove_tree(tmp)
        raise
    return tmp, entries, size


class BackgroundMerge:
    """build_snapshot on a thread of its own (a pull overlaps it with its download and its record);
    result() waits and gives what it built (or raises what it raised); discard() waits (or stops
    it) and removes it.

    With `first` (the layers below the first one the pull downloads: all in the store), those merge
    at once, while the pull downloads the rest (in a process when `early_process`), and the others
    once go() says they are in place: a second pull that fetches only its top layer then merges only
    that one after its download."""

    def __init__(self, store, diff_ids: list[str], process: bool = False, first: int | None = None,
                 early_process: bool = False) -> None:
        self.store, self.diff_ids, self.process = store, diff_ids, process
        self.first, self.early_process = first, early_process
        self._out: Any = None
        self._go = threading.Event()
        self._stopped = False
        if first is None:
            self._go.set()
        self._t = threading.Thread(target=self._run, name="snapshot-merge", daemon=True)
        self._t.start()

    def go(self, process: bool) -> None:
        """Every layer is in the store now: merge the rest (in a process when `process`)."""
        self.process = process
        self._go.set()

    def _run(self) -> None:
        from container.cas.fsutil import remove_tree

        part = None
        try:
            if self.first is not None:
                part = build_snapshot(self.store, self.diff_ids, first=self.first, process=self.early_process)
                self._go.wait()
                if part is None or self._stopped:
                    return
            onto, part = part, None            # (build_snapshot removes it when it fails)
            self._out = build_snapshot(self.store, self.diff_ids, process=self.process, first=self.first,
                                       onto=onto)
        except BaseException as e:      # (handed to result())
            self._out = e
        finally:
            if part is not None:
                remove_tree(part[0])

    def result(self):
        self._t.join()
        if isinstance(self._out, BaseException):
            raise self._out
        return self._out

    def discard(self) -> None:
        from container.cas.fsutil import remove_tree

        self._stopped = True
        self._go.set()
        self._t.join()
        if isinstance(self._out, tuple):
            remove_tree(self._out[0])


def ensure_snapshot(store, diff_ids: list[str], built: tuple[Path, int, int] | None = None) -> tuple[str, Path]:
    """(chain_id, path) of the merged rootfs of diff_ids; built (or taken from `built`, what
    build_snapshot made) and recorded if missing."""
    from container.cas.fsutil import publish_dir, remove_tree
    from container.schema import models as m

    if not diff_ids:
        raise LayerError("an image without layers has no root filesystem")
    chains = chain_ids(list(diff_ids))
    chain = chains[-1]
    final = store.snapshot_path(chain)
    store.db()
    row = m.Snapshot.get_or_none(m.Snapshot.chain_id == chain)
    if row is not None and final.is_dir():
        if built is not None:
            remove_tree(built[0])
        m.Snapshot.update(last_used=m.utcnow()).where(m.Snapshot.chain_id == chain).execute()
        return chain, final

    entries = size = None
    if not final.is_dir():
        if built is None:
            built = build_snapshot(store, diff_ids)
        if built is not None:
            tmp, entries, size = built
            publish_dir(tmp, final)       # False (tmp removed): another process published the chain first
    elif built is not None:
        remove_tree(built[0])
    _record(chains, diff_ids, entries, size)
    return chain, final


def _record(chains: list[str], diff_ids: list[str], entries: int | None, size: int | None) -> None:
    from container.schema import models as m
    from container.schema.db import write_txn

    top = m.Layer.get_or_none(m.Layer.diff_id == diff_ids[-1])
    if top is None:
        raise StoreError(f"layer {diff_ids[-1]} is not recorded in the store database")
    if size is not None:
        # file bytes the snapshot links (upper bound: whiteouts and replaced files are not
        # subtracted); counting exactly costs a stat per file
        size = sum(r.size for r in m.Layer.select(m.Layer.size).where(m.Layer.diff_id.in_(list(diff_ids))))
    with write_txn():
        (m.Snapshot.insert(chain_id=chains[-1], parent=chains[-2] if len(chains) > 1 else None,
                           top=top.diff_id, size=size or 0, entries=entries or 0)
         .on_conflict_ignore().execute())
        m.Snapshot.update(last_used=m.utcnow()).where(m.Snapshot.chain_id == chains[-1]).execute()
