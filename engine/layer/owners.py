"""What the unpacker may do about owners, special mode bits and device nodes: one OwnerPolicy per
unpack, decided from the process's id mapping (/proc/self/uid_map, gid_map) and passed to the
extractor (engine/layer/unpack.py), which asks it instead of checking for root itself.

    real root           every owner as the layer says, device nodes made, modes kept
    user namespace with
      subordinate ranges owners chowned when both ids are mapped (0 -> the user, 1..65536 -> the
                         range); an id outside the mapping is chowned to 0 and the layer's owner
                         recorded; device nodes skipped (mknod is never allowed in a user namespace)
    single id            (0 <-> the user only, or a plain user outside any namespace) nothing is
                         chowned: every file is the user's (root in the container); owners other than
                         0:0 are recorded; setuid/setgid dropped from files; device nodes skipped

Recorded ownership is umoci's `user.rootlesscontainers` xattr (a protobuf Resource{uint32 uid = 1;
uint32 gid = 2;}, zero fields omitted), so umoci and our own tools can read the owners the kernel
could not hold. Nothing here ever fails an unpack: what could not be represented is counted in the
layer's stats and said once per layer in verbose mode.
"""

from __future__ import annotations

import os
import stat

ROOTLESS_XATTR = "user.rootlesscontainers"
NOOP_ID = 0xFFFFFFFF            # umoci's "no change" id


def read_id_map(path: str) -> list[tuple[int, int, int]]:
    """(inside, outside, count) lines of a /proc/<pid>/{uid,gid}_map; [] when unreadable."""
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    except (OSError, ValueError):
        return []
    return out


def initial_namespace() -> bool:
    """True in the initial user namespace (the whole 32-bit id space mapped onto itself)."""
    return read_id_map("/proc/self/uid_map") == [(0, 0, 4294967295)]


def _inside(ranges: list[tuple[int, int]], i: int) -> bool:
    return any(start <= i < start + n for start, n in ranges)


def encode_resource(uid: int, gid: int) -> bytes:
    """umoci's rootlesscontainers.Resource protobuf: field 1 uid, field 2 gid, varints, zeros omitted."""
    out = bytearray()
    for tag, v in ((0x08, uid), (0x10, gid)):
        if v:
            out.append(tag)
            while True:
                b = v & 0x7F
                v >>= 7
                out.append(b | (0x80 if v else 0))
                if not v:
                    break
    return bytes(out)


def decode_resource(data: bytes) -> tuple[int, int]:
    """(uid, gid) of a Resource (missing fields are 0); ValueError when malformed."""
    vals = {1: 0, 2: 0}
    i = 0
    while i < len(data):
        key = data[i]
        i += 1
        if key not in (0x08, 0x10):
            raise ValueError(f"unexpected protobuf key {key:#x}")
        v = shift = 0
        while True:
            if i >= len(data) or shift > 35:
                raise ValueError("truncated varint")
            b = data[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        vals[key >> 3] = v
    return vals[1], vals[2]


class OwnerPolicy:
    """One unpack's answers (see the module docstring); counts what it could not represent."""

    def __init__(self, *, chown: bool, uids: list[tuple[int, int]], gids: list[tuple[int, int]],
                 devices: bool, keep_special: bool, mode: str) -> None:
        self.chown = chown                  # may change owners at all
        self.uids, self.gids = uids, gids   # the ids a chown may name (inside ranges)
        self.devices = devices              # mknod of character/block devices permitted
        self.keep_special = keep_special    # setuid/setgid kept on files
        self.mode = mode                    # root | ranges | single (for notes and `info`)
        self.recorded = 0                   # owners recorded in ROOTLESS_XATTR
        self.special_dropped = 0            # setuid/setgid bits dropped

    @classmethod
    def current(cls) -> OwnerPolicy:
        """The policy of this process as it is now (in or out of a user namespace)."""
        if os.geteuid() != 0:
            return cls(chown=False, uids=[(0, 1)], gids=[(0, 1)], devices=False, keep_special=False,
                       mode="single")
        umap = read_id_map("/proc/self/uid_map")
        gmap = read_id_map("/proc/self/gid_map")
        if not umap or umap == [(0, 0, 4294967295)]:
            return cls(chown=True, uids=[(0, 1 << 32)], gids=[(0, 1 << 32)], devices=True, keep_special=True,
                       mode="root")
        uids = [(i, n) for i, _, n in umap]
        gids = [(i, n) for i, _, n in gmap]
        single = sum(n for _, n in uids) <= 1
        return cls(chown=not single, uids=uids, gids=gids, devices=False, keep_special=not single,
                   mode="single" if single else "ranges")

    def owner(self, uid: int, gid: int) -> tuple[tuple[int, int] | None, bytes | None]:
        """(ids to chown to or None, the ROOTLESS_XATTR value to record or None) for a layer's
        uid:gid."""
        if self.mode == "root":
            return (uid, gid), None
        ok_u, ok_g = _inside(self.uids, uid), _inside(self.gids, gid)
        if ok_u and ok_g:
            return ((uid, gid) if self.chown else None), None
        self.recorded += 1
        rec = encode_resource(uid if not ok_u else 0, gid if not ok_g else 0)
        if not self.chown:
            return None, rec
        return (uid if ok_u else 0, gid if ok_g else 0), rec

    def file_mode(self, mode: int, is_dir: bool) -> int:
        """The mode to set: setuid/setgid dropped from non-directories where they are not kept."""
        if self.keep_special or is_dir or not mode & (stat.S_ISUID | stat.S_ISGID):
            return mode
        self.special_dropped += 1
        return mode & ~(stat.S_ISUID | stat.S_ISGID)

    def summary(self) -> str | None:
        """One line of what this unpack could not represent, or None."""
        parts = []
        if self.recorded:
            parts.append(f"{self.recorded} owner(s) outside the id mapping recorded in {ROOTLESS_XATTR} "
                         f"(shown as root in containers)")
        if self.special_dropped:
            parts.append(f"setuid/setgid dropped from {self.special_dropped} file(s)")
        if not parts:
            return None
        return f"{self.mode} id mode: " + "; ".join(parts)
