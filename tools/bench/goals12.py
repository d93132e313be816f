"""The first section of docs/benchmarks.md: issue 12's table (work | container now | peer | goal |
met?) drawn from a benchmark's rows (bench.py's Row: section, subject, fs, tool, values) and the
store-cost figures of tools/bench/gc_df.py (its JSON, at 50 and 500 images).

    .venv/bin/python tools/bench/goals12.py RESULTS.json GCDF.json [--doc docs/benchmarks.md] [--chart]

With --doc the section replaces the doc's first `## ` section when it is this one, or goes in before
it; the rest of the file is left as it is. --chart redraws docs/benchmarks.png from the same rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TITLE = "## Issue 12: where we stand (ours / peer)"
OURS = "container"


def _find(rows: list, section: str, fs: str, tool: str):
    for r in rows:
        if r["section"].startswith(section) and r["fs"] == fs and r["tool"] == tool and r["values"] \
                and not r["note"].startswith(("cannot", "failed", "not ")):
            return r
    return None


def _med(r) -> float:
    return statistics.median(r["values"])


def _ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 2 else f"{x:.2f} s"


def _pair(rows, section, fs, peers):
    """(our median, [(peer, its median, ratio)]) or None."""
    a = _find(rows, section, fs, OURS)
    if a is None:
        return None
    out = []
    for p in peers:
        r = _find(rows, section, fs, p)
        if r is not None:
            out.append((p, _med(r), _med(a) / _med(r)))
    return _med(a), out


def render(rows: list, gcdf: list, meta: dict, notes: list[str] | None = None) -> str:
    """The markdown section."""
    out: list[str] = [TITLE, ""]
    w = out.append
    w(f"Measured {meta.get('date', '?')} on {meta.get('machine', '?')}, load average "
             f"{meta.get('load_start', '?')} at start and {meta.get('load_end', '?')} at end: **seven other "
             "sessions were running their test suites on the same 2 cores**, so absolute times are inflated "
             "(often 3-10x) and noisy; the ratios come from alternating runs (each round runs every tool in "
             "turn, rotating the order) and medians, and are the numbers to read. Run latency and pulls were "
             "measured on `main`'s run and pull code as it is (another change to both is in progress); the "
             "store costs on this branch's usage records (docs/usage-records.md).")
    w("")
    w("| work | container now | peer | goal | met? |")
    w("|---|---|---|---|---|")

    # first run
    for fs in ("tmpfs", "ext4"):
        p = _pair(rows, "4b.", fs, ["podman run --network none"])
        if p:
            ours, peers = p
            peer = "; ".join(f"podman {_ms(m)} ({x:.2f}×)" for _, m, x in peers) or "-"
            ok = bool(peers) and peers[0][2] <= 0.5
            w(f"| first run of a never-run image (debian, 3 layers), {fs} | {_ms(ours)} | {peer} | ≤ 0.5× podman "
              f"| {'met' if ok else 'MISSED'} |")
        else:
            w(f"| first run of a never-run image, {fs} | not measured in this run | | ≤ 0.5× podman | - |")
    # run latency
    for fs in ("tmpfs", "ext4"):
        p = _pair(rows, "4. ", fs, ["podman run --network none", "containerd ctr run --rm", "chroot DIR true"])
        if p:
            ours, peers = p
            peer = "; ".join(f"{n} {_ms(m)} ({x:.2f}×)" for n, m, x in peers)
            w(f"| `run --rm busybox true`, {fs} | {_ms(ours)} median | {peer} | ≤ 30 ms median | "
              f"{'met' if ours <= 0.030 else 'MISSED'} |")
    # cold pull
    goals = {"tmpfs": 0.22, "ext4": 0.40}
    for fs in ("tmpfs", "ext4"):
        p = _pair(rows, "2. ", fs, ["skopeo copy + umoci unpack", "containerd ctr images pull",
                                    "podman pull (overlay)"])
        if p:
            ours, peers = p
            peer = "; ".join(f"{n} {_ms(m)} ({x:.2f}×)" for n, m, x in peers)
            sk = next((x for n, _, x in peers if n.startswith("skopeo")), None)
            met = "-" if sk is None else ("met" if sk <= goals[fs] else "MISSED")
            w(f"| cold pull+unpack app image (5 layers, 110 MB gz, 12.9k entries), {fs} | {_ms(ours)} | {peer} | "
              f"≤ {goals[fs]}× skopeo+umoci | {met} |")
    # second pull
    for fs in ("tmpfs", "ext4"):
        p = _pair(rows, "3.", fs, ["podman pull (overlay)", "containerd ctr images pull",
                                   "skopeo copy + umoci unpack"])
        if p:
            ours, peers = p
            peer = "; ".join(f"{n} {_ms(m)} ({x:.2f}×)" for n, m, x in peers)
            w(f"| second pull (next app version, one new layer), {fs} | {_ms(ours)} | {peer} | ≤ 150 ms | "
              f"{'met' if ours <= 0.150 else 'MISSED'} |")
    # store costs
    for res in gcdf:
        st = res["store"]
        sec, cpu = res["seconds"], res["cpu"]
        shape = (f"{st['images']} images / {st['layers']} layers / {st['blobs']} blobs "
                 f"({st['blobs_after_gc']} after gc)")
        goal_s = 0.3 if st["images"] <= 50 else 1.0
        for name, label in (("df", "df"), ("df after gc", "df after gc"), ("df -v", "df -v"),
                            ("gc (nothing to do)", "gc, nothing to do"), ("gc after rmi of half", None),
                            ("fsck", "fsck (after gc)"), ("sql join", "`sql` join (tag, image_layer, layer)"),
                            ("images", "images"), ("ps -a", "ps -a")):
            final = f"{name} (final code, after rmi+gc)"
            key = final if final in sec else name if name in sec else next((k for k in sec if k.startswith(name)), None)
            if key is None:
                continue
            label = (label or key) + (" (final code, after rmi of half + gc)" if key == final else "")
            is_df = label.startswith("df") and not label.startswith("df -v")
            g = f"≤ {goal_s} s" if is_df else "≤ 1 s at 500"
            lim = goal_s if is_df else (1.0 if st["images"] >= 500 else None)
            met = "-" if lim is None else ("met" if sec[key] <= lim else
                                           ("met on CPU, not wall" if cpu[key] <= lim else "MISSED"))
            w(f"| {label}, {shape} | {_ms(sec[key])} wall, {_ms(cpu[key])} CPU | — | {g} | {met} |")
    w("")
    if gcdf:
        w("Store costs as the store grows (tools/bench/gc_df.py; synthetic stores built without a registry: "
          "60 layers per image, 10 shared by all, a snapshot per image, a container per 5 images, every 5th "
          "image removed and 140 orphan blobs per image left for gc; ext4; each read-only command in "
          "alternating rounds, median; CPU is user+sys of the process):")
        w("")
        head = " | ".join(f"{r['store']['images']} images: wall / CPU" for r in gcdf)
        w(f"| command | {head} | CPU growth |")
        w("|---|" + "---:|" * len(gcdf) + "---:|")
        for name in gcdf[0]["seconds"]:
            cells = []
            for r in gcdf:
                k = name if name in r["seconds"] else next((x for x in r["seconds"]
                                                            if x.split(" (")[0] == name.split(" (")[0]), None)
                cells.append(f"{_ms(r['seconds'][k])} / {_ms(r['cpu'][k])}" if k else "-")
            growth = ""
            if len(gcdf) > 1 and name in gcdf[-1]["cpu"] and gcdf[0]["cpu"].get(name):
                growth = f"{gcdf[-1]['cpu'][name] / gcdf[0]['cpu'][name]:.1f}×"
            w(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
        w("")
    for n in notes or []:
        w(f"- {n}")
    if notes:
        w("")
    w("\"met on CPU, not wall\": the process used less CPU than the goal but waited longer than it for the "
      "cores the other sessions held. What is not here: runc and crun by themselves (issue: 25 ms and 8 ms) "
      "are not in tools/bench; the 1 GB layer and zstd rows are in the sections below from the last full "
      "run, not re-measured.")
    w("")
    return "\n".join(out)


def splice(doc: Path, section: str) -> None:
    """Put `section` first: replace the first `## ` section when it is ours, else insert it before it."""
    text = doc.read_text() if doc.exists() else ""
    lines = text.split("\n")
    first = next((i for i, x in enumerate(lines) if x.startswith("## ")), len(lines))
    if first < len(lines) and lines[first] == TITLE:
        end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[first:end] = section.split("\n")
    else:
        lines[first:first] = section.split("\n")
    doc.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a bench run's last-results.json")
    ap.add_argument("gcdf", help="tools/bench/gc_df.py --json output")
    ap.add_argument("--doc", help="splice the section into this markdown file")
    ap.add_argument("--chart", help="redraw this chart from the rows (and the store costs)")
    ap.add_argument("--note", action="append", default=[], help="a line under the table (repeatable)")
    a = ap.parse_args()
    saved = json.loads(Path(a.results).read_text())
    gcdf = json.loads(Path(a.gcdf).read_text())
    gcdf = gcdf if isinstance(gcdf, list) else [gcdf]
    md = render(saved["rows"], gcdf, saved["meta"], a.note)
    if a.doc:
        splice(Path(a.doc), md)
    else:
        print(md)
    if a.chart:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tools.bench import bench

        bench.RESULTS.extend(bench.Row(**r) for r in saved["rows"])
        for res in gcdf:
            st = res["store"]
            subject = f"{st['images']} images, {st['layers']} layers, {st['blobs']} blobs"
            for name, secs in res["seconds"].items():
                lo, hi = res["minmax"].get(name, (secs, secs))
                bench.RESULTS.append(bench.Row("7. store costs", subject, "ext4", f"{OURS} {name}",
                                               values=[lo, secs, hi]))
        bench.render_chart(Path(a.chart))
    return 0


if __name__ == "__main__":
    sys.exit(main())
