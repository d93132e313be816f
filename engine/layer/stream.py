"""One layer blob's bytes -> (unpacked tree, diff_id): the path pull and load share.

    stats, diff_id = unpack_blob(src, media_type, dest)    # dest None: only hash (the tree exists)

The tree's entries are recorded for the contents index (engine/layer/index.py: stats.index).
`src` yields the blob's bytes as stored (compressed or not); everything after the end of the
compressed stream is read too, so a caller hashing `src` sees the whole blob. Raises LayerError
(corrupt data), UnsupportedMediaType; the caller compares diff_id with the image config.
"""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

    from container.engine.layer.unpack import LayerStats

CHUNK = 1 << 20


def unpack_blob(src: Any, media_type: str, dest: Path | None) -> tuple[LayerStats | None, str]:
    """Decompress `src` per `media_type`, unpack into the existing empty `dest` (unless None),
    read to the end; (the unpack stats or None, the uncompressed stream's sha256:<hex>)."""
    from container.engine.layer import index
    from container.engine.layer.compression import HashingReader, open_layer_stream
    from container.engine.layer.unpack import unpack_layer

    stream = HashingReader(open_layer_stream(src, media_type))
    stats = None
    if dest is not None:
        rec = index.EntryRecorder() if index.enabled() else None
        try:
            stats = unpack_layer(stream, dest, recorder=rec)
            if rec is not None:
                rec.finish()
                stats.index = rec
        finally:
            if rec is not None:
                rec.close()
    while stream.read(CHUNK):
        pass
    while src.read(CHUNK):          # bytes after the compressed stream count for the blob digest
        pass
    return stats, stream.diff_id()
