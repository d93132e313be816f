"""Time one snapshot build: engine.layer.snapshot.ensure_snapshot on a store that already holds the layers.

    python tools/bench/snapshot_driver.py ROOT IMAGE   ->  prints "CHAIN_ID SNAPSHOT_PATH SECONDS"

The image's snapshots (its chain and every prefix of it) are removed first (untimed), so the timed
call really builds the rootfs from layers/ by hardlinking. Interpreter start-up and imports are
outside the timing, as they are for `cp` (a compiled program).
"""

from __future__ import annotations

import os
import sys
import time


def main(root: str, ref: str, around=None) -> int:
    """`around(fn)`, if given, calls fn (the timed build): tools/bench/profile_cmd.py profiles it."""
    from container.cas.fsutil import remove_tree
    from container.engine.image.catalog import resolve_image
    from container.engine.image.identity import chain_ids
    from container.engine.layer.snapshot import ensure_snapshot
    from container.engine.store import Store
    from container.schema import Snapshot, write_txn

    store = Store(root)
    store.db()
    info = resolve_image(store, ref)
    cids = chain_ids(list(info.diff_ids))
    with store.lock(exclusive=True):
        with write_txn():
            Snapshot.delete().where(Snapshot.chain_id.in_(cids)).execute()
        for cid in cids:
            p = store.snapshot_path(cid)
            if p.exists():
                remove_tree(p)
    os.sync()
    t0 = time.perf_counter()
    def build():
        with store.lock(exclusive=False):
            return ensure_snapshot(store, list(info.diff_ids))
    chain_id, path = around(build) if around else build()
    secs = time.perf_counter() - t0
    print(chain_id, path, f"{secs:.6f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
