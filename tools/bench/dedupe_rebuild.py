"""What dedupe saves on an application rebuild: bench/app:1 (from tools/bench's cached layout) and
a rebuild of it whose top layer has the same files but one changed and one added (a new layer, a
new diff_id: whole-layer sharing cannot help) loaded into one store, with CONTAINER_DEDUPE=0 and
=1; du and df's `deduplicated` printed. docs/benchmarks.md, "File-level dedupe".

    python tools/bench/dedupe_rebuild.py [CLI]     (CLI: default .venv/bin/container)
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import tarmaker as tm  # noqa: E402

CACHE = Path(os.environ.get("CONTAINER_BENCH_CACHE", Path.home() / ".cache" / "container-bench"))


def app_layers() -> list[bytes]:
    lay = CACHE / "layout"
    idx = json.loads((lay / "index.json").read_text())

    def blob(d: str) -> bytes:
        return (lay / "blobs" / "sha256" / d.split(":")[1]).read_bytes()

    md = next(m for m in idx["manifests"]
              if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "app-1")["digest"]
    return [gzip.decompress(blob(x["digest"])) for x in json.loads(blob(md))["layers"]]


def rebuilt(top: bytes) -> bytes:
    """The same tar with its first file over 1000 bytes changed and one file added."""
    src = tarfile.open(fileobj=io.BytesIO(top))
    out = io.BytesIO()
    dst = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    changed = False
    for m in src:
        f = src.extractfile(m) if m.isreg() else None
        if f is not None and not changed and m.size > 1000:
            data = b"rebuilt " + f.read()
            m.size = len(data)
            changed = True
            dst.addfile(m, io.BytesIO(data))
            continue
        dst.addfile(m, f)
    ti = tarfile.TarInfo("opt/app/current/NEW")
    ti.size = 5
    dst.addfile(ti, io.BytesIO(b"new!\n"))
    dst.close()
    return out.getvalue()


def main() -> int:
    cli = sys.argv[1] if len(sys.argv) > 1 else str(REPO / ".venv" / "bin" / "container")
    layers = app_layers()
    images = (("bench/app:1", layers), ("bench/app:1-rebuilt", layers[:-1] + [rebuilt(layers[-1])]))
    base = Path("/dev/shm/dedupe-rebuild")
    res = {}
    for mode in ("0", "1"):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        env = dict(os.environ, CONTAINER_DEDUPE=mode, CONTAINER_CONFIG=str(base / "none.toml"))
        for name, ls in images:
            d = base / "layout"
            tm.oci_layout(d, ls)
            i = json.loads((d / "index.json").read_text())
            i["manifests"][0]["annotations"] = {"io.containerd.image.name": "example.com/" + name}
            (d / "index.json").write_text(json.dumps(i))
            subprocess.run([cli, "--root", str(base / "root"), "load", "-q", "-i", str(d)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(d)
        rep = json.loads(subprocess.run([cli, "--root", str(base / "root"), "df", "-v", "--format", "report"],
                                        env=env, capture_output=True, text=True, check=True).stdout)
        du = int(subprocess.run(["du", "-sB1", "--exclude=metadata.db*", str(base / "root")], capture_output=True,
                                text=True, check=True).stdout.split()[0])
        res[mode] = {"du": du, "deduplicated": rep["deduplicated"],
                     "adds_up": rep["total"] + rep["metadata"] - rep["database"] == du,
                     "top_layer_bytes": len(layers[-1])}
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
