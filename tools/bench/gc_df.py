#!/usr/bin/env python3
"""Benchmark: df, gc, fsck, sql, images, ps on synthetic stores of 50 and 500 images (issues 4, 12).

    .venv/bin/python tools/bench/gc_df.py [--root DIR] [--images 50[,500]] [--layers 60] [--orphans N]
                                          [--runs 3] [--keep] [--json] [--build-only]

The store is what pulls would leave, built directly (no registry, no fsync per blob):
`--images` images of `--layers` layers each, the first 10 layers shared by all of them; every
layer a real gzip tar in blobs/ with its unpacked tree in layers/, its files linked into
objects/ as dedupe (on by default) links them at pull, with the tree's record in objects/trees/
(`--no-objects`: a store pulled with dedupe off); a snapshot per image (hardlinks); one container
per 5 images. Then garbage: `--images`/5 images are removed (rows only,
as rmi does) and `--orphans` small blobs are written that no row names (crash leftovers).
(`--orphans`, default 140 per image: 50 images hold ~9.6k blobs, 500 ~96k.)
Timed, each as a CLI process (what a user waits for; wall and CPU): the first df (fills the usage
records of a store written without them), then df, df -v, images, ps -a, a `sql` join and
gc --dry-run in alternating rounds (medians), gc, then gc again (nothing to do), df and fsck in
rounds, `rmi` of half the images, gc, df and fsck again.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import resource
import statistics
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


def build(root: Path, n_images: int, n_layers: int, n_orphans: int, with_objects: bool = True) -> dict:
    sys.path.insert(0, str(REPO))
    from container.engine.layer import dedupe as _dedupe
    from container.engine.store import Store
    from container.schema import Blob, Container, Image, ImageLayer, Layer, Snapshot, Tag, write_txn

    s = Store(root)
    s.ensure()
    s.blobs.ensure()
    s.db()
    layer_cache: dict[int, tuple[str, str, int]] = {}
    dedupe = _dedupe if with_objects else None

    def layer(n: int):
        if n not in layer_cache:
            tar, gz, files = make_layer(n)
            d = write_blob(root, gz)
            diff = "sha256:" + hashlib.sha256(tar).hexdigest()
            t = s.layer_path(diff)
            t.mkdir(parents=True)
            (t / f"l{n}").mkdir()
            held = 0
            for p, data in files.items():
                (t / p).write_bytes(data)
                os.utime(t / p, (1700000000, 1700000000))
                os.chmod(t / p, 0o644)
                if dedupe is not None:       # what a pull with dedupe on (the default) leaves
                    st = os.stat(t / p)
                    key = dedupe.object_key(hashlib.sha256(data).hexdigest(), st, [])
                    (s.objects_dir / key[:2]).mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.link(t / p, s.objects_dir / key[:2] / key[2:])
                    held += st.st_blocks * 512
            if dedupe is not None:
                dedupe.record(s.objects_dir, diff, held, 0)
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
        tags.append(dict(repository=f"docker.io/bench/img{i}", tag="latest", digest=md, image=md))
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
    nobj = sum(len(os.listdir(x)) for x in s.objects_dir.iterdir() if len(x.name) == 2) if with_objects else 0
    return {"blobs": nblobs, "images": n_images, "layers": len(layer_cache), "containers": len(ctrs),
            "objects": nobj}


def timed(root: Path, *args: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds user+sys, stdout) of one CLI process."""
    exe = Path(sys.executable).parent / "container"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([str(exe), "--root", str(root), *args], capture_output=True, text=True)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in (0, 1):
        raise SystemExit(f"container {' '.join(args)} failed: {r.stderr}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), r.stdout


SQL_JOIN = ("SELECT t.repository, COUNT(*) AS layers, SUM(l.disk) AS disk FROM tag t "
            "JOIN image_layer il ON il.image_id = t.image_id JOIN layer l ON l.diff_id = il.diff_id "
            "GROUP BY t.repository ORDER BY disk DESC LIMIT 5")
READ_ONLY = (("df", ["df"]), ("df -v", ["df", "-v"]), ("images", ["images"]), ("ps -a", ["ps", "-a"]),
             ("sql join", ["sql", SQL_JOIN]), ("gc --dry-run", ["gc", "--dry-run"]))


def rounds(root: Path, cases, runs: int, res: dict, suffix: str = "") -> None:
    """Every case `runs` times, alternating (case 1, case 2, ..., then again): medians and CPU."""
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    for _ in range(runs):
        for name, args in cases:
            dt, cpu, _ = timed(root, *args)
            got[name].append((dt, cpu))
    for name, xs in got.items():
        res["seconds"][name + suffix] = round(statistics.median(x for x, _ in xs), 3)
        res["cpu"][name + suffix] = round(statistics.median(c for _, c in xs), 3)
        res["minmax"][name + suffix] = (round(min(x for x, _ in xs), 3), round(max(x for x, _ in xs), 3))


def once(root: Path, name: str, args: list[str], res: dict) -> str:
    dt, cpu, out = timed(root, *args)
    res["seconds"][name], res["cpu"][name], res["minmax"][name] = round(dt, 3), round(cpu, 3), (round(dt, 3),) * 2
    return out


def measure(root: Path, shape: dict, runs: int) -> dict:
    """The sequence a user would see: reads (alternating), gc, gc again (nothing to do), fsck, rmi of
    half the images, gc, fsck --deep on what remains."""
    res: dict = {"store": shape, "seconds": {}, "cpu": {}, "minmax": {}}
    once(root, "df (first: records filled)", ["df"], res)      # a store built without usage records
    rounds(root, READ_ONLY, runs, res)
    out = once(root, "gc", ["gc"], res)
    res["gc_output_tail"] = out.strip().splitlines()[-1] if out.strip() else ""
    res["store"]["blobs_after_gc"] = len(os.listdir(root / "blobs" / "sha256"))
    rounds(root, (("gc (nothing to do)", ["gc"]), ("df after gc", ["df"]), ("fsck", ["fsck"])), runs, res)
    rmi_half(root, shape, runs, res)
    return res


def rmi_half(root: Path, shape: dict, runs: int, res: dict) -> None:
    """rmi of half the images that are left (no container uses them), then gc, df and fsck."""
    tags = [f"bench/img{i}:latest" for i in range(shape["images"]) if i % 5 not in (0, 2)][::2]
    out = once(root, "rmi of half", ["rmi", *tags], res)
    res["rmi_untagged"] = out.count("Untagged")
    once(root, "gc after rmi of half", ["gc"], res)
    rounds(root, (("df after rmi+gc", ["df"]), ("fsck after rmi+gc", ["fsck"])), runs, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="build (and with --build-only keep) the store here")
    ap.add_argument("--images", default="50", help="images per store; a list (50,500) measures each")
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--orphans", type=int, default=None, help="orphan blobs (default: 140 per image)")
    ap.add_argument("--runs", type=int, default=3, help="alternating rounds per read-only command")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--build-only", action="store_true", help="build the store at --root and stop")
    ap.add_argument("--no-objects", action="store_true",
                    help="no dedupe objects (a store pulled with [store] dedupe = false)")
    a = ap.parse_args()
    out = []
    for n in [int(x) for x in str(a.images).split(",")]:
        tmp = None
        if a.root:
            root = Path(a.root) if "," not in str(a.images) else Path(a.root) / str(n)
        else:
            tmp = tempfile.mkdtemp(prefix="bench-gc-")
            root = Path(tmp) / "root"
        t = time.perf_counter()
        shape = build(root, n, a.layers, a.orphans if a.orphans is not None else 140 * n, not a.no_objects)
        shape["build_s"] = round(time.perf_counter() - t, 2)
        if a.build_only:
            print(json.dumps(shape))
            continue
        res = measure(root, shape, a.runs)
        out.append(res)
        if not a.json:
            print(f"store: {shape}")
            for k, v in res["seconds"].items():
                print(f"  {k:<34} {v:8.3f} s  (cpu {res['cpu'][k]:.3f} s)")
            print(f"  gc: {res['gc_output_tail']}; blobs after gc: {res['store']['blobs_after_gc']}")
        if tmp and not a.keep:
            subprocess.run(["rm", "-rf", tmp])
    if a.json:
        print(json.dumps(out if len(out) != 1 else out[0], indent=2))


if __name__ == "__main__":
    main()
