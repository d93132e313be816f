r"""pull(store, ref): reference -> manifest (HEAD first) -> platform -> config -> layers -> one DB txn.

Each missing layer is streamed once, in a worker thread (bounded pool):

    registry bytes --> Ingest (sha256 of the blob, resumable file under ingest/<hex>/)
                   \-> open_layer_stream (gzip/zstd/tar) -> sha256 (diff_id) -> unpack_layer
                                                              into layers/.tmp-<hex>-<rand>/

A resumed download first re-feeds the partial bytes from disk into the decompress/unpack
pipeline, then continues from the network with Range. Nothing becomes visible until every
layer verified (blob digest and diff_id): then the trees are renamed into layers/<diffid>,
the blobs committed into blobs/, the filesystem synced, and one write_txn() records blobs,
layers, image, edges, refcounts and tag, and releases the pull's lease. A failure leaves the
store as it was, plus resumable partial downloads in ingest/ (protected by the lease until it
expires). Layers already present (tree + blob) are neither downloaded nor unpacked.

The reference is resolved to its manifest and config by registry/resolve.py; the bytes of a blob
come through registry/blobs.py (Range resume, reconnects, foreign layers); the image is recorded
by image/catalog.record_image. Progress goes to a PullListener (engine/progress.py): resolved,
layer, layer_status, advance (from the worker threads), info, warning, done.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from container.cas import Digest, DigestMismatch, SizeMismatch
from container.cas.fsutil import publish_dir, remove_tree, syncfs

from container.engine.errors import (ContainerError, LayerError, RegistryError, StoreError,
                                     UnsupportedMediaType, VerificationError)
from container.engine.image.catalog import ImageInfo
from container.engine.image.manifest import FOREIGN_TYPES, Descriptor, check_image_manifest, parse_config
from container.engine.image.reference import Reference
from container.engine.layer import dedupe
from container.engine.progress import NULL, PullListener
from container.engine.registry.blobs import CHUNK, BlobSource, Cancelled, Counting
from container.engine.registry.resolve import Resolver
from container.engine.tunables import env_number

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any
    from container.cas.blobs import Ingest
    from container.engine.layer.snapshot import BackgroundMerge
    from container.engine.layer.unpack import LayerStats
    from container.engine.registry.client import RegistryClient

WORKERS = max(1, min(6, env_number("CONTAINER_PULL_WORKERS", 4, int)))


def _check_base(diff_id: str, stats: LayerStats | None, tree: Path) -> None:
    from container.engine.layer.unpack import check_base_layer

    check_base_layer(diff_id, stats, tree)


@dataclass
class _Job:
    desc: Descriptor
    diff_id: str
    tmp: Path | None = None
    ingest: Ingest | None = None     # an entered Ingest, committed at the end
    host_lock: Any = None            # (a shared store: the entered cross-host lock on the blob)
    stats: LayerStats | None = None
    from_blob: bool = False
    base: bool = False               # the image's first layer


class _Puller:
    """One pull: its registry client, the layer jobs and worker threads, the lease, the cancel flag."""

    def __init__(self, store, ref: Reference, platform: str | None, listener: PullListener, config,
                 snapshot: bool | None = None):
        from container.engine.registry import config as _config
        from container.engine.image import platform as _platform

        self.store = store
        self.ref = ref
        self.explicit_platform = platform is not None
        self.want = _platform.parse(platform) if platform else _platform.host()
        self.listener = listener
        self.config = config if config is not None else _config.load()
        self.cancel = threading.Event()
        self._active: set = set()
        self._active_lock = threading.Lock()
        self._big_layers = 0          # layers of this pull big enough for a process each (_download)
        self._largest = 0             # the largest layer's compressed size (its process keeps our priority)
        self.repo = self.ref.path
        self.client: RegistryClient | None = None
        self.lease_id: str | None = None
        self.foreign_allowed = self.config.foreign_allowed(self.ref.domain)
        self.info = listener.info
        self.snapshot = self.config.snapshot_on_pull if snapshot is None else snapshot

    # -- layers -------------------------------------------------------------------------------------
    def _run_job(self, job: _Job) -> _Job:
        from container.engine.layer.stream import unpack_blob
        from container.engine.layer.worker import unpack_in_worker, use_worker

        d = job.desc
        dg = Digest.parse(d.digest)
        blobs = self.store.blobs
        final_tree = self.store.layer_path(job.diff_id)
        src: BlobSource | Counting | None = None
        try:
            if job.ingest is None and final_tree.is_dir():
                if job.base:
                    _check_base(job.diff_id, None, final_tree)
                self.listener.layer_status(d.digest, "Already exists")
                return job
            want_tree = not final_tree.is_dir()
            if job.ingest is not None:
                src = BlobSource(self.client, self.repo, d, job.ingest, cancel=self.cancel, listener=self.listener,
                                 foreign=self.foreign_allowed,
                                 foreign_private=self.config.foreign_layers_allow_private)
                with self._active_lock:
                    self._active.add(src)
                self.listener.layer_status(d.digest, "Downloading")
            else:
                job.from_blob = True
                src = Counting(blobs.open(dg), d.digest, cancel=self.cancel, listener=self.listener)
                self.listener.layer_status(d.digest, "Extracting")
            try:
                if want_tree:
                    job.tmp = self.store.layers_dir / f".tmp-{dg.hex[:16]}-{secrets.token_hex(4)}"
                    job.tmp.mkdir()
                if job.tmp is not None and use_worker(d.size, self._big_layers):
                    job.stats, got = unpack_in_worker(src, d.media_type, job.tmp, self.store.objects_dir,
                                                      behind=d.size < self._largest)
                else:
                    job.stats, got = unpack_blob(src, d.media_type, job.tmp, self.store.objects_dir)
            except ContainerError as e:
                real = getattr(src, "error", None)
                if real is not None and real is not e:
                    raise real from None
                if isinstance(e, (LayerError, UnsupportedMediaType)) and job.ingest is not None:
                    # Corrupt data or a wrong blob? Finish the download: if the digest is wrong, say that.
                    try:
                        while src.read(CHUNK):
                            pass
                    except BaseException:
                        raise e from None
                    self._check_blob(job)
                if isinstance(e, LayerError):
                    raise LayerError(f"layer {d.digest[:19]}: {e}") from None   # which layer, short form
                raise
            self._check_blob(job)
            if got != job.diff_id:
                raise VerificationError(f"layer {d.digest[:19]} does not match the image config: diff_id "
                                        f"{got[:19]}..., expected {job.diff_id[:19]}...")
            if job.base:
                _check_base(job.diff_id, job.stats, final_tree)
            dedupe.record_tree(self.store, job.stats, got)
            self.listener.layer_status(d.digest, "Pull complete")
            return job
        except BaseException:
            if job.tmp is not None:
                remove_tree(job.tmp)
                job.tmp = None
                dedupe.forget_new(self.store.objects_dir, getattr(job.stats, "dedupe", None))
            if job.ingest is not None:
                job.ingest.__exit__(None, None, None)   # keeps a partial for resume (unless it was discarded)
                job.ingest = None
            raise
        finally:
            if src is not None:
                with self._active_lock:
                    self._active.discard(src)
                if isinstance(src, Counting):
                    src.f.close()
                src.close()

    def _check_blob(self, job: _Job) -> None:
        ing = job.ingest
        if ing is None:
            return
        got = Digest.from_hasher(ing.hasher)
        if ing.offset != job.desc.size or got != Digest.parse(job.desc.digest):
            try:
                ing.commit()        # raises, and removes the bad partial
            except (DigestMismatch, SizeMismatch):
                pass
            raise VerificationError(f"failed to verify layer {job.desc.digest}: digest mismatch "
                                    f"(got {got} from {ing.offset} of {job.desc.size} bytes)")

    # -- the whole pull -----------------------------------------------------------------------------
    def run(self) -> ImageInfo:
        from container.engine.registry.client import RegistryClient

        self.client = RegistryClient(self.ref.domain, config=self.config, log=self.info)
        try:
            return self._run()
        finally:
            self.client.close()

    def _run(self) -> ImageInfo:
        from container.schema import Image, write_txn

        from container.engine.image import catalog as _images
        from container.engine import leases
        from container.engine.image import platform as _platform

        store = self.store
        resolver = Resolver(self.client, store.blobs, self.ref, self.listener)
        r = resolver.resolve(self.want)
        top_digest, index_digest, manifest_digest, m, small = (r.top_digest, r.index_digest, r.manifest_digest,
                                                               r.manifest, r.manifests)
        check_image_manifest(m)
        if store.shared:          # one host downloads the config, the others wait and read it
            with store.host_lock(f"blob {m.config.digest}"):
                config_raw = resolver.config(m.config)
                store.blobs.put_bytes(config_raw, Digest.parse(m.config.digest))   # (again at the end)
        else:
            config_raw = resolver.config(m.config)
        cfg = parse_config(config_raw)
        if len(cfg.diff_ids) != len(m.layers):
            raise VerificationError(f"image config has {len(cfg.diff_ids)} diff_ids but the manifest has "
                                    f"{len(m.layers)} layers")
        if not cfg.os or not cfg.architecture:
            # docker, skopeo and umoci take it; from an index the entry's platform matched already
            if index_digest is None:
                self.listener.warning(f"the image config of {self.ref.familiar} has no os/architecture; "
                                      f"assuming it is {self.want}")
        elif _platform.rank(self.want, cfg.platform) is None:
            have = _platform.normalize(cfg.platform)
            if self.explicit_platform:
                raise _platform.other_platform(self.ref.familiar, self.want, have)
            # docker's words: the pull goes on, and a later "exec format error" is no surprise
            self.listener.warning(f"The requested image's platform ({have}) does not match the detected host "
                                  f"platform ({self.want}) and no specific platform was requested")
        for d in m.layers:
            if d.media_type in FOREIGN_TYPES and not self.foreign_allowed and d.urls:
                self.info(f"foreign layer {d.digest[:19]}: urls not allowed by the config, "
                          "trying the registry")

        # What is missing?
        existing = Image.get_or_none(Image.id == manifest_digest)
        jobs: dict[str, _Job] = {}
        order = []
        for d, diff_id in zip(m.layers, cfg.diff_ids):
            Digest.parse(d.digest)
            have = store.blobs.has(Digest.parse(d.digest)) and store.layer_path(diff_id).is_dir()
            if have:
                if d is m.layers[0]:
                    _check_base(diff_id, None, store.layer_path(diff_id))
                self.listener.layer(d.digest, d.size, "Already exists")
                continue
            if d.digest in jobs:
                if jobs[d.digest].diff_id != diff_id:
                    raise VerificationError(f"image config is inconsistent: layer {d.digest[:19]} appears twice "
                                            "with different diff_ids")
                continue
            jobs[d.digest] = _Job(d, diff_id, base=d is m.layers[0])
            order.append(d.digest)
            self.listener.layer(d.digest, d.size, "Waiting")

        self.lease_id = leases.create_lease(store)
        merge: BackgroundMerge | None = None
        try:
            with write_txn():
                for j in jobs.values():
                    leases.add_lease_item(store, self.lease_id, "ingest", j.desc.digest)
                    leases.add_lease_item(store, self.lease_id, "blob", j.desc.digest)
                    leases.add_lease_item(store, self.lease_id, "layer", j.diff_id)
                for dg in list(small) + [m.config.digest]:
                    leases.add_lease_item(store, self.lease_id, "blob", dg)
            merge = self._early_merge(m.layers, list(cfg.diff_ids), jobs)
            t0 = time.monotonic()
            self._take_ingests(jobs)
            done = self._download(jobs, order)
            t1 = time.monotonic()
            # Publish: trees first (a waiting puller then finds the tree when it finds the blob).
            for j in done:
                if j.tmp is not None:
                    publish_dir(j.tmp, store.layer_path(j.diff_id))
                    j.tmp = None
            for j in done:
                if j.ingest is not None:
                    j.ingest.commit()
                    j.ingest.__exit__(None, None, None)
                    j.ingest = None
            for dg, (raw, _mt) in small.items():
                store.blobs.put_bytes(raw, Digest.parse(dg))
            store.blobs.put_bytes(config_raw, Digest.parse(m.config.digest))
            # the trees are in place: merge the snapshot on a thread while the store syncs and the
            # image is recorded (syncfs and sqlite leave the GIL; so do most of the merge's
            # syscalls); the merge in a process when the record inserts many index rows (on one
            # interpreter the merge and the insert handed the GIL back and forth for every row)
            from container.engine.layer.worker import merge_in_process

            rows = sum(j.stats.entries for j in jobs.values() if j.stats is not None and j.stats.index is not None)
            if merge is not None:
                merge.go(process=merge_in_process(rows))
            elif self.snapshot and cfg.diff_ids:
                from container.engine.layer.snapshot import BackgroundMerge

                merge = BackgroundMerge(store, list(cfg.diff_ids), process=merge_in_process(rows))
            t2 = time.monotonic()
            syncfs(store.root)
            self.info(f"timing: layers {t1 - t0:.2f}s, publish {t2 - t1:.2f}s, sync {time.monotonic() - t2:.2f}s")

            with write_txn():
                stats = {dg: j.stats for dg, j in jobs.items() if j.stats is not None}
                updated = _images.record_image(self.ref, top_digest, index_digest, manifest_digest, m, cfg,
                                               len(config_raw), small, stats, store.blobs)
                leases.release_lease(store, self.lease_id)
                self.lease_id = None
            if merge is not None:
                built, merge = merge, None          # (past the point where a failure discards it)
                self._build_snapshot(built)
            info = _images.image_info(store, Image.get(Image.id == manifest_digest))
            if existing is None:
                updated = True
            self.listener.done(info, updated)
            return info
        except BaseException:
            if merge is not None:
                merge.discard()
            raise
        finally:
            self._release_ingests(jobs)
            if self.lease_id is not None:
                self._drop_lease_if_nothing_to_resume(jobs)

    def _early_merge(self, layers, diff_ids: list[str], jobs: dict[str, _Job]) -> BackgroundMerge | None:
        """The snapshot merge of the layers below the first one this pull downloads, started now
        (they are in the store, and the store lock keeps them there), when there are such layers."""
        from container.engine.layer.worker import merge_in_process
        from container.schema import Layer

        first = next((i for i, d in enumerate(layers) if d.digest in jobs), len(layers))
        if not self.snapshot or first == 0 or first == len(layers):
            return None
        below = diff_ids[:first]
        entries = sum(r.entries for r in Layer.select(Layer.entries).where(Layer.diff_id.in_(below)))
        process = merge_in_process(entries)
        self.info(f"snapshot: merging the {first} stored layer{'s' if first > 1 else ''} below the first "
                  f"download now{' (in a process)' if process else ''}")
        from container.engine.layer.snapshot import BackgroundMerge

        return BackgroundMerge(self.store, diff_ids, first=first, early_process=process)

    def _build_snapshot(self, merge: BackgroundMerge) -> None:
        """Ready to run: the image's merged tree (snapshots/<chain id>), built as the pull's last
        step (under the same shared store lock), so its first `run` costs what every later one
        does. The image is recorded already: a failure here is a warning, and `run` builds it."""
        from container.engine.layer.snapshot import ensure_snapshot

        t0 = time.monotonic()
        try:
            ensure_snapshot(self.store, merge.diff_ids, built=merge.result())
        except (ContainerError, OSError) as e:
            self.listener.warning(f"the image is pulled, but its root filesystem could not be built "
                                  f"(the first run will try again): {e}")
            return
        self.info(f"timing: snapshot {time.monotonic() - t0:.2f}s")

    def _drop_lease_if_nothing_to_resume(self, jobs) -> None:
        from container.engine import leases

        partial = any((self.store.ingest_dir / Digest.parse(dg).hex / "data").exists() for dg in jobs)
        if not partial and self.lease_id is not None:      # (the caller checked it too)
            try:
                leases.release_lease(self.store, self.lease_id)
            except Exception:
                pass

    def _take_ingests(self, jobs: dict[str, _Job]) -> None:
        """Hold the per-blob ingest locks of every blob we will download, taken in digest order.

        They are held until the end of the pull (blobs are committed only when every layer verified),
        so taking them in one global order is what keeps two pulls sharing blobs from deadlocking.
        A second puller of the same blob waits here, then finds it published (ing.done). On a shared
        store another host's puller waits too, on the blob's cross-host lock (store.host_lock): a
        flock on a shared filesystem may not reach the other host."""
        blobs = self.store.blobs
        try:
            for dg in sorted(jobs):
                job = jobs[dg]
                d = Digest.parse(dg)
                if blobs.has(d):
                    continue
                if self.store.shared:
                    job.host_lock = self.store.host_lock(f"blob {dg}")
                    job.host_lock.__enter__()
                    if blobs.has(d):        # the other host published it while we waited
                        self._release_ingests({dg: job})
                        continue
                ing = blobs.ingest(d, size=job.desc.size)
                ing.__enter__()
                if ing.done:            # another process published it while we waited for its lock
                    ing.__exit__(None, None, None)
                    self._release_ingests({dg: job})
                else:
                    job.ingest = ing
        except BaseException:
            self._release_ingests(jobs)
            raise

    @staticmethod
    def _release_ingests(jobs) -> None:
        for j in jobs.values():
            try:
                if j.ingest is not None:
                    try:
                        j.ingest.__exit__(None, None, None)
                    finally:
                        j.ingest = None
            finally:
                if j.host_lock is not None:
                    lock, j.host_lock = j.host_lock, None
                    lock.__exit__(None, None, None)

    def _abort_all(self) -> None:
        self.cancel.set()
        with self._active_lock:
            active = list(self._active)
        for src in active:
            src.abort()

    def _download(self, jobs: dict[str, _Job], order: list[str]) -> list[_Job]:
        if not jobs:
            return []
        done: list[_Job] = []
        first_error: BaseException | None = None
        from container.engine.layer.worker import big_layers

        self._big_layers = big_layers(j.desc.size for j in jobs.values())   # (a process each: layer/worker.py)
        self._largest = max(j.desc.size for j in jobs.values())
        pool = cf.ThreadPoolExecutor(max_workers=min(WORKERS, len(jobs)), thread_name_prefix="layer")
        futs = {pool.submit(self._run_job, jobs[dg]): dg for dg in order}
        try:
            pending = set(futs)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_EXCEPTION)
                for f in finished:
                    e = f.exception()
                    if e is None:
                        done.append(f.result())
                    elif first_error is None or (isinstance(first_error, Cancelled) and
                                                 not isinstance(e, Cancelled)):
                        first_error = e
                        self._abort_all()
        except BaseException as e:          # KeyboardInterrupt in the main thread
            self._abort_all()
            first_error = e
            for f in futs:
                f.cancel()
            cf.wait(futs)
            for f in futs:
                if f.done() and not f.cancelled() and f.exception() is None and f.result() not in done:
                    done.append(f.result())
        finally:
            pool.shutdown(wait=True)
        if first_error is not None:
            for j in done:
                if j.tmp is not None:
                    remove_tree(j.tmp)
                    j.tmp = None
                    dedupe.forget_new(self.store.objects_dir, getattr(j.stats, "dedupe", None))
                if j.ingest is not None:
                    j.ingest.__exit__(None, None, None)   # complete + verified: stays resumable in ingest/
                    j.ingest = None
            raise first_error
        return done


def pull(store, ref: Reference, *, platform: str | None = None, listener: PullListener | None = None,
         config=None, snapshot: bool | None = None) -> ImageInfo:
    """Pull `ref` (parsed: engine/image/reference.parse) into `store` (see the module docstring),
    reporting to `listener`. Takes the store lock shared. snapshot: build the image's merged tree
    at the end (default: the config's snapshot_on_pull, true unless set false)."""
    p = _Puller(store, ref, platform, listener if listener is not None else NULL, config, snapshot)
    store.ensure()
    store.db()
    try:
        with store.lock(exclusive=False):
            return p.run()
    except Cancelled:
        raise RegistryError("pull cancelled") from None
    except (DigestMismatch, SizeMismatch) as e:
        raise VerificationError(str(e)) from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StoreError(f"no space left on device under {store.root}: pull aborted "
                             "(partial downloads are kept in ingest/ for a resume)") from None
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise StoreError(f"cannot write to the store {store.root}: {e.strerror}") from None
        raise StoreError(f"store I/O error: {e}") from None
