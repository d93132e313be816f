"""A reference to its verified manifest and config, the first stage of a pull.

HEAD by tag first (free on Docker Hub; a registry that refuses HEAD is asked with GET), then
manifests by digest, taken from the store when it already has them. Every manifest is checked
against the digest that named it (and the registry's Docker-Content-Digest), an index is walked
down to the manifest for the wanted platform (engine/image/platform.candidates: an entry without a
platform is taken when its config matches), and the config blob is fetched (a few retries) and
checked against its descriptor. A schema 1 manifest is refused as such before its digest is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from container.cas import Digest

from container.engine.errors import (AuthError, ManifestUnknown, RegistryError, RegistryUnavailable,
                                     UnsupportedMediaType, VerificationError)
from container.engine.image.manifest import (CONFIG_TYPES, MAX_CONFIG, Descriptor, Index, Manifest, Platform,
                                             parse_config, parse_manifest, refuse_schema1)
from container.engine.image.reference import Reference
from container.engine.progress import PullListener

MAX_INDEX_DEPTH = 4


@dataclass
class Resolved:
    top_digest: str                 # what the reference resolved to (an index or a manifest)
    index_digest: str | None        # the first index on the way, if any
    manifest_digest: str
    manifest: Manifest
    manifests: dict                 # {digest: (raw bytes, media type)} of every index/manifest read


class Resolver:
    """Reads manifests and configs of one repository through `client`, preferring the store's `blobs`;
    reports to the pull's `listener` (info, resolved)."""

    def __init__(self, client, blobs, ref: Reference, listener: PullListener):
        self.client, self.blobs, self.ref, self.listener = client, blobs, ref, listener
        self.info = listener.info
        self.repo = ref.path
        self._configs: dict[str, bytes] = {}      # configs read while choosing a platform, by digest

    def resolve(self, want) -> Resolved:
        """The reference down to the manifest for platform `want` (listener.resolved once the top
        digest is known)."""
        from container.engine.image import platform as _platform

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
        raw, mt, top_digest = self.manifest(top_digest, ref.tag, top_type)
        self.listener.resolved(str(ref), top_digest)
        blobs = {top_digest: (raw, mt)}
        node = parse_manifest(raw, mt)
        index_digest, manifest_digest, depth = None, top_digest, 0
        while isinstance(node, Index):
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise UnsupportedMediaType("image index nesting is too deep")
            if index_digest is None:
                index_digest = manifest_digest
            found, available = _platform.candidates(node, want)
            for desc in found:
                raw, mt, digest = self.manifest(desc.digest, None, desc.media_type, desc.size)
                child = parse_manifest(raw, mt or desc.media_type)
                if desc.platform is None and isinstance(child, Manifest):
                    # an entry without a platform: its config says what it is (containerd does so)
                    have = self._config_platform(child)
                    if have is None or _platform.rank(want, have) is None:
                        if have is not None:
                            available.append(str(_platform.normalize(have)))
                        continue
                    self.info(f"entry {desc.digest[:19]} has no platform; its config says {have}")
                else:
                    self.info(f"platform {desc.platform} chosen for {want}: {desc.digest[:19]}")
                break
            else:
                raise _platform.mismatch(want, available)
            manifest_digest = digest
            blobs[manifest_digest] = (raw, mt)
            node = child
        assert isinstance(node, Manifest)
        return Resolved(top_digest, index_digest, manifest_digest, node, blobs)

    def _config_platform(self, m: Manifest) -> Platform | None:
        """The platform an image manifest's config names; None for an artifact or an empty one."""
        if m.config.media_type not in CONFIG_TYPES:
            return None
        cfg = parse_config(self.config(m.config))
        return cfg.platform if cfg.os and cfg.architecture else None

    def manifest(self, digest: str | None, tag: str | None, media_type: str | None,
                  size: int | None = None) -> tuple[bytes, str | None, str]:
        """(raw, media type, digest): from the store when we have it, else GET (by digest when known)."""
        blobs = self.blobs
        if digest is not None:
            Digest.parse(digest)
            if blobs.has(Digest.parse(digest)):
                self.info(f"manifest {digest[:19]} already stored: no GET")
                return blobs.read(Digest.parse(digest)), media_type, digest
        raw, ctype, header = self.client.get_manifest(self.repo, digest or tag)
        refuse_schema1(raw, ctype or media_type)          # before the digest: a signed one never matches
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

    def config(self, d: Descriptor) -> bytes:
        """The config blob `d` names: from the store, else downloaded (3 tries) and verified."""
        blobs = self.blobs
        dg = Digest.parse(d.digest)
        if d.digest in self._configs:
            return self._configs[d.digest]
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
        assert raw is not None                      # the loop breaks with it or raises
        got = Digest.of_bytes(raw)
        if got != dg or len(raw) != d.size:
            raise VerificationError(f"image config digest mismatch: expected {d.digest}, got {got} "
                                    f"({len(raw)} of {d.size} bytes)")
        self._configs[d.digest] = raw
        return raw
