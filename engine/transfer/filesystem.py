"""Root filesystems as tarballs: export a container's merged tree, import a tarball as an image.

export: the container's filesystem as the container sees it. With the overlay backend that is
the snapshot (snapshots/<chain id>/, the image's layers merged) with the container's upper/ over it:
an upper entry wins, a 0:0 character device in upper/ is an overlayfs whiteout (the lower entry is
deleted), a directory marked opaque (trusted.overlay.opaque or user.overlay.opaque = y) hides the
lower directory's contents. With the copy backend it is rootfs/. Hard links inside the tree stay
hard links; owners are numeric (uname/gname empty), as docker export writes them.

import: a root filesystem tarball (plain, gzip or zstd) becomes a one-layer image. The layer blob
is the file as given (not recompressed), unpacked and verified through the same path as load and
pull; the config carries the host platform, rootfs.diff_ids and one history entry; the manifest is
an OCI manifest. Prints (the caller does) the image id, sha256:<config digest>, like docker.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path

from container.engine.errors import ContainerError
from container.engine.layer.owners import ROOTLESS_XATTR, decode_resource

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


# -- export ---------------------------------------------------------------------------------------
def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for key in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, key, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _xattrs(path: str) -> tuple[list[tuple[str, bytes]], bytes | None]:
    """(the xattrs of `path` an export carries, its rootless owner record or None). Carried:
    security.capability (docker's archive) and user.* (podman's), not the overlay's own
    (user.overlay.*) nor this store's bookkeeping (user.container.*, the owner record)."""
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return [], None
    out, owner = [], None
    for k in sorted(keys):
        keep = k == "security.capability" or (k.startswith("user.") and not k.startswith(_SKIP_XATTRS))
        if not keep and k != ROOTLESS_XATTR:
            continue
        try:
            v = os.getxattr(path, k, follow_symlinks=False)
        except OSError:
            continue
        if keep:
            out.append((k, v))
        else:
            owner = v
    return out, owner


_SKIP_XATTRS = ("user.overlay.", "user.container.", ROOTLESS_XATTR)


class _Exporter:
    def __init__(self, out: BinaryIO):
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)

    def add(self, path: str, arcname: str) -> None:
        ti = self.tf.gettarinfo(path, arcname)
        ti.uname = ti.gname = ""
        xattrs, owner = _xattrs(path)
        if owner is not None:       # a rootless store's record of the owner its unpack could not give
            try:
                ru, rg = decode_resource(owner)
            except ValueError:
                ru = rg = 0
            # (a 0 field: the file's own id; an id the file no longer has, 0 as the unpack left it,
            # was given in the container since, and copy-up kept the record: the file's wins)
            ti.uid = ru if ru and ti.uid == 0 else ti.uid
            ti.gid = rg if rg and ti.gid == 0 else ti.gid
        if xattrs:
            # bytes as they are (tarfile writes hdrcharset=BINARY for what is not UTF-8), as GNU tar
            ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs}
        if ti.isreg():
            with open(path, "rb") as f:
                self.tf.addfile(ti, f)
        else:
            self.tf.addfile(ti)

    def walk(self, layers: list[str], rel: str) -> None:
        """Write the directory `rel` merged from `layers` (top first: upper, then the snapshot)."""
        seen: dict[str, list[str]] = {}
        order: list[str] = []
        for top in layers:
            d = os.path.join(top, rel) if rel else top
            try:
                names = sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                if n not in seen:
                    seen[n] = []
                    order.append(n)
                seen[n].append(top)
        for n in sorted(order):
            child = f"{rel}/{n}" if rel else n
            tops = seen[n]
            first = os.path.join(tops[0], child)
            st = os.lstat(first)
            if _is_whiteout(st) and tops[0] == layers[0] and len(layers) > 1:
                continue
            self.add(first, child)
            if stat.S_ISDIR(st.st_mode):
                below: list[str] = []
                if not (tops[0] == layers[0] and len(layers) > 1 and _is_opaque(first)):
                    for t in tops[1:]:
                        if stat.S_ISDIR(os.lstat(os.path.join(t, child)).st_mode):
                            below.append(t)
                        else:
                            break
                self.walk([tops[0]] + below, child)

    def close(self) -> None:
        self.tf.close()


def export_container(info: Any, snapshot: Path | None, out: BinaryIO) -> None:
    """Write container `info`'s (engine/containers.ContainerInfo) merged filesystem as a tar to `out`."""
    cdir = info.path
    rootfs = os.path.join(cdir, "rootfs")
    upper = os.path.join(cdir, "upper")
    if info.rootfs_mode == "copy" and os.path.isdir(rootfs):
        layers = [rootfs]
    elif snapshot is not None and snapshot.is_dir():
        layers = ([upper] if os.path.isdir(upper) else []) + [str(snapshot)]
    else:
        raise ContainerError(f"container {info.name}: its filesystem is gone (snapshot missing; see `container fsck`)")
    ex = _Exporter(out)
    try:
        ex.walk(layers, "")
    except OSError as e:
        raise ContainerError(f"export {info.name}: {e.strerror or e}") from None
    ex.close()


# -- import ---------------------------------------------------------------------------------------
def _media_type(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head == b"\x28\xb5\x2f\xfd":
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return "application/vnd.oci.image.layer.v1.tar"


def import_rootfs(store, path: Path | None, name: str | None, *, stream: Any = None,
                  message: str = "") -> str:
    """A one-layer image from the tarball at `path` (or read from `stream`), tagged `name` when given;
    returns the image id (config digest)."""
    from container.cas import Digest
    from container.engine.image import platform
    from container.engine.image.manifest import Manifest, parse_config, parse_manifest
    from container.engine.image.reference import parse
    from container.engine.layer.stream import unpack_blob
    from container.engine.transfer import archive, load as _load

    ref = parse(name) if name else None
    if ref is not None and ref.digest:
        raise ContainerError(f"import: {name}: a digest cannot be a tag")
    store.ensure()
    store.db()
    spool = None
    try:
        if stream is not None:
            spool = archive.spool(store, stream, None, decompress=False)
        src_path = spool or Path(str(path))
        if not src_path.is_file():
            raise ContainerError(f"import: {src_path}: no such file")
        mt = _media_type(src_path)
        h = hashlib.sha256()
        with open(src_path, "rb") as f:
            _stats, diff_id = unpack_blob(_Hashing(f, h), mt, None)
        size = src_path.stat().st_size
        blob = "sha256:" + h.hexdigest()
        plat = platform.host()
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        config: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os, "created": now,
                                  "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                                  "history": [{"created": now, "created_by": "container import",
                                               "comment": message or f"Imported from {path or '-'}"}]}
        if plat.variant:
            config["variant"] = plat.variant
        config_raw = json.dumps(config, separators=(",", ":")).encode()
        config_digest = "sha256:" + hashlib.sha256(config_raw).hexdigest()
        manifest_raw = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config_raw)},
            "layers": [{"mediaType": mt, "digest": blob, "size": size}]}, separators=(",", ":")).encode()
        m = parse_manifest(manifest_raw, None)
        assert isinstance(m, Manifest)
        img = _load.Image("sha256:" + hashlib.sha256(manifest_raw).hexdigest(), manifest_raw, m, config_raw,
                          parse_config(config_raw), {blob: src_path.name}, [ref] if ref else [])
        Digest.parse(blob)
        with store.lock(exclusive=False):
            _load.store_images(store, archive.FileSource(src_path), [img])
        return config_digest
    finally:
        if spool is not None:
            spool.unlink(missing_ok=True)


class _Hashing:
    def __init__(self, f: Any, h: Any):
        self.f, self.h = f, h

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def readable(self) -> bool:
        return True
