"""Test-image builder: OCI image layouts from layers we write ourselves, pushed to a registry with skopeo.

Images (all `linux/<host arch>` unless said otherwise; layers gzip, OCI media types; mtimes fixed at MTIME):

  busybox     1 layer: /bin/busybox (Debian busybox-static) + every applet of `busybox --list` as a
              relative symlink bin/<applet> -> busybox; /etc/passwd, /etc/group (see PASSWD, GROUP:
              root, nobody, app uid 1000 gid 1000 with supplementary groups staff(50) and wheel(10));
              /tmp 1777, /root 0700, /home, /dev /proc /sys (empty), /usr/bin /usr/sbin /sbin /var.
              Config: Cmd ["sh"], Env [PATH=BUSYBOX_PATH].
  layered     busybox base + 4 layers, see LAYERED (every path, type, mode, owner and content that a
              correct unpack must show) and LAYERED_CONFIG (Entrypoint/Cmd/WorkingDir/User/Env...).
  shared-a/b  busybox base + a common middle layer (SHARED_MIDDLE) + one own top layer each.
  multiarch   OCI index: linux/amd64, linux/arm64/v8, linux/arm/v7 and an attestation manifest
              (platform unknown/unknown). The host's platform holds the busybox layer + a marker layer;
              the others one tiny layer. Every image has /etc/platform = "<os>/<arch>[/<variant>]\n".
  multiarch-docker  the same three platforms as a Docker manifest list of Docker schema 2 manifests
              (no attestation entry).
  zstd        busybox layer compressed with zstd (same diff_id as busybox's, other blob digest) + a
              zstd marker layer (/etc/compression = "zstd\n"); media type ...tar+zstd.
  debian      (slow, cached) debootstrap --variant=minbase bookworm split into 3 layers: the rootfs;
              a layer deleting docs (usr/share/doc opaque, whiteouts for usr/share/man, info, locale,
              lintian); a small config layer (/etc/debian-stand-in). Cmd ["bash"].

API:
    build_all(out_dir) -> {name: BuiltImage}            (fast images; build_debian() separately)
    build_debian(cache_dir=None) -> BuiltImage          (cached in $CONTAINER_TEST_CACHE or ~/.cache/container-tests)
    push(image, registry_host, repo, tag, fmt="oci"|"v2s2") -> PushedImage   (what the registry holds)

CLI:
    python tools/images.py build --out D [--debian]
    python tools/images.py push --registry HOST [--out D] [--debian] [--only busybox,...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 1700000000  # 2023-11-14T22:13:20Z: every entry's mtime
CREATED = "2023-11-14T22:13:20Z"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_IN_TOTO = "application/vnd.in-toto+json"
ACCEPT_ALL = ", ".join([MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST])

BUSYBOX_BIN = "/bin/busybox"
BUSYBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app user:/home/app:/bin/sh\n"
)
GROUP = (
    "root:x:0:\n"
    "wheel:x:10:root,app\n"
    "staff:x:50:app\n"
    "nogroup:x:65534:\n"
    "app:x:1000:\n"
)
# `id app` inside busybox: uid=1000(app) gid=1000(app) groups=10(wheel),50(staff),1000(app)
APP_UID, APP_GID, APP_SUPPLEMENTARY_GIDS = 1000, 1000, (10, 50)

_UNAMES = {0: "root", 1000: "app"}


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine in OCI terms."""
    m = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
            "armv6l": "arm", "i386": "386", "i686": "386"}.get(m, m)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(m, "")
    return "linux", arch, variant


# ------------------------------------------------------------------------------------------------------------
# Layer writing
# ------------------------------------------------------------------------------------------------------------
class _LayerSink:
    """File-like sink for tarfile: hashes the tar (diff_id), compresses, hashes the blob (digest), writes."""

    def __init__(self, path: Path, compression: str, level: int):
        self.f = open(path, "wb")
        self.compression = compression
        self.diff = hashlib.sha256()
        self.dig = hashlib.sha256()
        self.usize = 0
        self.csize = 0
        if compression == "gzip":
            self.comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0: deterministic
        elif compression == "zstd":
            import zstandard
            self.comp = zstandard.ZstdCompressor(level=level).compressobj()
        elif compression == "none":
            self.comp = None
        else:
            raise ValueError(f"unknown compression {compression}")

    def _out(self, b: bytes) -> None:
        if b:
            self.f.write(b)
            self.dig.update(b)
            self.csize += len(b)

    def write(self, b) -> int:
        b = bytes(b)
        self.diff.update(b)
        self.usize += len(b)
        self._out(self.comp.compress(b) if self.comp else b)
        return len(b)

    def tell(self) -> int:
        return self.usize

    def flush(self) -> None:
        pass

    def finish(self) -> tuple[str, str, int, int]:
        if self.comp is not None:
            self._out(self.comp.flush())
        self.f.close()
        return "sha256:" + self.dig.hexdigest(), "sha256:" + self.diff.hexdigest(), self.csize, self.usize


LAYER_MEDIA_TYPES = {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD, "none": MT_OCI_LAYER_TAR}
DOCKER_LAYER_TYPES = {MT_OCI_LAYER_GZIP: MT_DOCKER_LAYER_GZIP, MT_OCI_LAYER_TAR: "application/vnd.docker.image.rootfs.diff.tar"}


class Layer:
    """A layer described entry by entry (tar order = call order). Paths are relative, no leading '/'."""

    def __init__(self, comment: str = ""):
        self.comment = comment
        self.entries: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def _ti(self, name: str, type_: bytes, mode: int, uid: int, gid: int, linkname: str = "",
            size: int = 0, xattrs: dict[str, str] | None = None, mtime: int = MTIME) -> tarfile.TarInfo:
        if name.startswith("/"):
            raise ValueError("layer paths are relative")
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname, ti.gname = _UNAMES.get(uid, ""), _UNAMES.get(gid, "")
        ti.mtime = mtime
        ti.linkname = linkname
        ti.size = size
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0, **kw) -> "Layer":
        self.entries.append((self._ti(name, tarfile.DIRTYPE, mode, uid, gid, **kw), None))
        return self

    def file(self, name, data: bytes | str, mode=0o644, uid=0, gid=0, **kw) -> "Layer":
        data = data.encode() if isinstance(data, str) else data
        self.entries.append((self._ti(name, tarfile.REGTYPE, mode, uid, gid, size=len(data), **kw), data))
        return self

    def symlink(self, name, target, uid=0, gid=0) -> "Layer":
        self.entries.append((self._ti(name, tarfile.SYMTYPE, 0o777, uid, gid, linkname=target), None))
        return self

    def hardlink(self, name, target, mode=0o644, uid=0, gid=0) -> "Layer":
        """`target` is archive-relative (e.g. 'data/hard/orig.txt'), as tar and the OCI spec want."""
        self.entries.append((self._ti(name, tarfile.LNKTYPE, mode, uid, gid, linkname=target), None))
        return self

    def fifo(self, name, mode=0o644, uid=0, gid=0) -> "Layer":
        self.entries.append((self._ti(name, tarfile.FIFOTYPE, mode, uid, gid), None))
        return self

    def whiteout(self, name) -> "Layer":
        """Delete `name` (file or directory) of lower layers: an empty file `.wh.<basename>`."""
        d, _, base = name.rpartition("/")
        return self.file((d + "/" if d else "") + ".wh." + base, b"", mode=0o600)

    def opaque(self, dirname) -> "Layer":
        """Hide all lower-layer children of `dirname`: `<dirname>/.wh..wh..opq`."""
        return self.file(dirname.rstrip("/") + "/.wh..wh..opq", b"", mode=0o600)

    def write(self, tf: tarfile.TarFile) -> None:
        for ti, data in self.entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)


@dataclass
class LayerInfo:
    digest: str        # sha256 of the compressed blob
    diff_id: str       # sha256 of the uncompressed tar
    size: int          # compressed size
    media_type: str
    uncompressed_size: int = 0
    comment: str = ""


@dataclass
class BuiltImage:
    name: str
    oci_dir: Path
    tag: str
    manifest_digest: str           # for multiarch: the index digest
    media_type: str                # of that manifest/index
    config_digest: str | None      # None for an index
    layers: list[LayerInfo] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    platforms: dict[str, "BuiltImage"] = field(default_factory=dict)  # multiarch: "linux/arm64/v8" -> child
    manifest_size: int = 0

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.oci_dir}:{self.tag}"


class OciLayout:
    """An OCI image layout directory: oci-layout, index.json, blobs/sha256/."""

    def __init__(self, path: Path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs: list[dict] = []
        self._layer_cache: dict[tuple, LayerInfo] = {}

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        p = self.blob_path(digest)
        if not p.exists():
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return digest, len(data)

    def put_json(self, obj) -> tuple[str, int, bytes]:
        data = json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()
        d, n = self.put_bytes(data)
        return d, n, data

    def add_layer(self, writer, compression="gzip", level=6, comment="") -> LayerInfo:
        """`writer(tarfile)` writes the entries. Returns the LayerInfo with both digests."""
        tmp = Path(tempfile.mkstemp(dir=self.path / "blobs" / "sha256", suffix=".layer.tmp")[1])
        sink = _LayerSink(tmp, compression, level)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tf:
            writer(tf)
        digest, diff_id, csize, usize = sink.finish()
        os.replace(tmp, self.blob_path(digest))
        return LayerInfo(digest, diff_id, csize, LAYER_MEDIA_TYPES[compression], usize, comment)

    def add_built_layer(self, layer: Layer, compression="gzip", level=6) -> LayerInfo:
        return self.add_layer(layer.write, compression, level, layer.comment)

    def copy_blob_from(self, other: "OciLayout", digest: str) -> None:
        dst = self.blob_path(digest)
        if not dst.exists():
            try:
                os.link(other.blob_path(digest), dst)
            except OSError:
                shutil.copyfile(other.blob_path(digest), dst)

    def add_image(self, layers: list[LayerInfo], config: dict, *, annotations: dict | None = None,
                  config_media_type=MT_OCI_CONFIG, docker: bool = False) -> tuple[str, int, str, dict]:
        """Write config + manifest blobs; returns (manifest digest, size, config digest, final config).
        docker=True: Docker schema 2 media types (manifest, config, gzip layers)."""
        config = dict(config)
        config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        config.setdefault("history", [{"created": CREATED, "created_by": layer.comment or "tools/images.py",
                                       "comment": "tools/images.py"} for layer in layers])
        cdig, csize, _ = self.put_json(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
            "config": {"mediaType": MT_DOCKER_CONFIG if docker else config_media_type, "digest": cdig, "size": csize},
            "layers": [{"mediaType": DOCKER_LAYER_TYPES[layer.media_type] if docker else layer.media_type,
                        "digest": layer.digest, "size": layer.size} for layer in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        mdig, msize, _ = self.put_json(manifest)
        return mdig, msize, cdig, config

    def tag(self, digest: str, size: int, media_type: str, tag: str) -> None:
        self.refs = [r for r in self.refs if r["annotations"]["org.opencontainers.image.ref.name"] != tag]
        self.refs.append({"mediaType": media_type, "digest": digest, "size": size,
                          "annotations": {"org.opencontainers.image.ref.name": tag}})
        (self.path / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.refs}, indent=1))


def _image_config(arch: str, os_: str = "linux", variant: str = "", cfg: dict | None = None) -> dict:
    c = {"created": CREATED, "architecture": arch, "os": os_}
    if variant:
        c["variant"] = variant
    c["config"] = cfg or {}
    return c


# ------------------------------------------------------------------------------------------------------------
# Image contents
# ------------------------------------------------------------------------------------------------------------
def busybox_applets(busybox: str = BUSYBOX_BIN) -> list[str]:
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    return sorted(a for a in set(out) if a and "/" not in a and a != "busybox")


def busybox_layer(busybox: str = BUSYBOX_BIN) -> Layer:
    data = Path(busybox).read_bytes()
    L = Layer("busybox base: /bin/busybox + applet symlinks, /etc/passwd, /etc/group")
    L.dir("bin")
    L.file("bin/busybox", data, mode=0o755)
    for a in busybox_applets(busybox):
        L.symlink(f"bin/{a}", "busybox")
    for d in ("dev", "proc", "sys", "home", "usr", "usr/bin", "usr/sbin", "sbin", "var", "var/log", "etc"):
        L.dir(d)
    L.dir("root", mode=0o700)
    L.dir("tmp", mode=0o1777)
    L.dir("var/tmp", mode=0o1777)
    L.file("etc/passwd", PASSWD)
    L.file("etc/group", GROUP)
    L.file("etc/hostname", "busybox\n")
    L.file("etc/os-release", 'NAME="BusyBox (container test image)"\nID=busybox\n')
    return L


LONG_NAME = "data/long/" + "n" * 60 + "/" + "this-file-name-is-longer-than-one-hundred-characters-" + "x" * 60 + ".txt"
LONG_LINK_TARGET = "/" + LONG_NAME  # absolute target longer than 100 characters (PAX linkpath)

# The expected merged view of the `layered` image (after all 4 layers on busybox), for tests:
#   kind: "file" (content), "dir", "symlink" (target), "fifo", "absent"; mode/uid/gid where they matter;
#   "hardlink_group": paths that must be the same inode (within one layer).
LAYERED = {
    "/data/keep.txt": {"kind": "file", "content": "keep v2\n", "mode": 0o644},      # overwritten in layer 4
    "/data/gone.txt": {"kind": "absent"},                                           # file whiteout (layer 2)
    "/data/olddir": {"kind": "absent"},                                             # dir whiteout (layer 2)
    "/data/olddir/a.txt": {"kind": "absent"},
    "/data/added-in-l2.txt": {"kind": "file", "content": "added in layer 2\n"},
    "/data/opaque": {"kind": "dir", "mode": 0o755},                                 # opaque in layer 3
    "/data/opaque/x.txt": {"kind": "absent"},
    "/data/opaque/y": {"kind": "absent"},
    "/data/opaque/new.txt": {"kind": "file", "content": "new after opaque\n"},
    "/data/f2d": {"kind": "dir", "mode": 0o755},                                    # file -> dir (layer 3)
    "/data/f2d/inside.txt": {"kind": "file", "content": "now a directory\n"},
    "/data/d2f": {"kind": "file", "content": "now a file\n"},                       # dir -> file (layer 3)
    "/data/d2f/inner.txt": {"kind": "absent"},
    "/data/hard/orig.txt": {"kind": "file", "content": "hardlinked content\n", "nlink_min": 3},
    "/data/hard/link.txt": {"kind": "file", "content": "hardlinked content\n"},
    "/data/hardlink2": {"kind": "file", "content": "hardlinked content\n"},
    "/data/rel-link": {"kind": "symlink", "target": "keep.txt"},
    "/data/abs-link": {"kind": "symlink", "target": "/data/keep.txt"},
    "/data/etc-link": {"kind": "symlink", "target": "../etc"},
    "/data/long-link": {"kind": "symlink", "target": LONG_LINK_TARGET},
    "/data/fifo": {"kind": "fifo", "mode": 0o644},
    "/data/xattr.txt": {"kind": "file", "content": "has an xattr\n", "xattrs": {"user.comment": "hello xattr"}},
    "/" + LONG_NAME: {"kind": "file", "content": "long name\n"},
    "/usr/local/bin/suid-tool": {"kind": "file", "mode": 0o4755, "content": "#!/bin/sh\nid -u\n"},
    "/home/app": {"kind": "dir", "mode": 0o750, "uid": 1000, "gid": 1000},
    "/home/app/secret.txt": {"kind": "file", "mode": 0o600, "uid": 1000, "gid": 1000, "content": "s3cret\n"},
    "/usr/local/bin/entry.sh": {"kind": "file", "mode": 0o755},
    "/etc/layered-release": {"kind": "file", "content": "layered 4\n"},
    "/bin/busybox": {"kind": "file", "mode": 0o755},
}
LAYERED_HARDLINK_GROUPS = [["/data/hard/orig.txt", "/data/hard/link.txt", "/data/hardlink2"]]
# No whiteout marker may be visible in the merged tree:
LAYERED_NO_WHITEOUT_MARKERS = ["/data/.wh.gone.txt", "/data/.wh.olddir", "/data/opaque/.wh..wh..opq"]

ENTRY_SH = '#!/bin/sh\necho "entry: $*"\nexec "$@"\n'
LAYERED_CONFIG = {
    "Entrypoint": ["/usr/local/bin/entry.sh"],
    "Cmd": ["echo", "hello from layered"],
    "WorkingDir": "/home/app",
    "User": "app",
    "Env": [f"PATH={BUSYBOX_PATH}", "LAYERED=yes", "EMPTY=", "WITH_EQUALS=a=b=c", "SPACES=two words"],
    "Labels": {"org.example.test": "layered", "org.opencontainers.image.title": "layered"},
    "ExposedPorts": {"8080/tcp": {}},
    "StopSignal": "SIGTERM",
}
# `container run layered` prints "entry: echo hello from layered" then "hello from layered", as uid 1000
# in /home/app.


def layered_layers() -> list[Layer]:
    l1 = Layer("layered 1: populate")
    l1.dir("data")
    l1.file("data/keep.txt", "keep\n")
    l1.file("data/gone.txt", "to be whited out\n")
    l1.dir("data/olddir").file("data/olddir/a.txt", "a\n").dir("data/olddir/sub").file("data/olddir/sub/b.txt", "b\n")
    l1.dir("data/opaque").file("data/opaque/x.txt", "x\n").dir("data/opaque/y").file("data/opaque/y/z.txt", "z\n")
    l1.file("data/f2d", "a file that becomes a directory\n")
    l1.dir("data/d2f").file("data/d2f/inner.txt", "inner\n")
    l1.dir("data/hard")
    l1.file("data/hard/orig.txt", "hardlinked content\n")
    l1.hardlink("data/hard/link.txt", "data/hard/orig.txt")
    l1.hardlink("data/hardlink2", "data/hard/orig.txt")
    l1.symlink("data/rel-link", "keep.txt")
    l1.symlink("data/abs-link", "/data/keep.txt")
    l1.symlink("data/etc-link", "../etc")
    l1.symlink("data/long-link", LONG_LINK_TARGET)
    l1.fifo("data/fifo")
    l1.file("data/xattr.txt", "has an xattr\n", xattrs={"user.comment": "hello xattr"})
    parts = LONG_NAME.split("/")
    for i in range(2, len(parts)):
        l1.dir("/".join(parts[:i]))
    l1.file(LONG_NAME, "long name\n")
    l1.dir("usr/local").dir("usr/local/bin")
    l1.file("usr/local/bin/suid-tool", "#!/bin/sh\nid -u\n", mode=0o4755)
    l1.dir("home/app", mode=0o750, uid=1000, gid=1000)
    l1.file("home/app/secret.txt", "s3cret\n", mode=0o600, uid=1000, gid=1000)

    l2 = Layer("layered 2: whiteouts")
    l2.dir("data")
    l2.whiteout("data/gone.txt")
    l2.whiteout("data/olddir")
    l2.file("data/added-in-l2.txt", "added in layer 2\n")

    l3 = Layer("layered 3: opaque dir, file<->dir replacement")
    l3.dir("data")
    l3.dir("data/opaque")
    l3.file("data/opaque/new.txt", "new after opaque\n")
    l3.opaque("data/opaque")          # deliberately after a sibling: must still apply first
    l3.dir("data/f2d")
    l3.file("data/f2d/inside.txt", "now a directory\n")
    l3.file("data/d2f", "now a file\n")

    l4 = Layer("layered 4: config files, overwrite")
    l4.dir("etc").file("etc/layered-release", "layered 4\n")
    l4.dir("data").file("data/keep.txt", "keep v2\n")
    l4.dir("usr/local/bin").file("usr/local/bin/entry.sh", ENTRY_SH, mode=0o755)
    return [l1, l2, l3, l4]


SHARED_MIDDLE_SIZE = 256 * 1024


def shared_middle_layer() -> Layer:
    # Deterministic, poorly compressible content so that transferring it shows up in byte counts.
    blob = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(SHARED_MIDDLE_SIZE // 32))
    return Layer("shared middle").dir("shared").file("shared/common.bin", blob).file("shared/common.txt", "common\n")


def marker_layer(path: str, content: str, comment: str) -> Layer:
    L = Layer(comment)
    parts = path.split("/")
    for i in range(1, len(parts)):
        L.dir("/".join(parts[:i]))
    return L.file(path, content)


# ------------------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------------------
def _finish(name, layout: OciLayout, layers, config, tag="latest", annotations=None) -> BuiltImage:
    mdig, msize, cdig, cfg = layout.add_image(layers, config, annotations=annotations)
    layout.tag(mdig, msize, MT_OCI_MANIFEST, tag)
    return BuiltImage(name, layout.path, tag, mdig, MT_OCI_MANIFEST, cdig, list(layers), cfg, manifest_size=msize)


def build_all(out_dir: str | Path, *, level: int = 6) -> dict[str, BuiltImage]:
    """Build the fast images (everything but debian) as OCI layouts under out_dir/<name>/."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os_, arch, variant = host_platform()
    bb = busybox_layer()
    images: dict[str, BuiltImage] = {}

    lay = OciLayout(out / "busybox")
    base = lay.add_built_layer(bb, level=level)
    bb_cfg = _image_config(arch, os_, variant, {"Env": [f"PATH={BUSYBOX_PATH}"], "Cmd": ["sh"]})
    images["busybox"] = _finish("busybox", lay, [base], bb_cfg)

    lay = OciLayout(out / "layered")
    lay.copy_blob_from(OciLayout(out / "busybox"), base.digest)
    layers = [base] + [lay.add_built_layer(L, level=level) for L in layered_layers()]
    images["layered"] = _finish("layered", lay, layers, _image_config(arch, os_, variant, dict(LAYERED_CONFIG)))

    mid_layer = shared_middle_layer()
    for who in ("a", "b"):
        lay = OciLayout(out / f"shared-{who}")
        lay.copy_blob_from(OciLayout(out / "busybox"), base.digest)
        mid = lay.add_built_layer(mid_layer, level=level)
        top = lay.add_built_layer(marker_layer(f"shared/{who}.txt", f"only in shared-{who}\n", f"shared-{who} top"),
                                  level=level)
        cfg = _image_config(arch, os_, variant, {"Env": [f"PATH={BUSYBOX_PATH}"], "Cmd": ["cat", f"/shared/{who}.txt"]})
        images[f"shared-{who}"] = _finish(f"shared-{who}", lay, [base, mid, top], cfg)

    lay = OciLayout(out / "zstd")
    zb = lay.add_built_layer(bb, compression="zstd", level=3)
    zm = lay.add_built_layer(marker_layer("etc/compression", "zstd\n", "zstd marker"), compression="zstd", level=3)
    images["zstd"] = _finish("zstd", lay, [zb, zm], _image_config(arch, os_, variant, {
        "Env": [f"PATH={BUSYBOX_PATH}"], "Cmd": ["cat", "/etc/compression"]}))

    images["multiarch"] = _build_multiarch(out / "multiarch", base, OciLayout(out / "busybox"), level)
    images["multiarch-docker"] = _build_multiarch(out / "multiarch-docker", base, OciLayout(out / "busybox"), level,
                                                  docker=True)
    return images


MULTIARCH_PLATFORMS = [("linux", "amd64", ""), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]


def platform_str(os_, arch, variant="") -> str:
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def _build_multiarch(path: Path, base: LayerInfo, base_layout: OciLayout, level: int, *,
                     docker: bool = False) -> BuiltImage:
    """OCI index with an attestation entry; docker=True: a Docker manifest list of Docker schema 2
    manifests (no attestation: Docker lists cannot carry in-toto layers)."""
    lay = OciLayout(path)
    hos, harch, hvar = host_platform()
    children: dict[str, BuiltImage] = {}
    entries = []
    host_digest = None
    for os_, arch, variant in MULTIARCH_PLATFORMS:
        p = platform_str(os_, arch, variant)
        marker = lay.add_built_layer(marker_layer("etc/platform", p + "\n", f"platform marker {p}"), level=level)
        is_host = (os_, arch) == (hos, harch) and (variant or "") in ("", hvar, "v8")
        if is_host:
            lay.copy_blob_from(base_layout, base.digest)
            layers = [base, marker]
            cfg = {"Env": [f"PATH={BUSYBOX_PATH}"], "Cmd": ["cat", "/etc/platform"]}
        else:
            layers = [marker]
            cfg = {"Env": [f"PATH={BUSYBOX_PATH}"], "Cmd": ["/bin/sh"]}
        mdig, msize, cdig, full = lay.add_image(layers, _image_config(arch, os_, variant, cfg), docker=docker)
        mt = MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST
        if docker:
            layers = [LayerInfo(x.digest, x.diff_id, x.size, DOCKER_LAYER_TYPES[x.media_type], x.uncompressed_size,
                                x.comment) for x in layers]
        plat = {"architecture": arch, "os": os_}
        if variant:
            plat["variant"] = variant
        entries.append({"mediaType": mt, "digest": mdig, "size": msize, "platform": plat})
        children[p] = BuiltImage(f"{path.name}[{p}]", path, "", mdig, mt, cdig, layers, full, manifest_size=msize)
        if is_host:
            host_digest = mdig
    if docker:
        idig, isize, _ = lay.put_json({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": entries})
        lay.tag(idig, isize, MT_DOCKER_LIST, "latest")
        return BuiltImage(path.name, path, "latest", idig, MT_DOCKER_LIST, None, [], {}, children,
                          manifest_size=isize)
    # An attestation manifest as buildkit writes them: platform unknown/unknown, in-toto layer.
    stmt = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document",
                       "subject": [], "predicate": {}}, separators=(",", ":")).encode()
    sdig, ssize = lay.put_bytes(stmt)
    att_layer = LayerInfo(sdig, sdig, ssize, MT_IN_TOTO, ssize, "attestation")
    att_cfg = {"architecture": "unknown", "os": "unknown", "config": {},
               "rootfs": {"type": "layers", "diff_ids": [sdig]}}
    cdig, csize, _ = lay.put_json(att_cfg)
    att_manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                    "config": {"mediaType": MT_OCI_CONFIG, "digest": cdig, "size": csize},
                    "layers": [{"mediaType": MT_IN_TOTO, "digest": sdig, "size": ssize,
                                "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]}
    adig, asize, _ = lay.put_json(att_manifest)
    ann = {"vnd.docker.reference.type": "attestation-manifest"}
    if host_digest:
        ann["vnd.docker.reference.digest"] = host_digest
    entries.append({"mediaType": MT_OCI_MANIFEST, "digest": adig, "size": asize,
                    "platform": {"architecture": "unknown", "os": "unknown"}, "annotations": ann})
    children["unknown/unknown"] = BuiltImage("multiarch[attestation]", path, "", adig, MT_OCI_MANIFEST, cdig,
                                             [att_layer], att_cfg, manifest_size=asize)
    idig, isize, _ = lay.put_json({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries})
    lay.tag(idig, isize, MT_OCI_INDEX, "latest")
    return BuiltImage("multiarch", path, "latest", idig, MT_OCI_INDEX, None, [], {}, children, manifest_size=isize)


# ------------------------------------------------------------------------------------------------------------
# Debian minbase (slow, cached)
# ------------------------------------------------------------------------------------------------------------
DEBIAN_BUILDER_VERSION = "1"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("CONTAINER_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_EXCLUDE_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/cache/apt/archives", "var/lib/apt/lists",
                       "var/log")
DEBIAN_DOC_WHITEOUTS = ["usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian"]
DEBIAN_CONFIG = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                 "Cmd": ["bash"]}


def cache_dir() -> Path:
    return Path(os.environ.get("CONTAINER_TEST_CACHE") or Path.home() / ".cache" / "container-tests")


def debian_mirror_reachable(mirror: str = DEBIAN_MIRROR, timeout: float = 5.0) -> bool:
    try:
        req = urllib.request.Request(f"{mirror}/dists/{DEBIAN_SUITE}/Release", method="HEAD")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(req, timeout=timeout).close()
        return True
    except OSError:
        return False


def debootstrap_rootfs(cache: Path | None = None, log=None) -> Path:
    """The debootstrap minbase rootfs, made once (about 40 s on these machines) and kept in the cache."""
    cache = cache or cache_dir()
    d = cache / f"debian-{DEBIAN_SUITE}-minbase"
    rootfs = d / "rootfs"
    if (d / "rootfs.complete").exists():
        return rootfs
    d.mkdir(parents=True, exist_ok=True)
    partial = d / "rootfs.partial"
    if partial.exists():
        shutil.rmtree(partial)
    logf = open(d / "debootstrap.log", "wb")
    t0 = time.monotonic()
    r = subprocess.run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(partial), DEBIAN_MIRROR],
                       stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    logf.close()
    if r.returncode != 0:
        raise RuntimeError(f"debootstrap failed (exit {r.returncode}); see {d / 'debootstrap.log'}")
    if rootfs.exists():
        shutil.rmtree(rootfs)
    os.replace(partial, rootfs)
    (d / "rootfs.complete").write_text(f"{time.monotonic() - t0:.1f}\n")
    return rootfs


def _debian_base_writer(rootfs: Path):
    excl = {e.strip("/") for e in DEBIAN_EXCLUDE_DIRS}

    def filt(ti: tarfile.TarInfo):
        name = ti.name
        for e in excl:
            if name.startswith(e + "/"):
                return None               # keep the directory itself, drop what is under it
        if ti.isdev():
            return None
        ti.mtime = min(int(ti.mtime), MTIME)
        ti.uname = _UNAMES.get(ti.uid, "")
        ti.gname = _UNAMES.get(ti.gid, "")
        return ti

    def write(tf: tarfile.TarFile) -> None:
        for entry in sorted(os.listdir(rootfs)):
            tf.add(rootfs / entry, arcname=entry, recursive=True, filter=filt)
    return write


def build_debian(cache: Path | None = None, *, level: int = 1) -> BuiltImage:
    """debian:bookworm minbase in 3 layers, as an OCI layout in the cache (built once)."""
    cache = cache or cache_dir()
    d = cache / f"debian-{DEBIAN_SUITE}-minbase"
    oci = d / f"oci-v{DEBIAN_BUILDER_VERSION}"
    meta = d / f"oci-v{DEBIAN_BUILDER_VERSION}.json"
    if meta.exists() and oci.exists():
        return _built_from_json(json.loads(meta.read_text()))
    import fcntl
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "build.lock", "w") as lockf:      # one builder at a time (tests, bench, demo)
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if meta.exists() and oci.exists():
            return _built_from_json(json.loads(meta.read_text()))
        return _build_debian_locked(cache, d, oci, meta, level)


def _build_debian_locked(cache: Path, d: Path, oci: Path, meta: Path, level: int) -> BuiltImage:
    rootfs = debootstrap_rootfs(cache)
    tmp = d / f"oci-v{DEBIAN_BUILDER_VERSION}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    lay = OciLayout(tmp)
    l1 = lay.add_layer(_debian_base_writer(rootfs), level=level, comment="debootstrap --variant=minbase bookworm")
    docs = Layer("remove docs: opaque usr/share/doc, whiteouts for man, info, locale, lintian")
    docs.dir("usr").dir("usr/share").dir("usr/share/doc").opaque("usr/share/doc")
    docs.file("usr/share/doc/README", "Documentation removed by the container test image builder.\n")
    for w in DEBIAN_DOC_WHITEOUTS:
        if (rootfs / w).exists():
            docs.whiteout(w)
    l2 = lay.add_built_layer(docs, level=level)
    conf = Layer("stand-in config")
    conf.dir("etc").file("etc/debian-stand-in", "debian bookworm minbase built by tools/images.py\n")
    l3 = lay.add_built_layer(conf, level=level)
    os_, arch, variant = host_platform()
    img = _finish("debian", lay, [l1, l2, l3], _image_config(arch, os_, variant, dict(DEBIAN_CONFIG)), tag="bookworm")
    if oci.exists():
        shutil.rmtree(oci)
    os.replace(tmp, oci)
    img.oci_dir = oci
    meta.write_text(json.dumps(_built_to_json(img)))
    return img


def _built_to_json(img: BuiltImage) -> dict:
    return {"name": img.name, "oci_dir": str(img.oci_dir), "tag": img.tag, "manifest_digest": img.manifest_digest,
            "media_type": img.media_type, "config_digest": img.config_digest, "config": img.config,
            "manifest_size": img.manifest_size, "layers": [vars(x) for x in img.layers]}


def _built_from_json(d: dict) -> BuiltImage:
    return BuiltImage(d["name"], Path(d["oci_dir"]), d["tag"], d["manifest_digest"], d["media_type"],
                      d["config_digest"], [LayerInfo(**x) for x in d["layers"]], d["config"],
                      manifest_size=d["manifest_size"])


# ------------------------------------------------------------------------------------------------------------
# Pushing
# ------------------------------------------------------------------------------------------------------------
@dataclass
class PushedImage:
    """An image as the registry holds it (digests read back from the registry, not assumed)."""
    name: str
    ref: str                  # "127.0.0.1:PORT/test/busybox:latest"
    host: str
    repo: str
    tag: str
    manifest_digest: str      # index digest for multiarch
    media_type: str
    manifest: dict
    config_digest: str | None
    layers: list[LayerInfo]   # for an index: empty (see .built.platforms)
    built: BuiltImage
    fmt: str = "oci"

    @property
    def diff_ids(self) -> list[str]:
        return [x.diff_id for x in self.layers]

    @property
    def layer_digests(self) -> list[str]:
        return [x.digest for x in self.layers]

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.manifest_digest}"

    @property
    def platforms(self) -> dict[str, BuiltImage]:
        return self.built.platforms

    @property
    def config(self) -> dict:
        return self.built.config


_POLICY = '{"default":[{"type":"insecureAcceptAnything"}]}'


def _policy_file() -> str:
    p = Path(tempfile.gettempdir()) / "container-tests-skopeo-policy.json"
    if not p.exists() or p.read_text() != _POLICY:
        tmp = p.with_name(p.name + f".{os.getpid()}")
        tmp.write_text(_POLICY)
        os.replace(tmp, p)
    return str(p)


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                                                      "no_proxy")}
    return env


def skopeo(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(["skopeo", "--policy", _policy_file(), *args], capture_output=True, text=True,
                       env=_clean_env(), timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _get_manifest(host: str, repo: str, ref: str) -> tuple[bytes, str, str]:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_ALL})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as r:
        body = r.read()
        return body, r.headers.get("Content-Type", ""), r.headers.get("Docker-Content-Digest", "")


def _http(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        return opener.open(req, timeout=60)
    except urllib.error.HTTPError as e:
        return e


def push_raw(image: BuiltImage, registry_host: str, repo: str, tag: str = "latest") -> None:
    """Push the layout's bytes as they are through the registry API (no skopeo): blobs, child manifests by
    digest, then the top manifest or index by tag. For what skopeo will not read (a Docker manifest list
    in an OCI layout)."""
    lay = OciLayout.__new__(OciLayout)
    lay.path = Path(image.oci_dir)
    base = f"http://{registry_host}/v2/{repo}"

    def put_blob(digest: str) -> None:
        r = _http("HEAD", f"{base}/blobs/{digest}")
        if r.status == 200:
            return
        r = _http("POST", f"{base}/blobs/uploads/", b"", {"Content-Length": "0"})
        if r.status != 202:
            raise RuntimeError(f"push_raw: start upload {digest}: HTTP {r.status}")
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = f"http://{registry_host}{loc}"
        data = lay.blob_path(digest).read_bytes()
        r = _http("PUT", loc + ("&" if "?" in loc else "?") + f"digest={digest}", data,
                  {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if r.status != 201:
            raise RuntimeError(f"push_raw: upload {digest}: HTTP {r.status} {r.read()[:300]!r}")

    def put_manifest(digest: str, ref: str) -> None:
        data = lay.blob_path(digest).read_bytes()
        m = json.loads(data)
        if "manifests" in m:
            for child in m["manifests"]:
                put_manifest(child["digest"], child["digest"])
        else:
            for desc in [m["config"], *m.get("layers", [])]:
                put_blob(desc["digest"])
        r = _http("PUT", f"{base}/manifests/{ref}", data, {"Content-Type": m["mediaType"]})
        if r.status != 201:
            raise RuntimeError(f"push_raw: manifest {ref}: HTTP {r.status} {r.read()[:300]!r}")

    put_manifest(image.manifest_digest, tag)


def push(image: BuiltImage, registry_host: str, repo: str, tag: str = "latest", fmt: str = "oci") -> PushedImage:
    """skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG; fmt "oci" keeps the manifest bytes (digests preserved),
    "v2s2" converts to Docker schema 2 (new manifest and config digests: read back from the registry).
    A Docker manifest list (multiarch-docker) is pushed byte for byte with push_raw."""
    if image.media_type == MT_DOCKER_LIST:
        if fmt != "oci":
            raise ValueError("a Docker manifest list is pushed as it is (fmt='oci')")
        push_raw(image, registry_host, repo, tag)
        return _read_back(image, registry_host, repo, tag, fmt)
    args = ["copy", "-q", "--dest-tls-verify=false"]
    if image.media_type in (MT_OCI_INDEX, MT_DOCKER_LIST):
        args.append("--all")
    if fmt == "oci":
        args.append("--preserve-digests")
    elif fmt == "v2s2":
        args += ["--format", "v2s2"]
    else:
        raise ValueError(f"fmt must be oci or v2s2, not {fmt!r}")
    skopeo(*args, image.oci_ref, f"docker://{registry_host}/{repo}:{tag}")
    return _read_back(image, registry_host, repo, tag, fmt)


def _read_back(image: BuiltImage, registry_host: str, repo: str, tag: str, fmt: str) -> PushedImage:
    body, ctype, digest = _get_manifest(registry_host, repo, tag)
    digest = digest or "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    layers: list[LayerInfo] = []
    cdig = None
    if "config" in manifest:
        cdig = manifest["config"]["digest"]
        for built, desc in zip(image.layers, manifest["layers"]):
            layers.append(LayerInfo(desc["digest"], built.diff_id, desc["size"], desc["mediaType"],
                                    built.uncompressed_size, built.comment))
    return PushedImage(image.name, f"{registry_host}/{repo}:{tag}", registry_host, repo, tag, digest, ctype,
                       manifest, cdig, layers, image, fmt)


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------
def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build (and push) the container test images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build OCI layouts")
    b.add_argument("--out", required=True)
    b.add_argument("--debian", action="store_true", help="also build (or reuse the cached) debian image")
    p = sub.add_parser("push", help="build and push: test/<name>:latest, library/busybox:latest, "
                                    "test/busybox-v2s2:latest, library/debian:bookworm (--debian)")
    p.add_argument("--registry", required=True, help="HOST:PORT")
    p.add_argument("--out", default=None, help="build dir (default: a temp dir)")
    p.add_argument("--debian", action="store_true")
    p.add_argument("--only", default=None, help="comma-separated image names (busybox,layered,...,debian)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="container-images-"))
    only = set(args.only.split(",")) if getattr(args, "only", None) else None
    t0 = time.monotonic()
    fast_wanted = only is None or bool(only - {"debian"})
    images = build_all(out) if fast_wanted else {}
    if args.debian or (only and "debian" in only):
        images["debian"] = build_debian()
    if only:
        images = {k: v for k, v in images.items() if k in only}
    print(f"built {', '.join(images)} in {time.monotonic() - t0:.2f}s under {out}", file=sys.stderr)
    if args.cmd == "build":
        for name, img in images.items():
            print(f"{name}\t{img.oci_ref}\t{img.manifest_digest}")
        return 0
    for name, img in images.items():
        targets = [(f"test/{name}", "latest", "oci")]
        if name == "busybox":
            targets += [("library/busybox", "latest", "oci"), ("test/busybox-v2s2", "latest", "v2s2")]
        if name == "debian":
            targets = [("library/debian", "bookworm", "oci")]
        for repo, tag, fmt in targets:
            pi = push(img, args.registry, repo, tag, fmt)
            print(f"{pi.ref}\t{pi.manifest_digest}\t{fmt}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
