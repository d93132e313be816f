"""One layer blob's bytes -> (unpacked tree, diff_id): the path pull and load share.

    stats, diff_id = unpack_blob(src, media_type, dest)    # dest None: only hash (the tree exists)
    stats, diff_id = unpack_blob(src, media_type, dest, store.objects_dir)   # files shared as written

The tree's entries are recorded for the contents index (engine/layer/index.py: stats.index).
`src` yields the blob's bytes as stored (compressed or not); everything after the end of the
compressed stream is read too, so a caller hashing `src` sees the whole blob. Raises LayerError
(corrupt data), UnsupportedMediaType; the caller compares diff_id with the image config.

Two cores for one layer: a producer thread reads `src` (download, the blob's sha256, the ingest
write), inflates it and hashes the tar (the diff_id) -- all of it GIL-free in hashlib, zlib/isal
and zstandard -- and hands 1 MiB chunks through a bounded queue to the caller's thread, which
parses the tar and makes the files. An error on either side stops both; the producer has ended
(joined) before unpack_blob returns or raises, so the caller may read `src` again afterwards.
"""

from __future__ import annotations

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from container.engine.layer.unpack import LayerStats

CHUNK = 1 << 20
DEPTH = 8                    # chunks in flight between the threads (8 MiB)


class _Pipe:
    """The inflating half on its own thread; read() gives its chunks in order, then b"" (or
    raises what the producer raised, where the sequential read would have)."""

    def __init__(self, stream: Any, src: Any):
        import queue
        import threading

        self._q: queue.Queue[Any] = queue.Queue(maxsize=DEPTH)
        self._empty = queue.Empty
        self._stop = False
        self._end = False
        self._rest = b""
        self._t = threading.Thread(target=self._produce, args=(stream, src), name="layer-inflate", daemon=True)
        self._t.start()

    def _produce(self, stream: Any, src: Any) -> None:
        try:
            while not self._stop:
                b = stream.read(CHUNK)
                if not b:
                    break
                self._q.put(b)
            while not self._stop and src.read(CHUNK):   # the bytes after the compressed stream
                pass
            self._q.put(b"")
        except BaseException as e:
            self._q.put(e)

    def read(self, n: int = -1) -> bytes:
        if not self._rest:
            if self._end:
                return b""
            item = self._q.get()
            if isinstance(item, BaseException):
                self._end = True
                raise item
            if not item:
                self._end = True
                return b""
            self._rest = item
        out = self._rest
        if 0 <= n < len(out):                # (tar.Source asks for CHUNK: whole chunks, no copies)
            out, self._rest = out[:n], out[n:]
        else:
            self._rest = b""
        return out

    def drain(self) -> None:
        """Read to the end (the rest of the tar after its end marker, and the blob's tail)."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        """Stop the producer (it may be blocked on a full queue) and wait until it has ended."""
        self._stop = True
        while self._t.is_alive():
            try:
                self._q.get(timeout=0.05)
            except self._empty:
                pass
        self._t.join()


def unpack_blob(src: Any, media_type: str, dest: str | Path | None,
                objects_dir: str | Path | None = None) -> tuple[LayerStats | None, str]:
    """Decompress `src` per `media_type`, unpack into the existing empty `dest` (unless None),
    read to the end; (the unpack stats or None, the uncompressed stream's sha256:<hex>). With
    `objects_dir` (and the index and dedupe on), the tree's files are shared with the store's
    objects as they are written (engine/layer/dedupe.py): stats.dedupe says what that did; the
    caller records it with dedupe.record() once the tree is verified."""
    from container.engine.layer import index
    from container.engine.layer.compression import HashingReader, open_layer_stream
    from container.engine.layer.unpack import unpack_layer

    stream = HashingReader(open_layer_stream(src, media_type))
    if dest is None:
        while stream.read(CHUNK):
            pass
        while src.read(CHUNK):          # bytes after the compressed stream count for the blob digest
            pass
        return None, stream.diff_id()
    rec = index.EntryRecorder() if index.enabled() else None
    from container.engine.layer import dedupe

    sharer = None
    if rec is not None and objects_dir is not None:
        from container.engine.locate import dedupe_enabled

        if dedupe_enabled():
            try:
                sharer = dedupe.Sharer(objects_dir)
            except OSError:
                sharer = None           # (no objects dir: the tree is not shared, the pull goes on)
    pipe = _Pipe(stream, src)
    try:
        stats = unpack_layer(pipe, dest, recorder=rec, sharer=sharer)
        pipe.drain()
        if rec is not None:
            rec.finish(dest)                      # (the sparse files' hashes read back from the tree)
            stats.index = rec
        if sharer is not None:
            stats.dedupe = sharer.res
    except BaseException:
        if sharer is not None:          # (the caller removes the tree: its files' new objects go now)
            dedupe.forget_new(objects_dir, sharer.res, links=2)
        raise
    finally:
        pipe.close()
        if sharer is not None:
            sharer.close()
    return stats, stream.diff_id()
