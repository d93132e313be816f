"""gc's sweep, the parts that are not the plan: what deleting units frees (`Weigher`, decided before
anything goes) and the threads the deletes run in (`Pool`). engine/maint/gc.py uses both."""

from __future__ import annotations

from container.engine.maint.inventory import Accounting, Unit
from container.engine.maint.usage import Sizes

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    import concurrent.futures as cf
    from collections.abc import Iterable

    from container.engine.maint.gc import Plan


class Weigher:
    """What deleting some of the plan's units frees, decided before anything goes: each unit's weight
    from the usage records (engine/maint/usage.py), or, when a snapshot that stays links a layer tree
    that goes (or the plan has no rows), every inode counted (inventory.Accounting).

    dedupe's objects: a layer tree's record counts the inodes it shares with objects/, which only
    go when the sweep finds nothing else links them; so a tree weighs its record less what its
    dedupe record says it holds (engine/layer/dedupe.py), and the sweep adds what it frees. A dry
    run counts inode by inode, each object one more link that goes with the others."""

    def __init__(self, plan: Plan, extra_kept: Iterable[str] = (), objects_dir=None, *, dry_run: bool = False):
        from container.engine.layer import dedupe

        self.acc: Accounting | None = None
        self.objects_dir = objects_dir
        self.per: dict[int, int] = {}
        self.held: dict[int, tuple[int, int]] = {}      # id(layer unit) -> its dedupe record (held, within)
        self.objects: set[tuple[int, int]] = set()
        self.garbage = plan.objects.loose if objects_dir is not None and plan.objects is not None else 0
        if objects_dir is not None and dry_run:
            self.objects = dedupe.object_inodes(objects_dir)        # from the listings: no stat
        sz = Sizes(plan.rows, plan.present_layers) if plan.rows is not None else None
        live_tmp = objects_dir is not None and any(u.kind == "tmp" and u.category in ("layers", "snapshots")
                                                   for u in plan.units)
        if sz is None or self.objects or live_tmp or sz.needs_exact({u.key for u in plan.units if u.kind == "layer"},
                                                                    [*plan.kept_snapshots, *extra_kept]):
            self.acc = Accounting(plan.units)
            return
        self.per = {id(u): sz.of(u) for u in plan.units}
        if objects_dir is not None:
            for u in plan.units:
                if u.kind == "layer" and u.key.startswith("sha256:"):
                    self.held[id(u)] = h = dedupe.held_by_trees(objects_dir, {u.key[7:]})
                    self.per[id(u)] = max(0, self.per[id(u)] - h[0])

    def freed(self, units: list[Unit], *, with_objects: bool = False) -> tuple[int, dict[int, int]]:
        """with_objects: the objects the deletion leaves unlinked count too (gc sweeps them)."""
        if self.acc is not None:
            if with_objects:
                n, per = self.acc.freed(units, self.objects)
                return n + self.garbage, per
            return self.acc.freed(units)
        per = {id(u): self.per[id(u)] for u in units}
        return sum(per.values()), per

    def held_by(self, units: list[Unit]) -> tuple[int, int]:
        """What the dedupe records of these (layer) units say they hold: (held, within)."""
        from container.engine.layer import dedupe

        if self.objects_dir is None:
            return 0, 0
        missing = {u.key[7:] for u in units if u.kind == "layer" and u.key.startswith("sha256:")
                   and id(u) not in self.held}
        h, w = dedupe.held_by_trees(self.objects_dir, missing) if missing else (0, 0)
        for u in units:
            if id(u) in self.held:
                h += self.held[id(u)][0]
                w += self.held[id(u)][1]
        return h, w


class Pool:
    """map() over a few threads, in order: an unlink of a file whose blocks are on disk waits for the
    journal (~2 ms on ext4 with discard), and independent deletes overlap those waits (measured 8x
    on 2000 files). Each thread takes a run of items: one future per item cost more CPU than the
    delete of a small blob (15k futures, and the threads handing the GIL over per future)."""

    WORKERS, RUNS = 8, 64

    def __enter__(self) -> "Pool":
        self.ex: cf.ThreadPoolExecutor | None = None
        return self

    def map(self, fn, items) -> list:
        """[fn(x) for x in items], in order, over the threads."""
        items = list(items)
        if len(items) <= 16:
            return [fn(x) for x in items]
        if self.ex is None:
            import concurrent.futures

            self.ex = concurrent.futures.ThreadPoolExecutor(max_workers=self.WORKERS, thread_name_prefix="gc-rm")
        n = min(self.RUNS, len(items))
        runs = [items[i::n] for i in range(n)]        # strided: big and small mixed
        out: list = [None] * len(items)
        for i, got in enumerate(self.ex.map(lambda r: [fn(x) for x in r], runs)):
            out[i::n] = got
        return out

    def __exit__(self, *exc) -> None:
        if self.ex is not None:
            self.ex.shutdown()
