"""What a spawn is given: the process to run (ProcessSpec) and the rootfs to run it in (RootfsSpec)."""

from __future__ import annotations

from container.engine.runtime.record import REQUIRED, Record


class ProcessSpec(Record):
    FIELDS = dict(argv=REQUIRED, env=REQUIRED, cwd="/", uid=0, gid=0, sgids=tuple, hostname="",
                  tty=False, interactive=False, read_only=False,
                  network="host")         # host | none
    __slots__ = tuple(FIELDS)


class RootfsSpec(Record):
    # mode: overlay | copy; path: the mount point (overlay) or the private copy (copy);
    # lower: overlay's read-only lower (the snapshot); upper/work: the container's
    FIELDS = dict(mode=REQUIRED, path=REQUIRED, lower="", upper="", work="")
    __slots__ = tuple(FIELDS)
