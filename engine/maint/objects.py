"""What dedupe's objects (engine/layer/dedupe.py) weigh, without a walk per command: the ledger.

df, gc and fsck need the objects dir's numbers: its own bytes, the bytes of linked objects, the
loose ones (nothing links them: gc sweeps them) and what the trees' records say they hold. A walk
lstat's every object, one per unpacked regular file of every layer (~100k at 500 images), so the
walk's result is kept in the `meta` row `objects_ledger` (JSON: the database is not part of what df
adds up against du) with a stamp: the mtime_ns of objects/, of each objects/<2 hex>/, of
objects/trees/, layers/ and snapshots/. An object is created or unlinked in its <2 hex> dir, a
tree's record written or removed in trees/, and an object's link count changes only when a tree
that links it is built (a .tmp- dir made in layers/ or snapshots/, renamed when done) or removed
(rmdir in layers/ or snapshots/): every change moves one of those mtimes, so while the stamp is the
same the numbers are. A stamp whose newest mtime is under 50 ms old is never recorded (the clock
behind mtimes is coarse: the next change could get the same value).

gc keeps the ledger as it sweeps (engine/maint/gc.py): the objects it looks at are the inodes of the
files it unlinked (the listing's d_ino, no stat), and it writes the new numbers when it is done.
Whatever the ledger says, an object is unlinked only after an lstat finds its link count 1.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

KEY = "objects_ledger"
SETTLE_NS = 50_000_000


@dataclass
class Summary:
    """The objects dir's numbers (bytes are st_blocks * 512)."""

    dirs: int = 0         # the objects dir, its <2 hex> dirs and trees/
    records: int = 0      # the trees' record files
    live: int = 0         # objects something else links
    loose: int = 0        # objects nothing else links (gc sweeps them)
    n_loose: int = 0
    held: int = 0         # the present trees' records: bytes of their object inodes (each once per tree)
    within: int = 0       # and what sharing inside a tree saved

    @property
    def own(self) -> int:
        return self.dirs + self.records


def stamp(store) -> tuple[list, bool]:
    """(the stamp, whether it is settled: may be recorded)."""
    out: list = []
    root = os.fspath(store.objects_dir)
    try:
        out.append([".", os.lstat(root).st_mtime_ns])
        with os.scandir(root) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    out.append([e.name, e.stat(follow_symlinks=False).st_mtime_ns])
    except FileNotFoundError:
        return [], False
    for name, d in (("<layers>", store.layers_dir), ("<snapshots>", store.snapshots_dir)):
        try:
            out.append([name, os.lstat(d).st_mtime_ns])
        except FileNotFoundError:
            out.append([name, 0])
    out.sort()
    newest = max(m for _, m in out)
    return out, newest < time.time_ns() - SETTLE_NS


def _read() -> dict | None:
    from container.schema import Meta

    try:
        row = Meta.get_or_none(Meta.key == KEY)
        return json.loads(row.value) if row is not None else None
    except Exception:      # noqa: BLE001 - a ledger that cannot be read is a walk, never an error
        return None


def record(store, s: Summary, *, measured: list | None = None, wait: bool = False) -> bool:
    """Write `s` with the current stamp (best effort: a read-only database keeps walking).
    measured: the stamp taken before `s` was measured (nothing is written when it moved since).
    wait: sleep until the stamp is settled (gc, which just changed the dirs, under its exclusive lock)."""
    from container.schema import Meta, write_txn

    st, settled = stamp(store)
    if not settled and wait and st:
        newest = max(m for _, m in st)
        time.sleep(max(0.0, (newest + SETTLE_NS - time.time_ns()) / 1e9) + 0.001)
        st, settled = stamp(store)
    if not settled or (measured is not None and st != measured):
        return False
    try:
        with write_txn():
            Meta.delete().where(Meta.key == KEY).execute()
            Meta.insert(key=KEY, value=json.dumps({"stamp": st, **asdict(s)})).execute()
    except Exception:      # noqa: BLE001 - the ledger saves work next time; never fail the command
        return False
    return True


def walk(store) -> Summary:
    """Measure the objects dir (every object lstat'ed) and what the present trees' records hold."""
    from container.engine.layer import dedupe

    dirs, records, live, loose, n_loose = dedupe.usage(store.objects_dir)
    try:
        names = set(os.listdir(store.layers_dir))
    except FileNotFoundError:
        names = set()
    held, within = dedupe.held_by_trees(store.objects_dir, names)
    return Summary(dirs, records, live, loose, n_loose, held, within)


def summary(store) -> Summary | None:
    """The objects dir's numbers: the ledger's while its stamp holds, else walked (and recorded).
    None: the store has no objects dir."""
    if not store.objects_dir.is_dir():
        return None
    st, settled = stamp(store)
    memo = _MEMO.get(os.fspath(store.objects_dir))
    if memo is not None and memo[0] == st:      # df asks twice (its plan, its rows): one walk
        return memo[1]
    got = _read()
    if got is not None and got.get("stamp") == st:
        try:
            return Summary(**{k: int(v) for k, v in got.items() if k != "stamp"})
        except (TypeError, ValueError):
            pass
    s = walk(store)
    if settled:
        record(store, s, measured=st)           # unless something changed while we walked
        _MEMO[os.fspath(store.objects_dir)] = (st, s)
    return s


_MEMO: dict[str, tuple[list, Summary]] = {}


def sweep(store, before: Summary | None, unlinked: set[int] | None, going_held: tuple[int, int],
          mapper: Callable | None = None) -> int:
    """gc's sweep, after its deletes: the objects that nothing links now, looked for among the
    inodes it unlinked (every object, when the ledger counted loose ones or `unlinked` is None), the
    records of trees that are gone; then the ledger's new numbers (`going_held`: what the records of
    the deleted trees held). `mapper`: a thread pool's map (dedupe.serial by default). Returns the
    bytes freed."""
    from container.engine.layer import dedupe

    full = before is None or before.n_loose > 0 or unlinked is None
    if not full and not unlinked:           # nothing was deleted: nothing can have come loose
        return 0
    mapper = mapper or dedupe.serial
    n, freed = dedupe.sweep_objects(store.objects_dir, only=None if full else unlinked, mapper=mapper)
    gone_records = dedupe.drop_records(store.objects_dir, store.layers_dir, mapper)
    if before is not None:
        newly = freed - before.loose if full else freed      # objects the deleted trees linked
        after = Summary(dirs=dedupe.dir_bytes(store.objects_dir), records=max(0, before.records - gone_records),
                        live=max(0, before.live - newly), loose=0, n_loose=0,
                        held=max(0, before.held - going_held[0]), within=max(0, before.within - going_held[1]))
        record(store, after, wait=True)
    return freed
