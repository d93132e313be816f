"""Image records in the DB: recording a pull, queries, tags and their removal; ImageInfo is what
leaves the engine (never a model).

Reference counts (schema/models.py): Blob.refs counts edges image.manifest/config/index and
image_layer.blob; Layer.refs counts image_layer rows. They change only here, in the same
write_txn() as the rows they count (design.md invariant 3).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field, replace

from container.engine.errors import Conflict, ImageNotFound, InvalidReference
from container.engine.image import contents
from container.engine.image.identity import chain_id
from container.engine.image.reference import Reference, familiar


@dataclass(frozen=True)
class LayerInfo:
    blob_digest: str
    diff_id: str
    size: int              # compressed size
    media_type: str
    unpacked_size: int = 0
    entries: int = 0


@dataclass(frozen=True)
class ImageInfo:
    id: str                        # manifest digest
    config_digest: str             # docker's IMAGE ID
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: _dt.datetime | None
    size: int                      # unpacked size (sum of layer sizes), docker's SIZE
    os: str
    architecture: str
    variant: str
    config: dict = field(hash=False, compare=False)   # parsed image config JSON (whole document)
    layers: tuple[LayerInfo, ...] = ()
    diff_ids: tuple[str, ...] = ()
    chain_id: str = ""
    index_digest: str | None = None
    download_size: int = 0         # sum of compressed layer sizes
    pulled: _dt.datetime | None = None
    readonly_store: str = ""       # the read-only store it is in (engine/rostores), "" = the user's own

    @property
    def short_id(self) -> str:
        return self.config_digest.split(":", 1)[-1][:12]

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


# -- building ImageInfo --------------------------------------------------------------------------
def image_info(store, img) -> ImageInfo:
    """The ImageInfo of an Image row: tags and digests by familiar name, the parsed config, layers."""
    from container.schema import Tag

    tags = list(Tag.select().where(Tag.image == img.id).order_by(Tag.created))
    return _info(store, img, tags, _layer_infos(img.id).get(img.id, []))


def _layer_infos(image_id: str | None = None) -> dict[str, list[LayerInfo]]:
    """image id -> its LayerInfos, base first: one query (for one image, or all of them)."""
    from container.schema import ImageLayer

    db = ImageLayer._meta.database
    sql = ("SELECT il.image_id, il.blob_digest, il.diff_id, il.media_type, l.size, l.entries, b.size "
           "FROM image_layer il JOIN layer l ON l.diff_id = il.diff_id "
           "LEFT JOIN blob b ON b.digest = il.blob_digest")
    args: tuple = ()
    if image_id is not None:
        sql += f" WHERE il.image_id = {db.param}"
        args = (image_id,)
    out: dict[str, list[LayerInfo]] = {}
    for iid, bd, diff, mt, usize, entries, csize in db.execute_sql(sql + " ORDER BY il.image_id, il.position",
                                                                   args).fetchall():
        out.setdefault(iid, []).append(LayerInfo(bd, diff, csize or 0, mt, usize, entries))
    return out


def _info(store, img, tag_rows: list, layers: list[LayerInfo]) -> ImageInfo:
    tags, digests = [], []
    for t in tag_rows:
        name = familiar(t.repository)
        if t.tag:
            tags.append(f"{name}:{t.tag}")
        d = f"{name}@{t.digest}"
        if d not in digests:
            digests.append(d)
    try:
        config = json.loads(store.blobs.read(img.config_digest))
    except (OSError, KeyError, ValueError):
        config = {}
    return ImageInfo(
        id=img.id, config_digest=img.config_digest, repo_tags=tuple(tags), repo_digests=tuple(digests),
        created=img.created, size=sum(x.unpacked_size for x in layers), os=img.os,
        architecture=img.architecture, variant=img.variant, config=config, layers=tuple(layers),
        diff_ids=tuple(x.diff_id for x in layers), chain_id=img.chain_id, index_digest=img.index_digest,
        download_size=img.size, pulled=img.pulled)


def list_images(store) -> list[ImageInfo]:
    """Every image, newest pull first: three queries whatever the number of images (no query per image)."""
    from container.schema import Image, Tag

    store.db()
    tags_of: dict[str, list] = {}
    for t in Tag.select().order_by(Tag.created):
        tags_of.setdefault(t.image_id, []).append(t)
    layers_of = _layer_infos()
    return [_info(store, img, tags_of.get(img.id, []), layers_of.get(img.id, []))
            for img in Image.select().order_by(Image.pulled.desc())]


def _find_rows(store, ref_or_id: str | Reference):
    """(image rows, matching tag rows or None when matched by id)."""
    from container.schema import Image

    from container.engine.image import reference

    store.db()
    if isinstance(ref_or_id, Reference):
        return _rows_for(ref_or_id, str(ref_or_id))
    s = ref_or_id.strip()
    if not s:
        raise ImageNotFound("No such image: (empty)")
    hexpart = s.removeprefix("sha256:")
    if reference.looks_like_id(s) and (s.startswith("sha256:") or len(hexpart) >= 4):
        hits = list(Image.select().where(Image.config.startswith("sha256:" + hexpart))
                    .order_by(Image.pulled.desc()))
        if len({h.config_digest for h in hits}) == 1:
            # one image id: the manifests of one config (the same image pulled as Docker schema 2
            # and as OCI, or gzip and zstd) are one image to docker and podman, newest pull first
            return hits, None
        if not hits:
            hits = list(Image.select().where(Image.id.startswith("sha256:" + hexpart)))
        if len(hits) == 1 or (hits and len(hexpart) == 64):
            return hits[:1], None
        if len(hits) > 1:
            raise Conflict(f"ambiguous image id prefix {s!r}: {len(hits)} images match")
        if s.startswith("sha256:"):
            raise ImageNotFound(f"No such image: {s}")
    try:
        ref = reference.parse(s)
    except InvalidReference:
        raise ImageNotFound(f"No such image: {s}") from None
    return _rows_for(ref, s)


def _rows_for(ref: Reference, s: str):
    """_find_rows for a parsed reference (`s` is how the user spelled it, for the error)."""
    from container.schema import Image, Tag

    q = Tag.select().where(Tag.repository == ref.repository)
    if ref.digest:
        q = q.where(Tag.digest == ref.digest)
        rows = list(q)
        if not rows:
            img = Image.get_or_none((Image.id == ref.digest) | (Image.index == ref.digest))
            if img is not None:
                # pulled under another name; by-digest lookup still finds the content
                return [img], []
    else:
        rows = list(q.where(Tag.tag == ref.tag))
    if not rows:
        raise ImageNotFound(f"No such image: {s}")
    return [rows[0].image], rows


def resolve_image(store, ref_or_id: str | Reference) -> ImageInfo:
    """The image a reference (a string, or already parsed) or an image id (prefix) names; ImageNotFound."""
    imgs, _ = _find_rows(store, ref_or_id)
    info = image_info(store, imgs[0])
    if len(imgs) > 1:               # (by id, one config under several manifests: all its names)
        others = [image_info(store, i) for i in imgs[1:]]
        info = replace(
            info, repo_tags=tuple(dict.fromkeys(info.repo_tags + tuple(t for o in others for t in o.repo_tags))),
            repo_digests=tuple(dict.fromkeys(info.repo_digests + tuple(d for o in others for d in o.repo_digests))))
    return info


# -- recording a pull ------------------------------------------------------------------------
def record_image(ref: Reference | None, top_digest: str, index_digest: str | None, manifest_digest: str,
                 manifest, config, config_size: int, manifests: dict, stats: dict, blobs=None) -> bool:
    """Record a pulled image inside the pull's write_txn(): blob rows (`manifests` {digest: (raw,
    media type)} for the index/manifests, the config, the layers), layer rows (with the unpack
    `stats` {layer digest: LayerStats} of the layers this pull unpacked), the image with its edges
    and refcounts when it is new, and the reference `ref` pointing at `top_digest` (its tag moved,
    or a digest reference added; no reference when None). Returns True when the image is new or the tag moved.
    With `blobs` (the store's cas BlobStore) a new blob row gets its usage record (one lstat of the
    file: docs/usage-records.md), so df and fsck need not measure it later."""
    from container.schema import Blob, Image, ImageLayer, Layer, Tag

    m, cfg = manifest, config
    updated = False

    def blob_row(dg, size, mt):
        rec = {}
        if blobs is not None:
            from container.cas import Digest

            try:
                st = os.lstat(blobs.path(Digest.parse(dg)))
                rec = {"disk": st.st_blocks * 512, "inode": st.st_ino}
            except (OSError, ValueError):
                pass
        Blob.insert(digest=dg, size=size, media_type=mt or "", **rec).on_conflict_ignore().execute()
    for dg, (raw, mt) in manifests.items():
        blob_row(dg, len(raw), mt)
    blob_row(m.config.digest, config_size, m.config.media_type)
    for d, diff_id in zip(m.layers, cfg.diff_ids):
        blob_row(d.digest, d.size, d.media_type)
        st = stats.get(d.digest)
        Layer.insert(diff_id=diff_id, size=getattr(st, "size", 0) or 0,
                     entries=getattr(st, "entries", 0) or 0).on_conflict_ignore().execute()
        if st is not None:
            Layer.update(size=st.size, entries=st.entries).where(
                (Layer.diff_id == diff_id) & (Layer.entries == 0)).execute()
            u = getattr(st, "usage", None)     # counted by the extractor (engine/layer/tally.py)
            if u is not None:
                Layer.update(disk=u[0], inodes=u[1], inode=u[2]).where(Layer.diff_id == diff_id).execute()
            if getattr(st, "index", None) is not None:
                contents.store_layer(diff_id, st.index.rows, st.index.packages)
    img = Image.get_or_none(Image.id == manifest_digest)
    if img is None:
        updated = True
        img = Image.create(id=manifest_digest, manifest=manifest_digest, config=m.config.digest,
                           index=index_digest, os=cfg.os, architecture=cfg.architecture,
                           variant=cfg.variant, created=parse_created(cfg.created),
                           size=sum(d.size for d in m.layers), chain_id=chain_id(cfg.diff_ids))
        rows = [{"image": img.id, "position": i, "blob": d.digest, "layer": diff_id,
                 "media_type": d.media_type}
                for i, (d, diff_id) in enumerate(zip(m.layers, cfg.diff_ids))]
        if rows:
            ImageLayer.insert_many(rows).execute()
        add_image_refs(img, rows)
        if not contents.unindexed(cfg.diff_ids):
            contents.record_image_packages(img.id)
    if ref is None:            # loaded from an archive without a name: docker's <none>:<none>
        return updated
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
    return updated


# -- refcounts ------------------------------------------------------------------------------
def add_image_refs(img, layer_rows) -> None:
    """+1 on every blob/layer an image's edges name. Call inside write_txn() with the edges' insert."""
    blob_digests = [img.manifest_digest, img.config_digest] + ([img.index_digest] if img.index_digest else [])
    blob_digests += [r["blob"] for r in layer_rows]
    _bump(blob_digests, [r["layer"] for r in layer_rows], +1)


def drop_image_refs(img) -> None:
    """-1 for an image's edges; call in the write_txn() that deletes the image row."""
    from container.schema import ImageLayer

    rows = list(ImageLayer.select(ImageLayer.blob, ImageLayer.layer).where(ImageLayer.image == img.id).tuples())
    blob_digests = [img.manifest_digest, img.config_digest] + ([img.index_digest] if img.index_digest else [])
    blob_digests += [b for b, _ in rows]
    _bump(blob_digests, [d for _, d in rows], -1)


def _bump(blob_digests, diff_ids, delta: int) -> None:
    """refs += delta for each time a blob or layer is named (a statement per distinct count)."""
    from collections import Counter

    from container.schema import Blob, Layer, bump_in

    bump_in(Blob.digest, Blob.refs, {d: delta * n for d, n in Counter(blob_digests).items()})
    bump_in(Layer.diff_id, Layer.refs, {d: delta * n for d, n in Counter(diff_ids).items()})


def delete_image_row(img) -> None:
    """Delete an image (no tags, no containers left) and its edges, with refcounts. Inside write_txn()."""
    from container.schema import Image, ImageLayer

    drop_image_refs(img)
    contents.drop_image([img.id])
    ImageLayer.delete().where(ImageLayer.image == img.id).execute()
    Image.delete().where(Image.id == img.id).execute()


def _containers_using(image_id: str) -> list[str]:
    """'stopped container 0e7d5c3a1b2f' for each container made from the image (docker's wording)."""
    from container.schema import Container

    return [f"{'running' if c.status == 'running' else 'stopped'} container {c.id[:12]}"
            for c in Container.select(Container.id, Container.status).where(Container.image == image_id)]


@dataclass
class RemoveResult:
    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def remove_image(store, ref_or_id: str, *, force: bool = False) -> RemoveResult:
    """docker rmi (daemon/images/image_delete.go): remove the reference that was named, and the image
    only when no reference is left. Files are reclaimed by gc.

    - by digest (NAME@sha256:...): that digest reference goes; tags naming the same image stay.
    - by tag (NAME:TAG): that tag goes; when no other tag of NAME is left, NAME's digest references
      go too (docker drops them with the last tag of their repository).
    - by ID (or short ID): every reference goes; refused without -f when they span repositories.
    A container using the image blocks removing its last reference (and removal by ID) unless -f,
    and with -f the image stays as <none> while a container uses it.
    """
    from container.schema import Image, Tag, write_txn

    from container.engine.image import reference

    out = RemoveResult()
    with store.lock(exclusive=False):
        store.db()
        with write_txn():
            imgs, named = _find_rows(store, ref_or_id)
            img = Image.get_or_none(Image.id == imgs[0].id)
            if img is None or named == []:      # [] = found by content only, under no such name
                raise ImageNotFound(f"No such image: {ref_or_id}")
            short = img.config_digest.split(":", 1)[-1][:12]
            rows = [img] if named is not None else imgs    # by id: every manifest of the config
            ids = [r.id for r in rows]
            all_refs = list(Tag.select().where(Tag.image.in_(ids)).order_by(Tag.created, Tag.id))
            using = [u for i in ids for u in _containers_using(i)]
            implied: list[str] = []           # digest references that exist only through a tag row
            if named is None:                   # by id: every reference goes
                if len({t.repository for t in all_refs}) > 1 and not force:
                    raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                                   "image is referenced in multiple repositories")
                if using and not force:
                    raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                                   f"image is being used by {using[0]}")
                drop = all_refs
                implied = [f"{familiar(t.repository)}@{t.digest}" for t in all_refs if t.tag is not None]
            else:
                ref = reference.parse(ref_or_id.strip())
                if ref.digest:
                    drop = [t for t in named if t.tag is None]
                    if not drop:                # pulled by tag: the digest reference is the tag row's
                        implied = [f"{ref.familiar}@{ref.digest}"]
                else:
                    drop = list(named)
                    if not any(t.tag is not None and t.repository == ref.repository and t.id not in
                               {d.id for d in drop} for t in all_refs):
                        drop += [t for t in all_refs if t.tag is None and t.repository == ref.repository]
                last = all(t.id in {d.id for d in drop} for t in all_refs)
                if last and implied:            # naming the digest of the only tag removes nothing
                    last = False
                if using and last and not force:
                    raise Conflict(f'conflict: unable to remove repository reference "{ref_or_id}" (must force)'
                                   f" - {using[0].split(' ', 1)[1]} is using its referenced image {short}")
            dropped = {t.id for t in drop}
            seen: set[str] = set()
            for t in drop:
                name = familiar(t.repository)
                shown = f"{name}:{t.tag}" if t.tag else f"{name}@{t.digest}"
                if shown not in seen:
                    seen.add(shown)
                    out.untagged.append(shown)
            for shown in implied:
                if shown not in seen:
                    seen.add(shown)
                    out.untagged.append(shown)
            if dropped:
                Tag.delete().where(Tag.id.in_(list(dropped))).execute()
            remaining = [t for t in all_refs if t.id not in dropped]
            if not remaining and not using:
                for r in rows:
                    delete_image_row(r)
                out.deleted.append(img.config_digest)
    return out


def tag_image(store, source: str, target: str) -> str:
    """docker tag SOURCE TARGET: a new Tag row naming the same image."""
    from container.schema import Tag, write_txn

    from container.engine.image import reference

    ref = reference.parse(target)
    if ref.digest:
        raise InvalidReference(f'invalid reference format: "{target}" (a tag cannot contain a digest)')
    with store.lock(exclusive=False):
        store.db()
        with write_txn():
            imgs, _ = _find_rows(store, source)
            img = imgs[0]
            Tag.delete().where((Tag.repository == ref.repository) & (Tag.tag == ref.tag)).execute()
            Tag.create(repository=ref.repository, tag=ref.tag, digest=img.id, image=img.id)
    return f"{ref.familiar}:{ref.tag}"


def parse_created(s: str | None) -> _dt.datetime | None:
    """RFC 3339 from a config (nanoseconds allowed) -> naive UTC."""
    if not s or not isinstance(s, str):
        return None
    import re

    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", s.strip())
    if not m:
        return None
    frac = (m.group(3) or "")[:7]
    tz = m.group(4) or "Z"
    tz = "+00:00" if tz == "Z" else tz if ":" in tz else tz[:3] + ":" + tz[3:]
    try:
        d = _dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{frac}{tz}")
        return d.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):      # OverflowError: 0001-01-01T00:00:00+01:00 is before year 1
        return None
