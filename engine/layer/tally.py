"""What a fresh layer tree weighs on disk, counted while the extractor makes it: the usage record
(engine/maint/usage.py: st_blocks * 512 of each inode once, the number of inodes, the tree's own
st_ino) that df, gc and fsck would otherwise walk the tree for.

    tally = Tally()                    # the extractor calls add()/at() for every inode it makes
    tally.record(os.fstat(root_fd))    # -> (bytes, inodes, root st_ino), or None (not exact)

Each inode is counted once, by its number, with the size it has once it is final (files after
their data, attributes and dedupe; directories at the end). A layer that removes something it
made (a later entry replacing an earlier path) makes the count unsure: `exact` goes False and the
tree is measured by a walk when first needed, as before.
"""

from __future__ import annotations

import os


class Tally:
    __slots__ = ("inodes", "exact")

    def __init__(self) -> None:
        self.inodes: dict[int, int] = {}
        self.exact = True

    def add(self, st: os.stat_result) -> None:
        self.inodes[st.st_ino] = st.st_blocks * 512

    def at(self, dir_fd: int, name: bytes) -> None:
        """The inode at name in dir_fd (not followed)."""
        self.add(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))

    def record(self, root: os.stat_result) -> tuple[int, int, int] | None:
        if not self.exact:
            return None
        self.add(root)
        return sum(self.inodes.values()), len(self.inodes), root.st_ino
