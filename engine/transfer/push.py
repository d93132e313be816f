"""push(store, source, dest): an image from the store to a registry, the bytes as stored.

    The push refers to repository [127.0.0.1:5000/test/app]
    a19482d8c8ff: Pushed                        (uploaded)
    de8f15605ba1: Layer already exists          (HEAD said 200)
    78f567e94b12: Mounted from test/base        (POST ?mount=&from=: 201)
    latest: digest: sha256:... size: 1023

Layers first (base first), then the config, then the manifest (the registry refuses a manifest
whose blobs it lacks). A blob the registry already has is skipped; one the store knows from
another repository of the same registry (a tag there names an image with it) is mounted from it;
the rest are uploaded by registry/upload.py (one PUT for small blobs, PATCH chunks for large). The
manifest pushed is the stored one (for an image pulled from an index: that platform's manifest),
so the digest is the one it was pulled with. Token scope: repository:<repo>:pull,push.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from container.cas import Digest
from container.engine.errors import ContainerError, InvalidReference

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, Callable

    from container.engine.registry.upload import Uploader


@dataclass(frozen=True)
class Pushed:
    """What push did: where, the manifest digest and size, and per layer what happened."""
    repository: str
    tag: str | None
    digest: str
    size: int
    layers: tuple[tuple[str, str], ...]        # (layer digest, "Pushed" | "Layer already exists" | "Mounted from X")


def _mount_sources(domain: str, repo: str, digest: str) -> list[str]:
    """Other repositories of `domain` where the store's tags name an image holding blob `digest`."""
    from container.schema import Image, ImageLayer, Tag

    q = (Tag.select(Tag.repository).join(Image).join(ImageLayer, on=(ImageLayer.image == Image.id))
         .where((ImageLayer.blob == digest) & Tag.repository.startswith(domain + "/")).distinct())
    q2 = (Tag.select(Tag.repository).join(Image)
          .where((Image.config == digest) & Tag.repository.startswith(domain + "/")).distinct())
    out = []
    for t in list(q) + list(q2):
        other = t.repository[len(domain) + 1:]
        if other != repo and other not in out:
            out.append(other)
    return out


def _send_blob(store, up: Uploader, domain: str, digest: str, size: int) -> str:
    if up.exists(digest):
        return "Layer already exists"
    location: str | None = None
    for other in _mount_sources(domain, up.repo, digest)[:3]:
        got = up.mount(digest, other)
        if got is True:
            return f"Mounted from {other}"
        location = str(got)
        break
    with store.blobs.open(Digest.parse(digest)) as f:
        up.upload(digest, size, f, location)
    return "Pushed"


def push(store, source: str, dest: str | None = None, *, listener: Callable[[str], None] | None = None,
         log: Callable[[str], None] | None = None, config: Any = None) -> Pushed:
    """Push the local image `source` to `dest` (default: `source`'s own name); progress lines to
    `listener`, the registry client's chatter (-v) to `log`."""
    from container.engine.image.catalog import resolve_image
    from container.engine.image.reference import parse
    from container.engine.registry.client import RegistryClient
    from container.engine.registry.upload import Uploader

    say = listener or (lambda s: None)
    store.ensure()
    store.db()
    with store.lock(exclusive=False):
        info = resolve_image(store, source)
        try:
            ref = parse(dest or source)
        except InvalidReference:
            raise ContainerError(f"push: {dest or source} is not a repository name: give a destination, "
                                 "as in `container push IMAGE REGISTRY/REPO[:TAG]`") from None
        raw = store.blobs.read(info.id)
        media_type = json.loads(raw).get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
        config_size = store.blobs.size(Digest.parse(info.config_digest))
        say(f"The push refers to repository [{ref.repository}]")
        client = RegistryClient(ref.domain, config=config, log=log)
        try:
            up = Uploader(client, ref.path)
            done = []
            for layer in info.layers:
                status = _send_blob(store, up, ref.domain, layer.blob_digest, layer.size or
                                    store.blobs.size(Digest.parse(layer.blob_digest)))
                say(f"{layer.blob_digest[7:19]}: {status}")
                done.append((layer.blob_digest, status))
            _send_blob(store, up, ref.domain, info.config_digest, config_size)
            target = ref.digest or ref.tag or "latest"
            if ref.digest and ref.digest != info.id:
                raise ContainerError(f"push: {ref.digest} is not this image's manifest digest ({info.id})")
            got = up.put_manifest(target, raw, media_type)
            if got and got != info.id:
                raise ContainerError(f"push: the registry stored the manifest as {got}, expected {info.id}")
        finally:
            client.close()
    return Pushed(ref.repository, ref.tag if not ref.digest else None, info.id, len(raw), tuple(done))
