#!/usr/bin/env python3
"""Benchmark: gc, df and fsck on a synthetic store of ~10k blobs and ~50 images (issue 4).

    .venv/bin/python tools/bench/gc_df.py [--root DIR] [--images 50] [--layers 60] [--orphans 7000]
                                          [--keep] [--json] [--build-only]

The store is what pulls would leave, built directly (no registry, no fsync per blob):
`--images` images of `--layers` layers each, the first 10 layers shared by all of them; every
layer a real gzip tar in blobs/ with its unpacked tree in layers/; a snapshot per image
(hardlinks); one container per 5 images. Then garbage: `--images`/5 images are removed (rows only,
as rmi does) and `--orphans` small blobs are written that no row names (crash leftovers).
Timed, each as a CLI process (what a user waits for): df, df -v, gc --dry-run, gc, gc again
(nothing to do), fsck (rehashes every blob), fsck --deep on what remains.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def chain_ids(diff_ids):
    out = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def make_layer(n: int) -> tuple[bytes, bytes, dict]:
    files = {f"l{n}/f{i}": (f"layer {n} file {i}\n".encode() * (8 + i * 40)) for i in range(4)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(f"l{n}")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tf.addfile(ti)
        for p, data in files.items():
            ti = tarfile.TarInfo(p)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            tf.addfile(ti, io.BytesIO(data))
    tar = buf.getvalue()
    return tar, gzip.compress(tar, compresslevel=1, mtime=0), files


def write_blob(root: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    p = root / "blobs" / "sha256" / h
    if not p.exists():
        p.write_bytes(data)
        os.chmod(p, 0o444)
    return "sha256:" + h


def build(root: Path, n_images: int, n_layers: int, n_orphans: int) -> dict:
    sys.path.insert(0, str(REPO))
    from container.engine.store import Store
    from container.schema import Blob, Container, Image, ImageLayer, Layer, Snapshot, Tag, write_txn

    s = Store(root)
    s.ensure()
    s.blobs.ensure()
    s.db()
    layer_cache: dict[int, tuple[str, str, int]] = {}

    def layer(n: int):
        if n not in layer_cache:
            tar, gz, files = make_layer(n)
            d = write_blob(root, gz)
            diff = "sha256:" + hashlib.sha256(tar).hexdigest()
            t = s.layer_path(diff)
            t.mkdir(parents=True)
            (t / f"l{n}").mkdir()
            for p, data in files.items():
                (t / p).write_bytes(data)
                os.utime(t / p, (1700000000, 1700000000))
                os.chmod(t / p, 0o644)
            layer_cache[n] = (d, diff, len(gz))
        return layer_cache[n]

    blobs, layers, images, ils, tags, snaps, ctrs = [], [], [], [], [], [], []
    for i in range(n_images):
        ls = [layer(k if k < 10 else 10 + i * n_layers + k) for k in range(n_layers)]
        diffs = [x[1] for x in ls]
        cfg = json.dumps({"os": "linux", "architecture": "amd64", "i": i,
                          "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
        cd = write_blob(root, cfg)
        man = json.dumps({"schemaVersion": 2, "config": {"digest": cd, "size": len(cfg)},
                          "layers": [{"digest": d, "size": n, "mediaType": LAYER_MT} for d, _, n in ls]}).encode()
        md = write_blob(root, man)
        blobs += [dict(digest=cd, size=len(cfg), media_type="application/vnd.oci.image.config.v1+json"),
                  dict(digest=md, size=len(man), media_type="application/vnd.oci.image.manifest.v1+json")]
        chain = chain_ids(diffs)[-1]
        images.append(dict(id=md, manifest=md, config=cd, chain_id=chain, size=sum(x[2] for x in ls)))
        ils += [dict(image=md, position=k, blob=d, layer=diff, media_type=LAYER_MT)
                for k, (d, diff, _) in enumerate(ls)]
        tags.append(dict(repository=f"bench/img{i}", tag="latest", digest=md, image=md))
        # snapshot: hardlinks of every layer file
        sp = s.snapshot_path(chain)
        sp.mkdir(parents=True)
        for diff in diffs:
            for dirpath, dirnames, filenames in os.walk(s.layer_path(diff)):
                rel = os.path.relpath(dirpath, s.layer_path(diff))
                os.makedirs(sp / rel, exist_ok=True)
                for f in filenames:
                    os.link(os.path.join(dirpath, f), sp / rel / f)
        snaps.append(dict(chain_id=chain, top=diffs[-1]))
        if i % 5 == 0:
            cid = hashlib.sha256(f"c{i}".encode()).hexdigest()
            (s.containers_dir / cid / "upper").mkdir(parents=True)
            (s.containers_dir / cid / "upper" / "f").write_bytes(b"x" * 10000)
            ctrs.append(dict(id=cid, name=f"c{i}", image=md, snapshot=chain, status="exited", exit_code=0))
    for d, diff, n in layer_cache.values():
        blobs.append(dict(digest=d, size=n, media_type=LAYER_MT))
        layers.append(dict(diff_id=diff, size=0, entries=5))
    with write_txn():
        for rows, model in ((blobs, Blob), (layers, Layer), (images, Image), (ils, ImageLayer), (tags, Tag),
                            (snaps, Snapshot), (ctrs, Container)):
            for k in range(0, len(rows), 200):
                model.insert_many(rows[k:k + 200]).on_conflict_ignore().execute()
        from container.engine.maint.inventory import recount_refs
        recount_refs()
        # garbage: every 5th image (offset 2: none has a container) loses its tag and its rows
        for i in range(2, n_images, 5):
            md = images[i]["id"]
            Tag.delete().where(Tag.image == md).execute()
            ImageLayer.delete().where(ImageLayer.image == md).execute()
            Image.delete().where(Image.id == md).execute()
        recount_refs()
    for k in range(n_orphans):
        write_blob(root, f"orphan {k}\n".encode())
    s.close()
    nblobs = len(os.listdir(root / "blobs" / "sha256"))
    return {"blobs": nblobs, "images": n_images, "layers": len(layer_cache), "containers": len(ctrs)}


def timed(root: Path, *args: str) -> tuple[float, str]:
    exe = Path(sys.executable).parent / "container"
    t = time.perf_counter()
    r = subprocess.run([str(exe), "--root", str(root), *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"container {' '.join(args)} failed: {r.stderr}")
    return dt, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--orphans", type=int, default=7000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--build-only", action="store_true", help="build the store at --root and stop")
    a = ap.parse_args()
    tmp = None
    if a.root:
        root = Path(a.root)
    else:
        tmp = tempfile.mkdtemp(prefix="bench-gc-")
        root = Path(tmp) / "root"
    t = time.perf_counter()
    shape = build(root, a.images, a.layers, a.orphans)
    shape["build_s"] = round(time.perf_counter() - t, 2)
    if a.build_only:
        print(json.dumps(shape))
        return
    res = {"store": shape, "seconds": {}}
    for name, args in (("df", ["df"]), ("df -v", ["df", "-v"]), ("gc --dry-run", ["gc", "--dry-run"]),
                       ("gc", ["gc"]), ("gc (nothing to do)", ["gc"]), ("df after gc", ["df"]),
                       ("fsck", ["fsck"]), ("fsck --deep", ["fsck", "--deep"])):
        dt, out = timed(root, *args)
        res["seconds"][name] = round(dt, 3)
        if name == "gc":
            res["gc_output_tail"] = out.strip().splitlines()[-1]
    res["store"]["blobs_after_gc"] = len(os.listdir(root / "blobs" / "sha256"))
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"store: {shape}")
        for k, v in res["seconds"].items():
            print(f"  {k:<20} {v:8.3f} s")
        print(f"  gc: {res['gc_output_tail']}; blobs after gc: {res['store']['blobs_after_gc']}")
    if tmp and not a.keep:
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
