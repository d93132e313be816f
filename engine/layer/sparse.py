"""GNU sparse tar members: their maps read, their data written with the holes kept.

    sparse_map(header, records, src, size, name, limits) -> (regions, real size, data size, name) | None
    write_sparse(src, fd, regions, real_size, data_size)     the extractor (engine/layer/unpack.py)
    hash_sparse(src, regions, real_size, data_size) -> sha256 hex   fsck --deep's replay (verify.py)

The four formats GNU tar writes (and Go's archive/tar reads): the old GNU 'S' type (a map in
the header, continued in extension blocks), PAX 0.0 (GNU.sparse.offset/numbytes pairs, joined by
engine/layer/tar.py into GNU.sparse.map as Go does), PAX 0.1 (GNU.sparse.map) and PAX 1.0 (the
map at the start of the data, in decimal lines padded to a block). A region is (offset, length)
of the real file; what is between regions is a hole. Maps are checked as Go checks them (ascending,
non-overlapping, inside the real size, their lengths adding up to the data) and bounded by Limits:
a bad one is a LayerError naming the entry.
"""

from __future__ import annotations

import hashlib
import os

from container.engine.errors import LayerError
from container.engine.layer.tar import Limits, Source, parse_number, show_name

Regions = tuple[tuple[int, int], ...]
_BLOCK = 512
_ZEROS = bytes(1 << 20)


def sparse_map(h: bytes, rec: dict[bytes, bytes], src: Source, size: int, name: bytes,
               limits: Limits) -> tuple[Regions, int, int, bytes] | None:
    """For a sparse member: (regions, real size, data bytes left in src, real name); None otherwise.
    `h` is the member's header block, `rec` its PAX records, `size` the header's data size."""
    if h[156:157] == b"S":
        regions, real = _old_gnu(h, src, name, limits)
        return _checked(regions, real, size, name), real, size, name
    major, minor = rec.get(b"GNU.sparse.major"), rec.get(b"GNU.sparse.minor")
    if major == b"1" and minor == b"0":
        v1 = True
    elif major == b"0" and minor in (b"0", b"1"):
        v1 = False
    elif major is not None or minor is not None:
        raise LayerError(f"layer entry {show_name(name)}: unsupported GNU sparse format {major!r}.{minor!r}")
    elif b"GNU.sparse.map" in rec:
        v1 = False                       # 0.0 and 0.1 have no version records
    elif any(k.startswith(b"GNU.sparse.") for k in rec):
        raise LayerError(f"layer entry {show_name(name)}: GNU sparse records without a map")
    else:
        return None
    name = rec.get(b"GNU.sparse.name") or name
    real_b = rec.get(b"GNU.sparse.size") or rec.get(b"GNU.sparse.realsize")
    try:
        real = int(real_b) if real_b is not None else size
    except ValueError:
        raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse size") from None
    if v1:
        regions, used = _map_1x0(src, size, name, limits)
        size -= used
    else:
        regions = _map_0x1(rec, name, limits)
    return _checked(regions, real, size, name), real, size, name


def _pairs(nums: list[int], name: bytes) -> list[tuple[int, int]]:
    if len(nums) % 2:
        raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map (odd number of values)")
    return [(nums[i], nums[i + 1]) for i in range(0, len(nums), 2)]


def _old_gnu(h: bytes, src: Source, name: bytes, limits: Limits) -> tuple[list[tuple[int, int]], int]:
    """The old GNU format: 4 entries in the header (at 386), more in 512-byte extension blocks of
    21 entries; a set 'isextended' byte (482 in the header, 504 in a block) says another follows."""
    regions: list[tuple[int, int]] = []

    def entries(block: bytes, at: int, n: int) -> None:
        for i in range(n):
            e = block[at + 24 * i:at + 24 * (i + 1)]
            if e[:1] == b"\0":
                return
            regions.append((parse_number(e[:12], "sparse offset"), parse_number(e[12:], "sparse length")))

    entries(h, 386, 4)
    real = parse_number(h[483:495], "sparse real size")
    extended = h[482] != 0
    while extended:
        if len(regions) * 24 > limits.max_pax:
            raise LayerError(f"layer header too large: GNU sparse map of {show_name(name)} over {limits.max_pax} bytes")
        b = src.block()
        assert b is not None
        blk = bytes(b)
        entries(blk, 0, 21)
        extended = blk[504] != 0
    return regions, real


def _map_0x1(rec: dict[bytes, bytes], name: bytes, limits: Limits) -> list[tuple[int, int]]:
    raw = rec.get(b"GNU.sparse.map", b"")
    try:
        nums = [int(x) for x in raw.split(b",")] if raw else []
        blocks = rec.get(b"GNU.sparse.numblocks")
        n = int(blocks) if blocks is not None else len(nums) // 2
    except ValueError:
        raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map") from None
    if n * 2 != len(nums):
        raise LayerError(f"layer entry {show_name(name)}: GNU sparse map has {len(nums) // 2} regions, "
                         f"numblocks says {n}")
    return _pairs(nums, name)


def _map_1x0(src: Source, size: int, name: bytes, limits: Limits) -> tuple[list[tuple[int, int]], int]:
    """PAX 1.0: decimal lines (count, then offset/length pairs) at the start of the data, padded
    to a block; returns the regions and the bytes the map used."""
    buf = b""
    used = 0
    lines: list[bytes] = []
    want: int | None = None
    while want is None or len(lines) < 1 + 2 * want:
        if b"\n" not in buf:
            if used + _BLOCK > min(size, limits.max_pax):
                raise LayerError(f"layer entry {show_name(name)}: GNU sparse map too large or truncated")
            buf += src.read(_BLOCK)
            used += _BLOCK
            continue
        line, buf = buf.split(b"\n", 1)
        lines.append(line)
        if want is None:
            try:
                want = int(line)
            except ValueError:
                raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map") from None
            if want < 0:
                raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map")
    try:
        nums = [int(x) for x in lines[1:]]
    except ValueError:
        raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map") from None
    return _pairs(nums, name), used


def _checked(regions: list[tuple[int, int]], real: int, data: int, name: bytes) -> Regions:
    end = 0
    total = 0
    for off, n in regions:
        if off < 0 or n < 0 or off < end or off + n > real:
            raise LayerError(f"layer entry {show_name(name)}: bad GNU sparse map (regions overlap, go "
                             f"backwards or past the file's size)")
        end = off + n
        total += n
    if real < 0 or total != data:
        raise LayerError(f"layer entry {show_name(name)}: GNU sparse map covers {total} bytes, "
                         f"the member holds {data}")
    return tuple(r for r in regions if r[1])


def write_sparse(src: Source, fd: int, regions: Regions, real_size: int, data_size: int) -> None:
    """Write the regions at their offsets (the rest stays holes), then set the real size."""
    for off, n in regions:
        os.lseek(fd, off, os.SEEK_SET)
        src.copy(fd, n)
    src.skip_padding(data_size)
    os.ftruncate(fd, real_size)


def hash_sparse(src: Source, regions: Regions, real_size: int, data_size: int) -> str:
    """sha256 of the real file (holes read as zeros), consuming its data from src."""
    h = hashlib.sha256()
    pos = 0

    def zeros(n: int) -> None:
        while n:
            k = min(n, len(_ZEROS))
            h.update(_ZEROS[:k])
            n -= k

    for off, n in regions:
        zeros(off - pos)
        left = n
        while left:
            chunk = src.read(min(left, 1 << 20))
            h.update(chunk)
            left -= len(chunk)
        pos = off + n
    zeros(real_size - pos)
    src.skip_padding(data_size)
    return h.hexdigest()
