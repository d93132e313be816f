"""Synthetic stores for the gc/df/fsck/sql tests: real blobs (gzip tars), real rows, trees built by hand.

Everything is what a pull would leave, without a registry: blobs through BlobStore.put_bytes, rows
through the models, layer trees extracted from the very tar that is stored, snapshots hardlinked from
the layer trees, containers as rows plus containers/<id>/ with an upper dir.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

from container.cas import Digest
from container.engine.image.identity import chain_ids
from container.schema import Blob, Container, Image, ImageLayer, Layer, Snapshot, Tag, write_txn

LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def make_tar(files: dict[str, bytes | str]) -> bytes:
    """files: path -> bytes (regular file) or "->target" (symlink) or "=>other" (hardlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                    tf.addfile(ti)
            data = files[path]
            ti = tarfile.TarInfo(path)
            ti.mtime = 1700000000
            if isinstance(data, str) and data.startswith("->"):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, data[2:], 0o777
                tf.addfile(ti)
            elif isinstance(data, str) and data.startswith("=>"):
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, data[2:], 0o644
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def add_layer(store, files: dict) -> tuple[str, str, int]:
    """Store one layer: (blob digest, diff_id, compressed size). Idempotent."""
    tar = make_tar(files)
    gz = gzip.compress(tar, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    d = str(store.blobs.put_bytes(gz))
    dest = store.layer_path(diff_id)
    if not dest.exists():
        tmp = store.layers_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            tf.extractall(tmp, filter="fully_trusted")
        os.rename(tmp, dest)
    with write_txn():
        Blob.insert(digest=d, size=len(gz), media_type=LAYER_MT).on_conflict_ignore().execute()
        Layer.insert(diff_id=diff_id, size=sum(len(v) for v in files.values() if isinstance(v, bytes)),
                     entries=len(files)).on_conflict_ignore().execute()
    return d, diff_id, len(gz)


def add_image(store, repo: str | None, tag: str | None, layers: list[dict], *, seed: str = "",
              snapshot: bool = True) -> str:
    """An image of `layers` tagged repo:tag (no Tag row when repo is None). Returns the image id."""
    store.db()
    ls = [add_layer(store, f) for f in layers]
    diff_ids = [x[1] for x in ls]
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd = str(store.blobs.put_bytes(config))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"digest": cd, "size": len(config)},
                           "layers": [{"digest": d, "size": n, "mediaType": LAYER_MT} for d, _, n in ls]}).encode()
    md = str(store.blobs.put_bytes(manifest))
    chain = chain_ids(diff_ids)[-1]
    with write_txn():
        Blob.insert(digest=cd, size=len(config), media_type="application/vnd.oci.image.config.v1+json"
                    ).on_conflict_ignore().execute()
        Blob.insert(digest=md, size=len(manifest), media_type="application/vnd.oci.image.manifest.v1+json"
                    ).on_conflict_ignore().execute()
        if not Image.select().where(Image.id == md).exists():
            Image.create(id=md, manifest=md, config=cd, architecture="amd64", size=sum(x[2] for x in ls),
                         chain_id=chain)
            for i, (d, diff, _) in enumerate(ls):
                ImageLayer.create(image=md, position=i, blob=d, layer=diff, media_type=LAYER_MT)
        if repo:
            Tag.delete().where((Tag.repository == repo) & (Tag.tag == tag)).execute()
            Tag.create(repository=repo, tag=tag, digest=md, image=md)
        recount()
    if snapshot:
        ensure_snapshot(store, diff_ids)
    return md


def recount() -> None:
    from container.engine.maint.inventory import recount_refs

    recount_refs()


def ensure_snapshot(store, diff_ids: list[str]) -> str:
    chain = chain_ids(diff_ids)[-1]
    dest = store.snapshot_path(chain)
    if not dest.exists():
        tmp = store.snapshots_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        for diff in diff_ids:
            src = store.layer_path(diff)
            for dirpath, dirnames, filenames in os.walk(src):
                rel = os.path.relpath(dirpath, src)
                os.makedirs(tmp / rel, exist_ok=True)
                for f in filenames:
                    t = tmp / rel / f
                    if os.path.lexists(t):
                        os.unlink(t)
                    os.link(os.path.join(dirpath, f), t, follow_symlinks=False)
        os.rename(tmp, dest)
    with write_txn():
        Snapshot.insert(chain_id=chain, top=diff_ids[-1]).on_conflict_ignore().execute()
    return chain


def add_container(store, image_id: str, name: str, *, status: str = "exited", data: bytes = b"x" * 5000) -> str:
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    im = Image.get_by_id(image_id)
    d = store.containers_dir / cid
    (d / "upper").mkdir(parents=True)
    (d / "upper" / "file").write_bytes(data)
    with write_txn():
        Container.create(id=cid, name=name, image=image_id, image_ref=name, snapshot=im.chain_id or None,
                         status=status, exit_code=0 if status == "exited" else None)
    return cid


def rmi(store, image_id: str) -> None:
    """What `rmi` leaves behind: the tags go, and the image row (its content stays for gc)."""
    with write_txn():
        Tag.delete().where(Tag.image == image_id).execute()
        if Container.select().where(Container.image == image_id).exists():
            return                       # docker: untagged only, the image stays for its container
        ImageLayer.delete().where(ImageLayer.image == image_id).execute()
        Image.delete().where(Image.id == image_id).execute()
        recount()


def du(path: Path, *, without_db: bool = False) -> int:
    """`du -sB1` (st_blocks*512, each inode once, dirs included); without_db: minus metadata.db*."""
    import subprocess

    extra = ["--exclude=metadata.db*"] if without_db else []
    out = subprocess.run(["du", "-sB1", *extra, str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def content_paths(store) -> list[str]:
    """Everything below the five content dirs (what must be empty after prune -a + gc)."""
    out = []
    for d in (store.blobs.dir, store.layers_dir, store.snapshots_dir, store.containers_dir, store.ingest_dir):
        if d.exists():
            out += [str(p) for p in d.iterdir()]
    return out


BASE = {"bin/sh": b"#!shell" * 300, "etc/passwd": b"root:x:0:0::/root:/bin/sh\n", "lib/libc.so": b"L" * 9000}


def layers_for(i: int) -> list[dict]:
    """Three images' worth of layer stacks that share the base layer."""
    return [BASE, {f"app{i}/data": bytes([65 + i]) * (3000 * (i + 1)), f"app{i}/link": f"->/app{i}/data"}]


def digest_hex(d: str) -> str:
    return Digest.parse(d).hex


def sql_example_store(root, db_url: str | None = None) -> list[str]:
    """The store the `container sql` tests query: 3 images sharing a base layer, containers ok1 and
    ok2 (exit 0) and bad (exit 3). db_url: None for SQLite in root, or a database URL."""
    from container.engine.store import Store
    from container.schema import Container

    s = Store(root, db_url)
    s.db()
    ids = [add_image(s, f"docker.io/library/app{i}", "latest", layers_for(i), seed=str(i)) for i in range(3)]
    add_container(s, ids[0], "ok1", status="exited")
    add_container(s, ids[1], "ok2", status="exited")
    c = add_container(s, ids[2], "bad", status="exited")
    Container.update(exit_code=3).where(Container.id == c).execute()
    s.close()
    return ids
