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

progress: any object; pull calls whichever of these methods it has (all optional):
    info(msg)                          verbose detail (auth, retries, rate limit)
    resolved(ref, digest)              the reference resolved to this digest
    layer(digest, size, status)        one line per layer: "Already exists" | "Waiting"
    advance(digest, nbytes)            bytes downloaded (or re-read from a partial), any thread
    layer_status(digest, status)       "Downloading" | "Extracting" | "Verifying" | "Pull complete"
    done(info, updated: bool)          at the end; updated = anything new (docker's Status line)
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import errno
import hashlib
import io
import ipaddress
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from container.cas import Digest, DigestMismatch, SizeMismatch
from container.cas.fsutil import publish_dir, remove_tree

from container.engine.image import reference as _reference
from container.engine.tunables import env_number
from container.engine.errors import (AuthError, ContainerError, LayerError, ManifestUnknown, PlatformMismatch, RegistryError, RegistryUnavailable,
                     StoreError, UnsupportedMediaType, VerificationError)
from container.engine.image.catalog import ImageInfo
from container.engine.image.identity import chain_id
from container.engine.image.manifest import (FOREIGN_TYPES, MAX_CONFIG, Descriptor, Index, Manifest, check_image_manifest,
                       parse_config, parse_manifest)

CHUNK = 1 << 20
WORKERS = max(1, min(6, env_number("CONTAINER_PULL_WORKERS", 4, int)))
MAX_RECONNECTS = env_number("CONTAINER_PULL_RECONNECTS", 8, int, minimum=0)
MAX_INDEX_DEPTH = 4


def _call(progress, name: str, *args) -> None:
    fn = getattr(progress, name, None) if progress is not None else None
    if fn is not None:
        fn(*args)


class _Cancelled(Exception):
    """Another layer failed or the user interrupted: stop this one."""


@dataclass
class _Job:
    desc: Descriptor
    diff_id: str
    tmp: Path | None = None
    ingest: object = None            # an entered Ingest, committed at the end
    stats: object = None
    from_blob: bool = False


class _BlobSource(io.RawIOBase):
    """The compressed bytes of one blob for the decompressor: first what a previous run left in
    ingest/<hex>/data, then the network (Range from there), every network byte also written to the
    Ingest. Reconnects with Range on resets/truncation; stops at the descriptor size."""

    def __init__(self, pull: "_Puller", job: _Job, ing):
        super().__init__()
        self.pull, self.job, self.ing = pull, job, ing
        self.total = job.desc.size
        self.pos = 0
        self.disk_end = ing.offset
        self.disk = open(ing.data_path, "rb") if ing.offset else None
        self.resp = None
        self.error: BaseException | None = None
        self.failures = 0
        self.net_bytes = 0
        if ing.offset:
            pull.info(f"{job.desc.digest[7:19]}: resuming at {ing.offset} of {self.total} bytes")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, n: int = -1) -> bytes:
        try:
            return self._read(CHUNK if n is None or n < 0 else n)
        except BaseException as e:
            self.error = e
            raise

    def _read(self, n: int) -> bytes:
        if self.pull.cancel.is_set():
            raise _Cancelled()
        if self.pos < self.disk_end:
            data = self.disk.read(min(n, self.disk_end - self.pos))
            if not data:
                raise StoreError(f"partial download of {self.job.desc.digest} shrank while reading it")
            self.pos += len(data)
            _call(self.pull.progress, "advance", self.job.desc.digest, len(data))
            return data
        if self.disk is not None:
            self.disk.close()
            self.disk = None
        if self.pos >= self.total:
            return b""
        import urllib3
        import requests

        while True:
            if self.pull.cancel.is_set():
                raise _Cancelled()
            if self.resp is None:
                if not self._open():
                    return b""
            try:
                data = self.resp.raw.read(min(n, CHUNK, self.total - self.pos), decode_content=False)
            except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as e:
                self._failed(f"{type(e).__name__}")
                continue
            if not data:
                self._failed("connection closed before the end of the blob")
                continue
            self.ing.write(data)
            self.pos += len(data)
            self.net_bytes += len(data)
            self.failures = 0
            _call(self.pull.progress, "advance", self.job.desc.digest, len(data))
            return data

    def _failed(self, why: str) -> None:
        self._close_resp()
        if self.pull.cancel.is_set():
            raise _Cancelled()
        self.failures += 1
        if self.failures > MAX_RECONNECTS:
            raise RegistryUnavailable(f"downloading {self.job.desc.digest[:19]}: {why} (gave up after "
                                      f"{MAX_RECONNECTS} attempts; run the pull again to resume)")
        self.pull.client.backoff(self.failures, None, f"blob {self.job.desc.digest[7:19]} at byte {self.pos}: {why}")

    def _open(self) -> bool:
        """A response positioned at self.pos. False when there is nothing left to read."""
        d = self.job.desc
        resp = None
        if d.urls and self.pull.foreign_allowed:
            resp = self.pull.open_foreign(d, self.pos)
        if resp is None:
            resp = self.pull.client.get_blob(self.pull.repo, d.digest, offset=self.pos)
        st = resp.status_code
        if st == 416:
            resp.close()
            if self.pos >= self.total:
                return False
            raise RegistryError(f"registry refused the range {self.pos}- of {d.digest[:19]}")
        if st == 206:
            cr = resp.headers.get("Content-Range", "")
            if not cr.startswith(f"bytes {self.pos}-"):
                resp.close()
                raise RegistryError(f"registry sent the wrong range ({cr!r}) for {d.digest[:19]}")
        elif st == 200 and self.pos:
            # Range ignored: skip what we already have (the hash already covers it).
            left = self.pos
            while left:
                chunk = resp.raw.read(min(CHUNK, left), decode_content=False)
                if not chunk:
                    resp.close()
                    raise RegistryUnavailable(f"blob {d.digest[:19]} ended early")
                left -= len(chunk)
        self.resp = resp
        return True

    def abort(self) -> None:
        """From another thread: wake a read blocked on the socket (Ctrl-C, another layer failed)."""
        resp = self.resp
        if resp is None:
            return
        import socket as _socket
        try:
            sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
            if sock is None:
                sock = resp.raw._fp.fp.raw._sock
            sock.shutdown(_socket.SHUT_RDWR)
        except Exception:
            pass

    def _close_resp(self) -> None:
        if self.resp is not None:
            try:
                self.resp.close()
            except Exception:
                pass
            self.resp = None

    def close(self) -> None:
        self._close_resp()
        if self.disk is not None:
            self.disk.close()
            self.disk = None
        super().close()


class _Counting(io.RawIOBase):
    """A stored blob read for unpacking, reporting progress."""

    def __init__(self, f, pull: "_Puller", digest: str):
        super().__init__()
        self.f, self.pull, self.digest = f, pull, digest
        self.error = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.pull.cancel.is_set():
            self.error = _Cancelled()
            raise self.error
        data = self.f.read(CHUNK if n is None or n < 0 else n)
        _call(self.pull.progress, "advance", self.digest, len(data))
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Hashing:
    """sha256 of everything read through it (the diff_id of the uncompressed tar)."""

    def __init__(self, stream):
        self.s = stream
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        data = self.s.read(n)
        self.h.update(data)
        self.n += len(data)
        return data

    def readinto(self, b) -> int:
        n = self.s.readinto(b)
        if n:
            self.h.update(memoryview(b)[:n])
            self.n += n
        return n

    def readable(self) -> bool:
        return True


def _syncfs(path: Path) -> None:
    """Flush the store's filesystem (sync first, then the DB transaction)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _is_private_host(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
                or ip.is_unspecified:
            return True
    return False


class _Puller:
    def __init__(self, store, ref: str, platform: str | None, progress, config):
        from container.engine.registry import config as _config
        from container.engine.image import platform as _platform

        self.store = store
        self.ref = _reference.parse(ref)
        self.explicit_platform = platform is not None
        self.want = _platform.parse(platform) if platform else _platform.host()
        self.progress = progress
        self.config = config if config is not None else _config.load()
        self.cancel = threading.Event()
        self._active: set = set()
        self._active_lock = threading.Lock()
        self.repo = self.ref.path
        self.client = None
        self.lease_id: str | None = None
        self.foreign_allowed = self.config.foreign_allowed(self.ref.domain)

    def info(self, msg: str) -> None:
        _call(self.progress, "info", msg)

    # -- manifests ----------------------------------------------------------------------------------
    def _manifest(self, digest: str | None, tag: str | None, media_type: str | None,
                  size: int | None = None) -> tuple[bytes, str | None, str]:
        """(raw, media type, digest): from the store when we have it, else GET (by digest when known)."""
        blobs = self.store.blobs
        if digest is not None:
            Digest.parse(digest)
            if blobs.has(Digest.parse(digest)):
                self.info(f"manifest {digest[:19]} already stored: no GET")
                return blobs.read(Digest.parse(digest)), media_type, digest
        raw, ctype, header = self.client.get_manifest(self.repo, digest or tag)
        got = str(Digest.of_bytes(raw))
        if digest is not None and got != digest:
            raise VerificationError(f"manifest digest mismatch for {self.ref.familiar}: expected {digest}, "
                                    f"got {got}")
        if header and header != got:
            if not Digest.is_valid(header):
                raise UnsupportedMediaType(f"registry sent an unsupported Docker-Content-Digest {header[:80]!r}")
            raise VerificationError(f"manifest digest mismatch for {self.ref.familiar}: the registry says "
                                    f"{header}, the content is {got}")
        if size is not None and len(raw) != size:
            raise VerificationError(f"manifest {got[:19]} has {len(raw)} bytes, its descriptor says {size}")
        return raw, ctype or media_type, got

    def _config_blob(self, d: Descriptor) -> bytes:
        blobs = self.store.blobs
        dg = Digest.parse(d.digest)
        if blobs.has(dg):
            return blobs.read(dg)
        if d.size > MAX_CONFIG:
            raise VerificationError(f"image config {d.digest[:19]} is too large ({d.size} bytes)")
        raw = None
        for attempt in range(1, 4):
            try:
                raw = self.client.get_blob_bytes(self.repo, d.digest, d.size)
                break
            except RegistryUnavailable:
                if attempt == 3:
                    raise
                self.client.backoff(attempt, None, "config download failed")
        got = Digest.of_bytes(raw)
        if got != dg or len(raw) != d.size:
            raise VerificationError(f"image config digest mismatch: expected {d.digest}, got {got} "
                                    f"({len(raw)} of {d.size} bytes)")
        return raw

    # -- foreign layers ---------------------------------------------------------------------------
    def open_foreign(self, d: Descriptor, offset: int):
        """Try the descriptor's urls: https only, no registry credentials, no private targets unless allowed."""
        import requests

        for url in d.urls:
            hops = 0
            while hops < 5:
                p = urlsplit(url)
                if p.scheme != "https":
                    self.info(f"foreign layer url {url!r} refused: https only")
                    break
                if _is_private_host(p.hostname or "") and not self.config.foreign_layers_allow_private:
                    self.info(f"foreign layer url {url!r} refused: private or loopback address")
                    break
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    r = requests.get(url, headers=headers, stream=True, allow_redirects=False, timeout=(15, 60))
                except requests.exceptions.RequestException as e:
                    self.info(f"foreign layer url {url!r}: {e}")
                    break
                if r.is_redirect and r.headers.get("Location"):
                    from urllib.parse import urljoin
                    url = urljoin(url, r.headers["Location"])
                    r.close()
                    hops += 1
                    continue
                if r.status_code in (200, 206):
                    return r
                r.close()
                break
        return None

    # -- layers -------------------------------------------------------------------------------------
    def _run_job(self, job: _Job) -> _Job:
        from container.engine.layer.compression import open_layer_stream
        from container.engine.layer.unpack import unpack_layer

        d = job.desc
        dg = Digest.parse(d.digest)
        blobs = self.store.blobs
        final_tree = self.store.layer_path(job.diff_id)
        src = None
        try:
            if job.ingest is None and final_tree.is_dir():
                _call(self.progress, "layer_status", d.digest, "Already exists")
                return job
            want_tree = not final_tree.is_dir()
            if job.ingest is not None:
                src = _BlobSource(self, job, job.ingest)
                with self._active_lock:
                    self._active.add(src)
                _call(self.progress, "layer_status", d.digest, "Downloading")
            else:
                job.from_blob = True
                src = _Counting(blobs.open(dg), self, d.digest)
                _call(self.progress, "layer_status", d.digest, "Extracting")
            try:
                stream = _Hashing(open_layer_stream(src, d.media_type))
                if want_tree:
                    job.tmp = self.store.layers_dir / f".tmp-{dg.hex[:16]}-{secrets.token_hex(4)}"
                    job.tmp.mkdir()
                    job.stats = unpack_layer(stream, job.tmp)
                while stream.read(CHUNK):
                    pass
                while src.read(CHUNK):          # bytes after the compressed stream count for the blob digest
                    pass
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
                raise
            self._check_blob(job)
            got = "sha256:" + stream.h.hexdigest()
            if got != job.diff_id:
                raise VerificationError(f"layer {d.digest[:19]} does not match the image config: diff_id "
                                        f"{got[:19]}..., expected {job.diff_id[:19]}...")
            _call(self.progress, "layer_status", d.digest, "Pull complete")
            return job
        except BaseException:
            if job.tmp is not None:
                remove_tree(job.tmp)
                job.tmp = None
            if job.ingest is not None:
                job.ingest.__exit__(None, None, None)   # keeps a partial for resume (unless it was discarded)
                job.ingest = None
            raise
        finally:
            if src is not None:
                with self._active_lock:
                    self._active.discard(src)
                if isinstance(src, _Counting):
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

    def _resolve(self):
        ref = self.ref
        if ref.digest:
            top_digest, top_type = ref.digest, None
        else:
            try:
                head = self.client.head_manifest(self.repo, ref.tag)
                top_digest, top_type = head.digest, head.media_type or None
            except (AuthError, ManifestUnknown, RegistryUnavailable):
                raise
            except RegistryError as e:      # a registry that refuses HEAD (405, ...): GET by tag
                self.info(f"HEAD refused ({e}); resolving with GET")
                top_digest, top_type = None, None
            if top_digest is not None and not Digest.is_valid(top_digest):
                self.info(f"ignoring unsupported digest {top_digest[:80]!r} from HEAD")
                top_digest = None
        raw, mt, top_digest = self._manifest(top_digest, ref.tag, top_type)
        _call(self.progress, "resolved", str(ref), top_digest)
        blobs = {top_digest: (raw, mt)}
        node = parse_manifest(raw, mt)
        index_digest, manifest_digest, depth = None, top_digest, 0
        while isinstance(node, Index):
            from container.engine.image import platform as _platform

            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise UnsupportedMediaType("image index nesting is too deep")
            if index_digest is None:
                index_digest = manifest_digest
            desc = _platform.choose(node, self.want)
            self.info(f"platform {desc.platform} chosen for {self.want}: {desc.digest[:19]}")
            raw, mt, manifest_digest = self._manifest(desc.digest, None, desc.media_type, desc.size)
            blobs[manifest_digest] = (raw, mt)
            node = parse_manifest(raw, mt or desc.media_type)
        assert isinstance(node, Manifest)
        return top_digest, index_digest, manifest_digest, node, blobs

    def _run(self) -> ImageInfo:
        from container.schema import Blob, Image, ImageLayer, Layer, Tag, write_txn

        from container.engine.image import catalog as _images
        from container.engine import leases
        from container.engine.image import platform as _platform

        store = self.store
        top_digest, index_digest, manifest_digest, m, small = self._resolve()
        check_image_manifest(m)
        config_raw = self._config_blob(m.config)
        cfg = parse_config(config_raw)
        if len(cfg.diff_ids) != len(m.layers):
            raise VerificationError(f"image config has {len(cfg.diff_ids)} diff_ids but the manifest has "
                                    f"{len(m.layers)} layers")
        if _platform.rank(self.want, cfg.platform) is None:
            msg = (f"image with reference {self.ref.familiar} was found but does not match the specified "
                   f"platform: wanted {self.want}, actual: {_platform.normalize(cfg.platform)}")
            if self.explicit_platform:
                raise PlatformMismatch(msg)
            self.info("warning: " + msg)
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
                _call(self.progress, "layer", d.digest, d.size, "Already exists")
                continue
            if d.digest in jobs:
                if jobs[d.digest].diff_id != diff_id:
                    raise VerificationError(f"image config is inconsistent: layer {d.digest[:19]} appears twice "
                                            "with different diff_ids")
                continue
            jobs[d.digest] = _Job(d, diff_id)
            order.append(d.digest)
            _call(self.progress, "layer", d.digest, d.size, "Waiting")

        self.lease_id = leases.create_lease(store)
        try:
            with write_txn():
                for j in jobs.values():
                    leases.add_lease_item(store, self.lease_id, "ingest", j.desc.digest)
                    leases.add_lease_item(store, self.lease_id, "blob", j.desc.digest)
                    leases.add_lease_item(store, self.lease_id, "layer", j.diff_id)
                for dg in list(small) + [m.config.digest]:
                    leases.add_lease_item(store, self.lease_id, "blob", dg)
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
            t2 = time.monotonic()
            _syncfs(store.root)
            self.info(f"timing: layers {t1 - t0:.2f}s, publish {t2 - t1:.2f}s, sync {time.monotonic() - t2:.2f}s")

            created = _images.parse_created(cfg.created)
            updated = False
            with write_txn():
                def blob_row(dg, size, mt):
                    Blob.insert(digest=dg, size=size, media_type=mt or "").on_conflict_ignore().execute()
                for dg, (raw, mt) in small.items():
                    blob_row(dg, len(raw), mt)
                blob_row(m.config.digest, len(config_raw), m.config.media_type)
                for d, diff_id in zip(m.layers, cfg.diff_ids):
                    blob_row(d.digest, d.size, d.media_type)
                    j = jobs.get(d.digest)
                    st = j.stats if j is not None else None
                    Layer.insert(diff_id=diff_id, size=getattr(st, "size", 0) or 0,
                                 entries=getattr(st, "entries", 0) or 0).on_conflict_ignore().execute()
                    if st is not None:
                        Layer.update(size=st.size, entries=st.entries).where(
                            (Layer.diff_id == diff_id) & (Layer.entries == 0)).execute()
                img = Image.get_or_none(Image.id == manifest_digest)
                if img is None:
                    updated = True
                    img = Image.create(id=manifest_digest, manifest=manifest_digest, config=m.config.digest,
                                       index=index_digest, os=cfg.os, architecture=cfg.architecture,
                                       variant=cfg.variant, created=created,
                                       size=sum(d.size for d in m.layers), chain_id=chain_id(cfg.diff_ids))
                    rows = [{"image": img.id, "position": i, "blob": d.digest, "layer": diff_id,
                             "media_type": d.media_type}
                            for i, (d, diff_id) in enumerate(zip(m.layers, cfg.diff_ids))]
                    if rows:
                        ImageLayer.insert_many(rows).execute()
                    _images.add_image_refs(img, rows)
                ref = self.ref
                if ref.tag:
                    old = list(Tag.select().where((Tag.repository == ref.repository) & (Tag.tag == ref.tag)))
                    if not (len(old) == 1 and old[0].image_id == img.id and old[0].digest == top_digest):
                        updated = True
                        Tag.delete().where((Tag.repository == ref.repository) & (Tag.tag == ref.tag)).execute()
                        Tag.create(repository=ref.repository, tag=ref.tag, digest=top_digest, image=img.id)
                if ref.digest or not ref.tag:
                    if not Tag.select().where((Tag.repository == ref.repository) & Tag.tag.is_null()
                                              & (Tag.digest == top_digest)).exists():
                        Tag.create(repository=ref.repository, tag=None, digest=top_digest, image=img.id)
                leases.release_lease(store, self.lease_id)
                self.lease_id = None
            info = _images._info(store, Image.get(Image.id == manifest_digest))
            if existing is None:
                updated = True
            _call(self.progress, "done", info, updated)
            return info
        finally:
            self._release_ingests(jobs)
            if self.lease_id is not None:
                self._drop_lease_if_nothing_to_resume(jobs)

    def _drop_lease_if_nothing_to_resume(self, jobs) -> None:
        from container.engine import leases

        partial = any((self.store.ingest_dir / Digest.parse(dg).hex / "data").exists() for dg in jobs)
        if not partial:
            try:
                leases.release_lease(self.store, self.lease_id)
            except Exception:
                pass

    def _take_ingests(self, jobs: dict[str, _Job]) -> None:
        """Hold the per-blob ingest locks of every blob we will download, taken in digest order.

        They are held until the end of the pull (blobs are committed only when every layer verified),
        so taking them in one global order is what keeps two pulls sharing blobs from deadlocking.
        A second puller of the same blob waits here, then finds it published (ing.done)."""
        blobs = self.store.blobs
        try:
            for dg in sorted(jobs):
                job = jobs[dg]
                d = Digest.parse(dg)
                if blobs.has(d):
                    continue
                ing = blobs.ingest(d, size=job.desc.size)
                ing.__enter__()
                if ing.done:            # another process published it while we waited for its lock
                    ing.__exit__(None, None, None)
                else:
                    job.ingest = ing
        except BaseException:
            self._release_ingests(jobs)
            raise

    @staticmethod
    def _release_ingests(jobs) -> None:
        for j in jobs.values():
            if j.ingest is not None:
                try:
                    j.ingest.__exit__(None, None, None)
                finally:
                    j.ingest = None

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
                    elif first_error is None or (isinstance(first_error, _Cancelled) and
                                                 not isinstance(e, _Cancelled)):
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
                if j.ingest is not None:
                    j.ingest.__exit__(None, None, None)   # complete + verified: stays resumable in ingest/
                    j.ingest = None
            raise first_error
        return done


def pull(store, ref: str, *, platform: str | None = None, progress=None, config=None) -> ImageInfo:
    """Pull `ref` into `store` (see the module docstring). Takes the store lock shared."""
    p = _Puller(store, ref, platform, progress, config)
    store.ensure()
    store.db()
    try:
        with store.lock(exclusive=False):
            return p.run()
    except _Cancelled:
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
