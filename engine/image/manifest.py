"""Manifests, indexes and image configs: media types, one Accept header, strict parsing.

Everything parsed here comes from the network: sizes are capped, digests are
validated before they become paths, and the body's `mediaType` must agree with
the Content-Type it came with (CVE-2021-41190). Parsed objects are frozen
dataclasses; the raw bytes stay the source of the digest (never re-serialise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from container.cas import Digest

from container.engine.errors import UnsupportedMediaType, VerificationError

# -- media types -------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)

MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)

ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX]) + ", */*;q=0.1"

# Layer media types -> compression ("gzip", "zstd", "" for plain tar)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    # foreign / non-distributable (deprecated, still pulled when allowed)
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}
FOREIGN_TYPES = frozenset(t for t in LAYER_TYPES if "foreign" in t or "nondistributable" in t)

MAX_MANIFEST = 4 << 20      # 4 MiB: containerd's limit for manifests and indexes
MAX_CONFIG = 8 << 20        # configs carry history; still small


class ManifestError(VerificationError):
    """A manifest/index/config that does not parse or does not follow the spec."""


def _digest(s: Any, what: str) -> str:
    if not isinstance(s, str) or not Digest.is_valid(s):
        if isinstance(s, str) and s.startswith("sha512:"):
            raise UnsupportedMediaType(f"{what}: unsupported digest algorithm sha512")
        raise ManifestError(f"{what}: invalid digest {str(s)[:80]!r}")
    return s


def base_type(content_type: str | None) -> str:
    """Content-Type without parameters (clients SHOULD ignore them)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return s + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, d: Any, what: str) -> "Descriptor":
        if not isinstance(d, dict):
            raise ManifestError(f"{what}: descriptor is not an object")
        mt = d.get("mediaType", "")
        if not isinstance(mt, str):
            raise ManifestError(f"{what}: mediaType is not a string")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{what}: invalid size {size!r}")
        urls = d.get("urls") or ()
        if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{what}: urls must be a list of strings")
        plat = None
        p = d.get("platform")
        if isinstance(p, dict):
            plat = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "") or ""),
                            str(p.get("os.version", "") or ""))
        ann = d.get("annotations") or {}
        annotations = tuple((str(k), str(v)) for k, v in ann.items()) if isinstance(ann, dict) else ()
        return cls(mt, _digest(d.get("digest"), what), size, tuple(urls), plat, annotations)

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None

    @property
    def compression(self) -> str:
        return LAYER_TYPES[self.media_type]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImageConfig:
    os: str
    architecture: str
    variant: str
    created: str | None
    diff_ids: tuple[str, ...]
    config: dict = field(hash=False, compare=False)       # the "config" object (Env, Cmd, ...)
    history: tuple = field(hash=False, compare=False, default=())
    raw: dict = field(hash=False, compare=False, default_factory=dict)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


def _load_json(raw: bytes, what: str) -> dict:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ManifestError(f"{what} is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return obj


def refuse_schema1(raw: bytes, content_type: str | None, what: str = "manifest") -> None:
    """UnsupportedMediaType for a schema 1 manifest (signed or not), said before anything else is
    checked: a signed one's digest covers its payload without the signatures, so checking the digest
    first would report a mismatch instead of what the manifest is."""
    if base_type(content_type) in SCHEMA1:
        raise UnsupportedMediaType(
            f"{what}: Docker Image Format v1 and Docker Image manifest version 2, schema 1 are not supported; "
            "the image must be pushed again with a newer client")
    if b'"schemaVersion"' not in raw[:MAX_MANIFEST]:
        return
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return
    if isinstance(obj, dict) and obj.get("schemaVersion") == 1:
        raise UnsupportedMediaType(
            f"{what}: Docker Image manifest version 2, schema 1 is not supported; "
            "the image must be pushed again with a newer client")


def parse_manifest(raw: bytes, content_type: str | None = None, *, what: str = "manifest") -> Index | Manifest:
    """Parse a manifest or index. content_type: the response's Content-Type (or the descriptor's mediaType)."""
    if len(raw) > MAX_MANIFEST:
        raise ManifestError(f"{what} is too large ({len(raw)} bytes, limit {MAX_MANIFEST})")
    ct = base_type(content_type)
    refuse_schema1(raw, ct, what)
    obj = _load_json(raw, what)
    body_mt = obj.get("mediaType")
    if body_mt is not None and not isinstance(body_mt, str):
        raise ManifestError(f"{what}: mediaType is not a string")
    if body_mt and ct and ct not in ("application/json", "application/octet-stream", "text/plain") \
            and body_mt != ct:
        raise ManifestError(f"{what}: mediaType {body_mt!r} does not match Content-Type {ct!r}")
    has_m, has_l = "manifests" in obj, ("config" in obj or "layers" in obj)
    if has_m and has_l:
        raise ManifestError(f"{what} has both manifests and layers: ambiguous, refused")
    mt = body_mt or (ct if ct in MANIFEST_TYPES + INDEX_TYPES else "")
    if not mt:
        mt = OCI_INDEX if has_m else OCI_MANIFEST if has_l else ""
    if mt in INDEX_TYPES:
        if not has_m or not isinstance(obj["manifests"], list):
            raise ManifestError(f"{what}: index without a manifests list")
        return Index(mt, tuple(Descriptor.parse(d, f"{what} entry {i}") for i, d in enumerate(obj["manifests"])))
    if mt in MANIFEST_TYPES:
        if not isinstance(obj.get("layers"), list) or "config" not in obj:
            raise ManifestError(f"{what}: image manifest without config and layers")
        config = Descriptor.parse(obj["config"], f"{what} config")
        layers = tuple(Descriptor.parse(d, f"{what} layer {i}") for i, d in enumerate(obj["layers"]))
        ann = obj.get("annotations") or {}
        return Manifest(mt, config, layers,
                        tuple((str(k), str(v)) for k, v in ann.items()) if isinstance(ann, dict) else ())
    if mt in SCHEMA1:
        raise UnsupportedMediaType(f"{what}: schema 1 manifests are not supported")
    raise UnsupportedMediaType(f"{what}: unsupported manifest media type {mt!r}")


def check_image_manifest(m: Manifest) -> None:
    """Refuse what is not a runnable image: artifacts, unknown layer types (before any download)."""
    if m.config.media_type not in CONFIG_TYPES:
        raise UnsupportedMediaType(
            f"not a container image: config media type {m.config.media_type or '(none)'!r} "
            "(an artifact such as a Helm chart or signature?)")
    for i, layer in enumerate(m.layers):
        if layer.media_type not in LAYER_TYPES:
            raise UnsupportedMediaType(f"unsupported layer media type {layer.media_type!r} (layer {i}, "
                                       f"{layer.digest[:19]})")


def parse_config(raw: bytes) -> ImageConfig:
    if len(raw) > MAX_CONFIG:
        raise ManifestError(f"image config is too large ({len(raw)} bytes)")
    obj = _load_json(raw, "image config")
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ManifestError("image config: rootfs.type must be \"layers\"")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise ManifestError("image config: rootfs.diff_ids missing")
    diff_ids = tuple(_digest(d, "image config diff_id") for d in diff_ids)
    # os/architecture may be empty or missing (docker, skopeo and umoci accept it): pull warns and,
    # from an index, requires the descriptor's platform to match instead
    os_, arch = obj.get("os") or "", obj.get("architecture") or ""
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise ManifestError("image config: os and architecture must be strings")
    cfg = obj.get("config") or {}
    if not isinstance(cfg, dict):
        raise ManifestError("image config: config is not an object")
    _check_run_config(cfg)
    hist = obj.get("history") or []
    created = obj.get("created")
    return ImageConfig(os_, arch, str(obj.get("variant") or ""), created if isinstance(created, str) else None,
                       diff_ids, cfg, tuple(hist) if isinstance(hist, list) else (), obj)


# The fields `run` uses, with the JSON types docker's decoder insists on (a config with
# "User": 1000 or "Cmd": "sh" fails `docker pull` with "json: cannot unmarshal ..."). Checked at
# pull time so that run never meets them.
_STR_FIELDS = ("User", "WorkingDir", "StopSignal", "Hostname", "Domainname")
_STR_LIST_FIELDS = ("Env", "Entrypoint", "Cmd", "Shell", "OnBuild")


def _check_run_config(cfg: dict) -> None:
    for k in _STR_FIELDS:
        v = cfg.get(k)
        if v is not None and not isinstance(v, str):
            raise ManifestError(f"image config: config.{k} must be a string, not {type(v).__name__}")
        if isinstance(v, str) and "\0" in v:
            raise ManifestError(f"image config: config.{k} contains a NUL byte")
    for k in _STR_LIST_FIELDS:
        v = cfg.get(k)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ManifestError(f"image config: config.{k} must be a list of strings")
        if any("\0" in x for x in v):
            raise ManifestError(f"image config: config.{k} contains a NUL byte")
    for k in ("Labels", "ExposedPorts", "Volumes"):
        v = cfg.get(k)
        if v is not None and not isinstance(v, dict):
            raise ManifestError(f"image config: config.{k} must be an object")
