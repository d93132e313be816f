"""Raw tar generator for tests: 512-byte headers with arbitrary names, types, link names and PAX
records, so we can build archives tarfile would refuse to write (`..`, absolute names, NUL-free
garbage, bad checksums, sparse types, ...). Also a minimal OCI image layout writer.

    tar(file("a", b"x"), dir("d"), symlink("l", "/etc"), hardlink("h", "a"), end())
"""

from __future__ import annotations

import gzip as _gzip
import hashlib
import io
import json
import shutil
from pathlib import Path


def _b(s) -> bytes:
    return s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogateescape")


def _oct(v: int, width: int) -> bytes:
    if v < 0 or v >= 8 ** (width - 1):
        # base-256 (GNU) for big / negative values
        raw = (v % (1 << (8 * width))).to_bytes(width, "big")
        return bytes([raw[0] | 0x80]) + raw[1:] if v >= 0 else raw
    return b"%0*o\0" % (width - 1, v)


def header(name, type=b"0", *, size=0, mode=0o644, uid=0, gid=0, mtime=1_600_000_000, linkname=b"",
           devmajor=0, devminor=0, magic=b"ustar\x0000", prefix=b"", uname=b"root", gname=b"root",
           chksum: int | None = None, raw_size: bytes | None = None) -> bytes:
    name, linkname, prefix = _b(name), _b(linkname), _b(prefix)
    h = bytearray(512)
    h[0:100] = name[:100].ljust(100, b"\0")
    h[100:108] = _oct(mode, 8)
    h[108:116] = _oct(uid, 8)
    h[116:124] = _oct(gid, 8)
    h[124:136] = raw_size if raw_size is not None else _oct(size, 12)
    h[136:148] = _oct(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = _b(type)[:1]
    h[157:257] = linkname[:100].ljust(100, b"\0")
    h[257:265] = magic[:8].ljust(8, b"\0")
    h[265:297] = _b(uname)[:32].ljust(32, b"\0")
    h[297:329] = _b(gname)[:32].ljust(32, b"\0")
    h[329:337] = _oct(devmajor, 8)
    h[337:345] = _oct(devminor, 8)
    h[345:500] = prefix[:155].ljust(155, b"\0")
    c = sum(h) if chksum is None else chksum
    h[148:156] = b"%06o\0 " % c
    return bytes(h)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def pax_records(records: dict) -> bytes:
    out = b""
    for k, v in records.items():
        k, v = _b(k), _b(v)
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n = len(str(n).encode()) + len(body)
        out += str(n).encode() + body
    return out


def pax(records: dict, *, type=b"x", name=b"././@PaxHeader") -> bytes:
    data = pax_records(records)
    return header(name, type, size=len(data)) + pad(data)


def gnu_long(kind: bytes, value) -> bytes:
    data = _b(value) + b"\0"
    return header(b"././@LongLink", kind, size=len(data), magic=b"ustar  \0") + pad(data)


def entry(name, type=b"0", data: bytes = b"", *, pax_extra: dict | None = None, **kw) -> bytes:
    name = _b(name)
    records = dict(pax_extra or {})
    if len(name) > 100 and "path" not in records and b"path" not in records:
        records["path"] = name
    link = _b(kw.get("linkname", b""))
    if len(link) > 100:
        records["linkpath"] = link
    out = pax(records) if records else b""
    return out + header(name, type, size=len(data), **kw) + pad(data)


def file(name, data: bytes = b"", *, mode=0o644, **kw) -> bytes:
    return entry(name, b"0", _b(data), mode=mode, **kw)


def dir(name, *, mode=0o755, **kw) -> bytes:  # noqa: A001 - test helper vocabulary
    return entry(name, b"5", mode=mode, **kw)


def symlink(name, target, **kw) -> bytes:
    return entry(name, b"2", linkname=target, mode=kw.pop("mode", 0o777), **kw)


def hardlink(name, target, **kw) -> bytes:
    return entry(name, b"1", linkname=target, **kw)


def chardev(name, major=1, minor=3, **kw) -> bytes:
    return entry(name, b"3", devmajor=major, devminor=minor, **kw)


def blockdev(name, major=7, minor=0, **kw) -> bytes:
    return entry(name, b"4", devmajor=major, devminor=minor, **kw)


def fifo(name, **kw) -> bytes:
    return entry(name, b"6", **kw)


def end() -> bytes:
    return b"\0" * 1024


def tar(*parts: bytes, eof: bool = True) -> bytes:
    return b"".join(parts) + (end() if eof else b"")


# -- a minimal OCI image layout (for umoci) ------------------------------------------------------

def _put(blobs: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    (blobs / h).write_bytes(data)
    return "sha256:" + h


def oci_layout(dir_: Path, layers: list[bytes], *, tag: str = "latest", compress: bool = True) -> dict:
    """Write an OCI image layout with the given uncompressed layer tars; returns
    {"diff_ids": [...], "layers": [(digest, media_type, blob_bytes)]}."""
    dir_ = Path(dir_)
    blobs = dir_ / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (dir_ / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    diff_ids, descs, out_layers = [], [], []
    for t in layers:
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
        blob = _gzip.compress(t, mtime=0) if compress else t
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        d = _put(blobs, blob)
        descs.append({"mediaType": mt, "digest": d, "size": len(blob)})
        out_layers.append((d, mt, blob))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd = _put(blobs, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": len(config)},
                           "layers": descs}).encode()
    md = _put(blobs, manifest)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (dir_ / "index.json").write_text(json.dumps(index))
    return {"diff_ids": diff_ids, "layers": out_layers}


def rpm_header(tags: dict[int, object]) -> bytes:
    """An rpm header blob as rpmdb.sqlite stores it: index count, data length, entries, data
    (ints as INT32, everything else as STRING)."""
    import struct

    entries, store = [], b""
    for tag, v in tags.items():
        if isinstance(v, int):
            store += b"\0" * (-len(store) % 4)
            entries.append(struct.pack(">iiii", tag, 4, len(store), 1))
            store += struct.pack(">i", v)
        else:
            entries.append(struct.pack(">iiii", tag, 6, len(store), 1))
            store += str(v).encode() + b"\0"
    return struct.pack(">ii", len(entries), len(store)) + b"".join(entries) + store


def rpmdb(path: Path, packages: list[dict[int, object]]) -> bytes:
    """An rpmdb.sqlite (written at path, returned as bytes) whose Packages table holds these headers
    (tags: 1000 NAME, 1001 VERSION, 1002 RELEASE, 1003 EPOCH, 1022 ARCH, 1044 SOURCERPM)."""
    import sqlite3

    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
        con.executemany("INSERT INTO Packages (blob) VALUES (?)", [(rpm_header(h),) for h in packages])
    con.close()
    return path.read_bytes()


def seed_bytes(n: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(b"%d" % seed).digest() * (n // 32 + 1))[:n]


# -- into a store ----------------------------------------------------------------------------------
MT_TAR = "application/vnd.oci.image.layer.v1.tar"


def add_layer(store, blob: bytes, media_type: str = MT_TAR) -> str:
    """Unpack a layer blob into an engine Store the way pull does (minus the registry) and record it;
    returns its diff_id."""
    import os

    from container.engine.layer.compression import open_layer_stream
    from container.engine.layer.unpack import unpack_layer
    from container.schema import models as m
    from container.schema.db import write_txn

    raw = open_layer_stream(io.BytesIO(blob), media_type)
    data = raw.read()  # small test layers: hash the whole uncompressed stream
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    dest = store.layer_path(diff_id)
    if not dest.exists():
        tmp = store.layers_dir / (".tmp-" + diff_id[7:19])
        tmp.mkdir(parents=True)
        stats = unpack_layer(io.BytesIO(data), tmp)
        os.rename(tmp, dest)
        with write_txn():
            m.Layer.insert(diff_id=diff_id, size=stats.size, entries=stats.entries).on_conflict_ignore().execute()
    return diff_id


def load_layout(cli, tmp_path: Path, name: str, layers: list[bytes], *, root=None, env: dict | None = None) -> None:
    """Write an OCI layout of `layers` named `name` (the containerd annotation) under tmp_path and
    `container load` it (into `root` when given), checked."""
    d = Path(tmp_path) / ("layout-" + name.replace("/", "_").replace(":", "_"))
    shutil.rmtree(d, ignore_errors=True)
    oci_layout(d, layers)
    idx = json.loads((d / "index.json").read_text())
    idx["manifests"][0]["annotations"] = {"io.containerd.image.name": name}
    (d / "index.json").write_text(json.dumps(idx))
    cli("load", "-i", str(d), root=root, env=env, check=True)
