"""save(store, names, out, fmt): images from the store into an archive, blobs copied as stored.

Formats (what docker 25+ and skopeo/podman read):

    docker-archive  a tar: manifest.json ([{Config, RepoTags, Layers}], paths into blobs/),
                    repositories, and an OCI image layout (oci-layout, index.json, blobs/sha256/...)
    oci-archive     a tar holding an OCI image layout only
    oci-dir         the OCI image layout as a directory

index.json names each image's manifest (the one platform the store holds) with the annotations
io.containerd.image.name (the full name) and org.opencontainers.image.ref.name (the tag), as
docker and containerd write them. Blobs are the registry's bytes (manifest, config, compressed
layers), so the digests in the archive are the ones the image was pulled with. A blob shared by
several images is written once.

A file output is written beside its final name and renamed into place at the end: a failed save
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from container.engine.errors import ContainerError
from container.engine.image.manifest import OCI_INDEX, OCI_MANIFEST
from container.engine.transfer.archive import DirWriter, TarWriter, atomic_file

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import BinaryIO

    from container.engine.image.catalog import ImageInfo

FORMATS = ("docker-archive", "oci-archive", "oci-dir")
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True)
class _Entry:
    info: ImageInfo
    manifest: bytes
    media_type: str
    names: tuple[tuple[str, str], ...]      # (full name:tag, familiar name:tag)


def _blob_name(digest: str) -> str:
    algo, hexpart = digest.split(":", 1)
    return f"blobs/{algo}/{hexpart}"


def _entries(store, names: list[str]) -> list[_Entry]:
    from container.engine.image import reference
    from container.engine.image.catalog import resolve_image

    out: list[_Entry] = []
    for name in names:
        info = resolve_image(store, name)
        raw = store.blobs.read(info.id)
        try:
            mt = json.loads(raw).get("mediaType") or OCI_MANIFEST
        except ValueError:
            raise ContainerError(f"image {name}: its stored manifest is not JSON (see `container fsck`)") from None
        tags: tuple[tuple[str, str], ...] = ()
        hexpart = name.strip().removeprefix("sha256:")
        by_id = reference.looks_like_id(name.strip()) and (info.config_digest[7:].startswith(hexpart)
                                                           or info.id[7:].startswith(hexpart))
        if not by_id:
            ref = reference.parse(name)
            if ref.tag and not ref.digest:
                tags = ((f"{ref.repository}:{ref.tag}", f"{reference.familiar(ref.repository)}:{ref.tag}"),)
        for e in out:
            if e.info.id == info.id:
                out[out.index(e)] = _Entry(info, raw, mt, e.names + tuple(t for t in tags if t not in e.names))
                break
        else:
            out.append(_Entry(info, raw, mt, tags))
    return out


def _index(entries: list[_Entry]) -> bytes:
    manifests = []
    for e in entries:
        base = {"mediaType": e.media_type, "digest": e.info.id, "size": len(e.manifest)}
        if not e.names:
            manifests.append(base)
        for full, _fam in e.names:
            manifests.append(dict(base, annotations={"io.containerd.image.name": full,
                                                     "org.opencontainers.image.ref.name": full.rsplit(":", 1)[1]}))
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      separators=(",", ":")).encode()


def _docker_manifest(entries: list[_Entry]) -> tuple[bytes, bytes]:
    """(manifest.json, repositories) as docker 25 writes them."""
    items: list[dict] = []
    repos: dict[str, dict[str, str]] = {}
    for e in entries:
        layers = [_blob_name(x.blob_digest) for x in e.info.layers]
        items.append({"Config": _blob_name(e.info.config_digest),
                      "RepoTags": [fam for _full, fam in e.names] or None, "Layers": layers})
        for _full, fam in e.names:
            repo, tag = fam.rsplit(":", 1)
            if e.info.layers:
                repos.setdefault(repo, {})[tag] = e.info.layers[-1].blob_digest.split(":", 1)[1]
    return (json.dumps(items, separators=(",", ":")).encode(),
            json.dumps(repos, separators=(",", ":")).encode())


def _write(store, entries: list[_Entry], w: TarWriter | DirWriter, fmt: str) -> None:
    from container.cas import Digest

    written: set[str] = set()

    def blob(digest: str) -> None:
        if digest in written:
            return
        written.add(digest)
        d = Digest.parse(digest)
        with store.blobs.open(d) as f:
            w.add_file(_blob_name(digest), f, os.fstat(f.fileno()).st_size)

    for e in entries:
        if _blob_name(e.info.id) not in written:
            written.add(e.info.id)
            w.add_bytes(_blob_name(e.info.id), e.manifest)
        blob(e.info.config_digest)
        for layer in e.info.layers:
            blob(layer.blob_digest)
    w.add_bytes("index.json", _index(entries))
    if fmt == "docker-archive":
        manifest, repos = _docker_manifest(entries)
        w.add_bytes("manifest.json", manifest)
    w.add_bytes("oci-layout", OCI_LAYOUT)
    if fmt == "docker-archive":
        w.add_bytes("repositories", repos)


def save(store, names: list[str], *, fmt: str = "docker-archive", output: Path | None = None,
         stream: BinaryIO | None = None) -> list[str]:
    """Write the images `names` (references or ids) to `output` (a file, or for oci-dir a directory)
    or to `stream`; returns the image ids written. Takes the store lock shared."""
    if fmt not in FORMATS:
        raise ContainerError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not names:
        raise ContainerError("save needs at least one image")
    if fmt == "oci-dir" and output is None:
        raise ContainerError("--format oci-dir needs -o DIRECTORY")
    store.ensure()
    store.db()
    with store.lock(exclusive=False):
        entries = _entries(store, names)
        if output is None:
            assert stream is not None
            w = TarWriter(stream)
            _write(store, entries, w, fmt)
            w.close()
            return [e.info.config_digest for e in entries]
        return _to_path(store, entries, Path(output), fmt)


def _to_path(store, entries: list[_Entry], output: Path, fmt: str) -> list[str]:
    from container.cas.fsutil import remove_tree

    output = output.absolute()
    if fmt != "oci-dir":
        with atomic_file(output) as f:
            w = TarWriter(f)
            _write(store, entries, w, fmt)
            w.close()
        return [e.info.config_digest for e in entries]
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ContainerError(f"{output} exists and is not an empty directory")
    if not output.parent.is_dir():
        raise ContainerError(f"cannot write {output}: {output.parent} is not a directory")
    tmp = output.parent / f".{output.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        _write(store, entries, DirWriter(tmp), fmt)
        if output.exists():
            output.rmdir()
        os.replace(tmp, output)
    except OSError as e:
        raise ContainerError(f"cannot write {output}: {e.strerror or e}") from None
    finally:
        if tmp.is_dir():
            remove_tree(tmp)
    return [e.info.config_digest for e in entries]
