"""Benchmark images: deterministic app layers on top of a base image, a zstd variant, a big layer.

Everything is written into one OCI image layout (cached; rebuilt only when missing) and pushed
with `skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG`:

    bench/busybox:1   busybox-like, 1 layer            (from tools/images.py, or a fallback here)
    bench/debian:1    debootstrap minbase, 3 layers     (from tools/images.py: whiteouts, opaque dir)
    bench/app:1       debian + 2 app layers (~100 MB more, ~6k entries, mixed small/large, part compressible)
    bench/app:2       the same but for the top layer (a second version: shares all but one layer)
    bench/appz:1      bench/app:1 with every layer recompressed as tar+zstd
    bench/big:1       busybox + one ~1 GB mostly incompressible layer (--quick: 64 MB)

Content comes from seeded PRNGs so every machine builds byte-identical layers (same digests).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MTIME = 1700000000

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
         "et dolore magna aliqua def class return import from self none true false if else for while in "
         "package module function value error result buffer stream layer image registry digest").split()


# -- OCI layout helpers --------------------------------------------------------------------------------
class Layout:
    """A minimal OCI image layout writer/reader (blobs/sha256, index.json with ref names)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / "oci-layout").exists():
            (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        if not (self.path / "index.json").exists():
            self._write_index({"schemaVersion": 2, "manifests": []})

    def blob_path(self, digest: str) -> Path:
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def put(self, data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        p = self.blob_path(d)
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return d

    def put_file(self, src: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        d = "sha256:" + h.hexdigest()
        p = self.blob_path(d)
        if p.exists():
            src.unlink()
        else:
            os.replace(src, p)
        return d, p.stat().st_size

    def read_json(self, digest: str) -> dict:
        return json.loads(self.blob_path(digest).read_bytes())

    def _index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def _write_index(self, idx: dict) -> None:
        tmp = self.path / "index.json.tmp"
        tmp.write_text(json.dumps(idx, indent=1))
        os.replace(tmp, self.path / "index.json")

    def tags(self) -> dict[str, dict]:
        return {m.get("annotations", {}).get("org.opencontainers.image.ref.name"): m
                for m in self._index()["manifests"]}

    def manifest(self, tag: str) -> dict:
        return self.read_json(self.tags()[tag]["digest"])

    def set_tag(self, tag: str, manifest: dict) -> str:
        data = json.dumps(manifest, separators=(",", ":")).encode()
        d = self.put(data)
        idx = self._index()
        idx["manifests"] = [m for m in idx["manifests"]
                            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
        idx["manifests"].append({"mediaType": MT_MANIFEST, "digest": d, "size": len(data),
                                 "annotations": {"org.opencontainers.image.ref.name": tag}})
        self._write_index(idx)
        return d


@dataclass
class LayerBlob:
    digest: str
    diff_id: str
    size: int
    media_type: str


class _HashingWriter(io.RawIOBase):
    """Write-through: sha256 of the plain tar (diff_id) and of the compressed output (digest)."""

    def __init__(self, out, compress: str, level: int):
        self.out = out
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        if compress == "gzip":
            self.comp = zlib.compressobj(level, zlib.DEFLATED, 31)
        elif compress == "zstd":
            import zstandard
            self.comp = zstandard.ZstdCompressor(level=level).compressobj()
        else:
            self.comp = None

    def writable(self):
        return True

    def write(self, b):
        b = bytes(b)
        self.diff.update(b)
        self._emit(self.comp.compress(b) if self.comp else b)
        return len(b)

    def _emit(self, c):
        if c:
            self.blob.update(c)
            self.out.write(c)

    def finish(self):
        if self.comp:
            self._emit(self.comp.flush())


def write_layer(layout: Layout, build, compress: str = "gzip", level: int | None = None) -> LayerBlob:
    """`build(tar)` adds members to a tarfile; returns the stored blob."""
    tmp = layout.path / "blobs" / "layer.tmp"
    if level is None:
        level = 6 if compress == "gzip" else 3
    with open(tmp, "wb") as f:
        w = _HashingWriter(f, compress, level)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 16) as tar:
            build(tar)
        w.finish()
    d, size = layout.put_file(tmp)
    mt = {"gzip": MT_GZIP, "zstd": MT_ZSTD, "none": MT_TAR}[compress]
    return LayerBlob(d, "sha256:" + w.diff.hexdigest(), size, mt)


def recompress(layout: Layout, layer: dict, compress: str) -> LayerBlob:
    """Re-encode an existing layer blob (gzip/plain) as `compress`; the diff_id is unchanged."""
    src = layout.blob_path(layer["digest"])
    tmp = layout.path / "blobs" / "recompress.tmp"
    with open(src, "rb") as raw, open(tmp, "wb") as f:
        stream = gzip.GzipFile(fileobj=raw) if layer["mediaType"].endswith("gzip") else raw
        w = _HashingWriter(f, compress, 3 if compress == "zstd" else 6)
        while chunk := stream.read(1 << 20):
            w.write(chunk)
        w.finish()
    d, size = layout.put_file(tmp)
    return LayerBlob(d, "sha256:" + w.diff.hexdigest(), size, MT_ZSTD if compress == "zstd" else MT_GZIP)


def compose(layout: Layout, tag: str, base_tag: str | None, layers: list[LayerBlob], *,
            replace_layers: list[LayerBlob] | None = None, cmd=("/bin/sh",), history_note="bench") -> str:
    """Write image `tag` = base layers (or `replace_layers`) + `layers`; returns the manifest digest."""
    if base_tag:
        bm = layout.manifest(base_tag)
        bc = layout.read_json(bm["config"]["digest"])
        base = [LayerBlob(lay["digest"], did, lay["size"], lay["mediaType"])
                for lay, did in zip(bm["layers"], bc["rootfs"]["diff_ids"])]
        config = dict(bc)
    else:
        base = []
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}}
    if replace_layers is not None:
        base = replace_layers
    all_layers = base + layers
    config["config"] = dict(config.get("config") or {})
    config["config"]["Cmd"] = list(cmd)
    config["created"] = "2023-11-14T22:13:20Z"
    config["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in all_layers]}
    config["history"] = [{"created": "2023-11-14T22:13:20Z", "created_by": f"{history_note} layer {i}"}
                         for i in range(len(all_layers))]
    cdata = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    cd = layout.put(cdata)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": cd, "size": len(cdata)},
                "layers": [{"mediaType": lay.media_type, "digest": lay.digest, "size": lay.size}
                           for lay in all_layers]}
    return layout.set_tag(tag, manifest)


# -- content generators --------------------------------------------------------------------------------
def _text_pool(rng: random.Random, n: int = 1 << 20) -> bytes:
    parts, size = [], 0
    while size < n:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "\n"
        parts.append(line)
        size += len(line)
    return "".join(parts).encode()[:n]


def _add_dir(tar: tarfile.TarFile, name: str, mode=0o755) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, MTIME
    tar.addfile(ti)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode=0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, MTIME
    tar.addfile(ti, io.BytesIO(data))


def _add_big(tar: tarfile.TarFile, name: str, size: int, rng: random.Random, zero_fraction: float) -> None:
    """A large file: random 1 MiB chunks with about `zero_fraction` of them zero-filled (streamed)."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = size, 0o644, MTIME

    class _Gen(io.RawIOBase):
        left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left, 1 << 20)
            if n <= 0:
                return 0
            chunk = bytes(n) if rng.random() < zero_fraction else rng.randbytes(n)
            b[:n] = chunk
            self.left -= n
            return n

    tar.addfile(ti, io.BufferedReader(_Gen(), 1 << 20))


def app_tree(tar: tarfile.TarFile, seed: str, prefix: str, *, dirs: int, small: int,
             medium: list[int], big_random: list[int], big_text: list[int]) -> None:
    """Mixed content: `small` files of 256 B-16 KiB text (some random binary), medium files,
    large random (incompressible) and large text (compressible) files, symlinks and a hardlink."""
    rng = random.Random(seed)
    pool = _text_pool(rng)
    _add_dir(tar, prefix)
    dnames = [f"{prefix}/d{i:03d}" for i in range(dirs)]
    for d in dnames:
        _add_dir(tar, d)
    for i in range(small):
        size = int(rng.lognormvariate(7.8, 1.0)) % 16384 + 64
        if rng.random() < 0.2:
            data = rng.randbytes(size)
        else:
            off = rng.randrange(0, len(pool) - size)
            data = pool[off:off + size]
        _add_file(tar, f"{rng.choice(dnames)}/f{i:05d}.{rng.choice(['py', 'txt', 'json', 'so', 'dat'])}",
                  data, 0o755 if i % 17 == 0 else 0o644)
        if i % 97 == 0:
            ti = tarfile.TarInfo(f"{rng.choice(dnames)}/link{i:05d}")
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, f"../f{i:05d}.txt", MTIME
            tar.addfile(ti)
    for j, size in enumerate(medium):
        _add_big(tar, f"{prefix}/medium{j}.bin", size, rng, 0.5)
    for j, size in enumerate(big_random):
        _add_big(tar, f"{prefix}/blob{j}.bin", size, rng, 0.05)
    for j, size in enumerate(big_text):
        reps = []
        left = size
        while left > 0:
            n = min(left, len(pool))
            off = rng.randrange(0, len(pool) - n + 1)
            reps.append(pool[off:off + n])
            left -= n
        _add_file(tar, f"{prefix}/data{j}.txt", b"".join(reps))
    ti = tarfile.TarInfo(f"{prefix}/medium0.hardlink")
    ti.type, ti.linkname, ti.mtime = tarfile.LNKTYPE, f"{prefix}/medium0.bin", MTIME
    tar.addfile(ti)


MB = 1 << 20


def busybox_fallback_layer(tar: tarfile.TarFile) -> None:
    """busybox-static with applet symlinks, /etc/passwd, /etc/group (used when tools/images.py is absent)."""
    bb = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    for d in ("bin", "etc", "root", "tmp", "dev", "proc", "sys"):
        _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
    _add_file(tar, "bin/busybox", bb, 0o755)
    out = subprocess.run(["busybox", "--list"], capture_output=True, text=True).stdout.split()
    for applet in out:
        if applet != "busybox":
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "busybox", MTIME
            tar.addfile(ti)
    _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")


def build_app(layout: Layout, base_tag: str = "debian") -> None:
    """app-1 and app-2 (share all but the top layer), appz-1 (zstd), from `base_tag` in the layout."""
    tags = layout.tags()
    if not {"app-1", "app-2", "appz-1"} <= set(tags):
        lib = write_layer(layout, lambda t: app_tree(
            t, "lib", "opt/app/lib", dirs=200, small=4200, medium=[2 * MB, 3 * MB, 1 * MB],
            big_random=[24 * MB], big_text=[16 * MB]))
        top = {}
        for v in (1, 2):
            top[v] = write_layer(layout, lambda t, v=v: app_tree(
                t, f"top-{v}", "opt/app/current", dirs=60, small=1700, medium=[2 * MB],
                big_random=[14 * MB], big_text=[10 * MB]))
            compose(layout, f"app-{v}", base_tag, [lib, top[v]], cmd=("/bin/sh",), history_note=f"app {v}")
        m = layout.manifest("app-1")
        zl = [recompress(layout, lay, "zstd") for lay in m["layers"]]
        compose(layout, "appz-1", "app-1", [], replace_layers=zl, history_note="app zstd")


def build_big(layout: Layout, size: int, base_tag: str = "busybox") -> str:
    tag = f"big-{size // MB}m"
    if tag not in layout.tags():
        rng = random.Random(f"big-{size}")
        lay = write_layer(layout, lambda t: _add_big(t, "big/payload.bin", size, rng, 0.1), level=1)
        compose(layout, tag, base_tag, [lay], history_note="big layer")
    return tag


def push(layout: Layout, tag: str, dest: str) -> None:
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--preserve-digests",
                    f"oci:{layout.path}:{tag}", f"docker://{dest}"], check=True)


def image_stats(layout: Layout, tag: str) -> dict:
    """Layers, compressed size, uncompressed size and tar entry count of an image in the layout."""
    m = layout.manifest(tag)
    entries = usize = 0
    for lay in m["layers"]:
        with open(layout.blob_path(lay["digest"]), "rb") as raw:
            if lay["mediaType"].endswith("zstd"):
                import zstandard
                s = zstandard.ZstdDecompressor().stream_reader(raw)
            elif lay["mediaType"].endswith("gzip"):
                s = gzip.GzipFile(fileobj=raw)
            else:
                s = raw
            with tarfile.open(fileobj=s, mode="r|") as tar:
                for ti in tar:
                    entries += 1
                    usize += ti.size if ti.isreg() else 0
    return {"layers": len(m["layers"]), "size": sum(lay["size"] for lay in m["layers"]),
            "uncompressed": usize, "entries": entries}
