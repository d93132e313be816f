"""load(store, path): the images of an archive into the store, every digest verified.

Accepted (engine/transfer/archive.open_source: a tar file or a directory):
  - an OCI image layout (oci-layout + index.json + blobs/): oci-dir, oci-archive, skopeo's oci:,
    and docker 25+'s docker-archive (which carries one). The layout wins over manifest.json when
    both are there: its manifests are the registry's bytes, so the digests survive a round trip.
  - an old docker-archive (manifest.json + <id>.json + <id>/layer.tar, docker < 25, podman save,
    skopeo docker-archive:). There is no manifest in it: one is built, a Docker schema 2 manifest
    (the config is docker's) whose layers are the archive's files stored as they are, with media
    type application/vnd.docker.image.rootfs.diff.tar (uncompressed; the blob digest is the
    diff_id) or the gzip/zstd type when the file is compressed. Nothing is recompressed, so
    loading the same archive twice gives the same image.

Per image: manifest and config verified against their digests, then each missing layer streamed
once from the archive into a CAS Ingest (sha256 checked) and through engine/layer/stream (the
unpack pull uses; diff_id checked against the config). A blob or tree already in the store is
neither written nor unpacked again. Nothing is visible until every image verified: then trees are
published, ingests committed, and one write_txn() records the images and tags. A failure leaves
the store as it was.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from container.cas import Digest, DigestMismatch, SizeMismatch
from container.engine.errors import ContainerError, VerificationError
from container.engine.layer import dedupe
from container.engine.image.manifest import (DOCKER_CONFIG, DOCKER_MANIFEST, INDEX_TYPES, MAX_CONFIG, MAX_MANIFEST,
                                             Manifest, check_image_manifest, parse_config, parse_manifest)
from container.engine.transfer.archive import (ArchiveError, DirSource, FileSource, TarSource, compressed, open_source,
                                               read_small, spool)

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

    from container.cas.blobs import Ingest
    from container.engine.image.manifest import ImageConfig
    from container.engine.image.reference import Reference

    Source = TarSource | DirSource | FileSource

CHUNK = 1 << 20
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class Loaded:
    """One loaded image: its id (config digest) and the names it was given ('busybox:latest')."""
    id: str
    names: tuple[str, ...]


@dataclass
class Image:
    """One image read from an archive (or built by import), verified, not yet stored."""
    manifest_digest: str
    manifest_raw: bytes
    manifest: Manifest
    config_raw: bytes
    config: ImageConfig
    layer_files: dict[str, str]         # layer digest -> member name
    refs: list[Reference] = field(default_factory=list)


def _blob_member(digest: str) -> str:
    d = Digest.parse(digest)
    return f"blobs/sha256/{d.hex}"


def _verified(src: Source, name: str, digest: str, limit: int) -> bytes:
    raw = read_small(src, name, limit)
    got = "sha256:" + hashlib.sha256(raw).hexdigest()
    if got != digest:
        raise VerificationError(f"archive blob {digest[:19]}...: digest mismatch (got {got[:19]}...)")
    return raw


def _refs_from(names: list[str]) -> list[Reference]:
    from container.engine.image.reference import parse

    out = []
    for n in names:
        try:
            out.append(parse(n))
        except ContainerError:
            raise ArchiveError(f"archive names the image {n!r}: invalid reference") from None
    return out


# -- reading the archive's images --------------------------------------------------------------------
def _oci_images(src: Source) -> list[Image]:
    raw = read_small(src, "index.json", MAX_MANIFEST)
    top = parse_manifest(raw, None, what="index.json")
    if isinstance(top, Manifest):
        raise ArchiveError("index.json is a manifest, not an index")
    out: list[Image] = []

    def walk(descs: Any, depth: int, name: str | None) -> None:
        from container.engine.image.platform import is_attestation

        for d in descs:
            if is_attestation(d):             # (buildx/BuildKit layouts: provenance, SBOM; pull skips them too)
                continue
            ref = d.annotation("io.containerd.image.name") or name
            rn = d.annotation("org.opencontainers.image.ref.name")
            if ref is None and rn and ("/" in rn or ":" in rn):
                ref = rn                       # skopeo oci-archive:x.tar:name:tag writes the full name
            if d.media_type in INDEX_TYPES:
                if depth >= MAX_INDEX_DEPTH:
                    raise ArchiveError("index.json: indexes nested too deeply")
                child = parse_manifest(_verified(src, _blob_member(d.digest), d.digest, MAX_MANIFEST),
                                       d.media_type, what=f"index {d.digest[:19]}")
                if isinstance(child, Manifest):
                    raise ArchiveError(f"index {d.digest[:19]} is a manifest")
                present = [c for c in child.manifests if src.has(_blob_member(c.digest))] or list(child.manifests)
                walk(_host_entries(child, present), depth + 1, ref)
                continue
            img = next((i for i in out if i.manifest_digest == d.digest), None)
            if img is None:
                img = _read_image(src, d.digest, d.media_type)
                out.append(img)
            if ref:
                img.refs.extend(r for r in _refs_from([ref]) if r not in img.refs)

    walk(top.manifests, 0, None)
    return out


def _host_entries(index: Any, present: list[Any]) -> list[Any]:
    """Of a multi-platform index, the entry to load: the host's, as pull (and podman load) take
    it; a layout holding no entry for the host loads what it holds."""
    import dataclasses

    from container.engine.image.platform import candidates, host

    found, _available = candidates(dataclasses.replace(index, manifests=tuple(present)), host())
    return found[:1] or present


def _read_image(src: Source, digest: str, media_type: str) -> Image:
    raw = _verified(src, _blob_member(digest), digest, MAX_MANIFEST)
    m = parse_manifest(raw, media_type or None, what=f"manifest {digest[:19]}")
    if not isinstance(m, Manifest):
        raise ArchiveError(f"manifest {digest[:19]} is an index")
    check_image_manifest(m)
    config_raw = _verified(src, _blob_member(m.config.digest), m.config.digest, MAX_CONFIG)
    cfg = parse_config(config_raw)
    if len(cfg.diff_ids) != len(m.layers):
        raise VerificationError(f"image config has {len(cfg.diff_ids)} diff_ids but the manifest has "
                                f"{len(m.layers)} layers")
    return Image(digest, raw, m, config_raw, cfg, {d.digest: _blob_member(d.digest) for d in m.layers})


def _docker_images(src: Source) -> list[Image]:
    try:
        items = json.loads(read_small(src, "manifest.json", MAX_MANIFEST))
    except ValueError as e:
        raise ArchiveError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(items, list) or not items:
        raise ArchiveError("manifest.json: expected a non-empty list of images")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list) \
                or not all(isinstance(x, str) for x in item["Layers"]):
            raise ArchiveError(f"manifest.json entry {n}: Config and Layers are required")
        config_raw = read_small(src, item["Config"], MAX_CONFIG)
        config_digest = "sha256:" + hashlib.sha256(config_raw).hexdigest()
        stem = item["Config"].rsplit("/", 1)[-1].removesuffix(".json")
        if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) and stem != config_digest[7:]:
            raise VerificationError(f"archive config {item['Config']}: digest mismatch (got {config_digest[:19]}...)")
        cfg = parse_config(config_raw)
        if len(cfg.diff_ids) != len(item["Layers"]):
            raise VerificationError(f"image config has {len(cfg.diff_ids)} diff_ids but manifest.json lists "
                                    f"{len(item['Layers'])} layers")
        layers, files = [], {}
        for name, diff_id in zip(item["Layers"], cfg.diff_ids):
            f, size = src.open(name)
            try:
                head = f.read(4)
                h = hashlib.sha256(head)
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            finally:
                f.close()
            digest = "sha256:" + h.hexdigest()
            mt = LAYER_GZIP if head[:2] == b"\x1f\x8b" else LAYER_ZSTD if head == b"\x28\xb5\x2f\xfd" else LAYER_TAR
            if mt == LAYER_TAR and digest != diff_id:
                raise VerificationError(f"archive layer {name}: digest {digest[:19]}... does not match the "
                                        f"image config's diff_id {diff_id[:19]}...")
            layers.append({"mediaType": mt, "size": size, "digest": digest})
            files[digest] = name
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "size": len(config_raw), "digest": config_digest},
                    "layers": layers}
        raw = json.dumps(manifest, indent=3).encode()
        m = parse_manifest(raw, DOCKER_MANIFEST)
        assert isinstance(m, Manifest)
        tags = item.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"manifest.json entry {n}: RepoTags must be a list of strings")
        out.append(Image("sha256:" + hashlib.sha256(raw).hexdigest(), raw, m, config_raw, cfg, files,
                          _refs_from(tags)))
    return out


def _docker_tags(src: Source) -> dict[str, list[str]]:
    """{config digest: RepoTags} from a docker 25 manifest.json next to its OCI layout."""
    try:
        items = json.loads(read_small(src, "manifest.json", MAX_MANIFEST))
    except (ValueError, ArchiveError):
        return {}
    out: dict[str, list[str]] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("Config"), str) and isinstance(item.get("RepoTags"), list):
            out["sha256:" + item["Config"].rsplit("/", 1)[-1]] = [t for t in item["RepoTags"] if isinstance(t, str)]
    return out


def read_images(src: Source) -> list[Image]:
    if src.has("index.json"):
        imgs = _oci_images(src)
        if src.has("manifest.json"):
            tags = _docker_tags(src)
            for img in imgs:
                for r in _refs_from(tags.get(img.manifest.config.digest, [])):
                    if r not in img.refs:
                        img.refs.append(r)
        return imgs
    if src.has("manifest.json"):
        return _docker_images(src)
    raise ArchiveError("not an image archive: neither index.json (OCI layout) nor manifest.json "
                       "(docker-archive) found")


# -- storing ------------------------------------------------------------------------------------------
class _Tee:
    """Reads an archive member, writing every byte into an Ingest (which hashes it)."""

    def __init__(self, f: Any, ing: Ingest | None):
        self.f, self.ing = f, ing

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data and self.ing is not None:
            self.ing.write(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.f.close()


@dataclass
class _Layer:
    digest: str
    diff_id: str
    media_type: str
    size: int
    member: str
    ingest: Ingest | None = None
    tmp: Path | None = None
    stats: Any = None


def _store_layer(store, src: Source, job: _Layer) -> None:
    from container.engine.layer.stream import unpack_blob

    d = Digest.parse(job.digest)
    want_tree = not store.layer_path(job.diff_id).is_dir()
    if store.blobs.has(d):
        f: Any = store.blobs.open(d)
    else:
        raw, size = src.open(job.member)
        if size != job.size:
            raw.close()
            raise VerificationError(f"archive layer {job.digest[:19]}...: {size} bytes, the manifest says {job.size}")
        job.ingest = ing = store.blobs.ingest(d, size=size)
        ing.__enter__()
        if ing.done:
            ing.__exit__(None, None, None)
            job.ingest = None
            raw.close()
            f = store.blobs.open(d)
        else:
            ing.reset()
            f = _Tee(raw, ing)
    try:
        if want_tree:
            job.tmp = store.layers_dir / f".tmp-{d.hex[:16]}-{secrets.token_hex(4)}"
            job.tmp.mkdir()
        try:
            job.stats, got = unpack_blob(f, job.media_type, job.tmp, store.objects_dir)
        except ContainerError:
            if job.ingest is not None:      # corrupt data, or the wrong blob? if the digest is wrong, say that
                while f.read(CHUNK):
                    pass
                _check_digest(job)
            raise
    finally:
        f.close()
    _check_digest(job)
    if got != job.diff_id:
        raise VerificationError(f"layer {job.digest[:19]} does not match the image config: diff_id "
                                f"{got[:19]}..., expected {job.diff_id[:19]}...")
    dedupe.record_tree(store, job.stats, got)


def _check_digest(job: _Layer) -> None:
    if job.ingest is not None:
        have = Digest.from_hasher(job.ingest.hasher)
        if have != Digest.parse(job.digest):
            raise VerificationError(f"archive layer {job.digest[:19]}...: digest mismatch (got {str(have)[:19]}...)")


def _cleanup(store, jobs: list[_Layer]) -> None:
    from container.cas.fsutil import remove_tree

    for j in jobs:
        if j.tmp is not None:
            remove_tree(j.tmp)
            j.tmp = None
            dedupe.forget_new(store.objects_dir, getattr(j.stats, "dedupe", None))
        if j.ingest is not None:
            try:
                j.ingest.abandon()
            finally:
                j.ingest.__exit__(None, None, None)
                j.ingest = None


def store_images(store, src: Source, imgs: list[Image], listener: Any = None) -> list[Loaded]:
    """Verify and store `imgs` read from `src` (see the module docstring); the caller holds the lock."""
    from container.cas.fsutil import publish_dir, syncfs
    from container.schema import write_txn

    from container.engine.image import catalog
    from container.engine.layer.unpack import check_base_layer

    jobs: dict[str, _Layer] = {}
    for img in imgs:
        for d, diff_id in zip(img.manifest.layers, img.config.diff_ids):
            if d.digest in jobs or (store.blobs.has(Digest.parse(d.digest)) and store.layer_path(diff_id).is_dir()):
                if listener is not None and d.digest not in jobs:
                    listener(f"{d.digest[7:19]}: Already exists")
                continue
            jobs[d.digest] = _Layer(d.digest, diff_id, d.media_type, d.size, img.layer_files[d.digest])
    order = sorted(jobs)            # ingest locks in digest order, as pull takes them
    try:
        for dg in order:
            _store_layer(store, src, jobs[dg])
            if listener is not None:
                listener(f"{dg[7:19]}: Loading layer done")
        for img in imgs:
            if img.manifest.layers:
                base = jobs.get(img.manifest.layers[0].digest)
                diff_id = img.config.diff_ids[0]
                check_base_layer(diff_id, base.stats if base is not None else None, store.layer_path(diff_id))
        for j in jobs.values():
            if j.tmp is not None:
                publish_dir(j.tmp, store.layer_path(j.diff_id))
                j.tmp = None
        for j in jobs.values():
            if j.ingest is not None:
                j.ingest.commit()
                j.ingest.__exit__(None, None, None)
                j.ingest = None
    except BaseException:
        _cleanup(store, list(jobs.values()))
        raise
    for img in imgs:
        store.blobs.put_bytes(img.manifest_raw, Digest.parse(img.manifest_digest))
        store.blobs.put_bytes(img.config_raw, Digest.parse(img.manifest.config.digest))
    syncfs(store.root)
    out = []
    with write_txn():
        for img in imgs:
            manifests = {img.manifest_digest: (img.manifest_raw, img.manifest.media_type)}
            stats = {dg: j.stats for dg, j in jobs.items() if j.stats is not None}
            for ref in (img.refs or [None]):   # type: ignore[list-item]
                catalog.record_image(ref, img.manifest_digest, None, img.manifest_digest, img.manifest, img.config,
                                     len(img.config_raw), manifests, stats, store.blobs)
            out.append(Loaded(img.manifest.config.digest, tuple(_familiar(r) for r in img.refs)))
    return out


def _familiar(ref: Reference) -> str:
    from container.engine.image.reference import familiar

    return familiar(ref.repository) + (f":{ref.tag}" if ref.tag else f"@{ref.digest}")


def load(store, path: Path | None, listener: Any = None, *, stream: Any = None) -> list[Loaded]:
    """Load every image of the archive at `path` (a tar, gzip/zstd-compressed or not, or a
    directory) or read from the binary `stream`. Takes the store lock shared."""
    store.ensure()
    store.db()
    tmp: Path | None = None
    try:
        if stream is not None or (path is not None and compressed(Path(path))):
            tmp = spool(store, stream, Path(path) if path is not None else None)
        src = open_source(tmp or Path(str(path)))
        try:
            imgs = read_images(src)
            if not imgs:
                raise ArchiveError("the archive holds no image")
            with store.lock(exclusive=False):
                return store_images(store, src, imgs, listener)
        finally:
            src.close()
    except (DigestMismatch, SizeMismatch) as e:
        raise VerificationError(f"archive blob: {e}") from None
    except OSError as e:
        raise ContainerError(f"load {path or 'stdin'}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

