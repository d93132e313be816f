"""Side-by-side benchmark of `container` against skopeo, umoci, podman, udocker and chroot.

Run it through tools/bench/run (which installs what it needs first). See docs/benchmarks.md.

Method: every measurement runs each tool in turn, rotating the order round by round (so drift
on a noisy machine hits every tool alike), on a fresh destination each run (every pull is a real
pull: nothing cached), after a `sync`; the first `warmup` rounds are thrown away; we report the
median and min-max of the rest. Each measurement runs on the ext4 disk and on a tmpfs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tools.bench import containerd as ctrd  # noqa: E402
from tools.bench import images as bimages  # noqa: E402

CONTAINER = REPO / ".venv" / "bin" / "container"
PY = REPO / ".venv" / "bin" / "python"
OURS = "container"


def log(*a) -> None:
    print("bench:", *a, file=sys.stderr, flush=True)


# -- results --------------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str          # e.g. "2. cold pull + unpack"
    subject: str          # what was measured, e.g. "bench/app:1"
    fs: str               # "ext4" / "tmpfs" / "-"
    tool: str
    values: list[float] = field(default_factory=list)
    unit: str = "s"
    note: str = ""        # "cannot run here: ..." / "failed: ..."
    extra: dict = field(default_factory=dict)   # e.g. {"bytes": [...]} per run

    @property
    def ok(self) -> bool:
        return bool(self.values) and not self.note.startswith(("cannot", "failed", "not "))

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


RESULTS: list[Row] = []
GCDF: list[dict] = []       # tools/bench/gc_df.py's results (store costs at 50 and 500 images)


# -- process helpers -------------------------------------------------------------------------------------
def sh(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=kw.pop("check", True),
                          capture_output=kw.pop("capture_output", True), text=True, **kw)


LAST_CPU = [0.0]   # CPU seconds (user+sys, the whole process tree) of the last timed() run


def timed(argv: list[str] | str, env: dict | None = None, cwd: Path | None = None,
          rss: bool = False) -> tuple[float, int, int, str]:
    """Run once: (seconds, exit code, peak RSS in KiB, stderr tail).

    Peak RSS comes from GNU time (wait4's ru_maxrss: the largest process of the tree) when `rss`:
    measured from our own forked child it would include this Python process's pages."""
    import tempfile
    shell = isinstance(argv, str)
    cmd = argv if not shell else ["/bin/sh", "-c", argv]
    with tempfile.NamedTemporaryFile() as errf, tempfile.NamedTemporaryFile(mode="r") as tf:
        if rss:
            cmd = ["/usr/bin/time", "-q", "-f", "%M", "-o", tf.name] + cmd
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                             env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        LAST_CPU[0] = ru.ru_utime + ru.ru_stime
        errf.seek(0)
        tail = errf.read()[-4000:].decode(errors="replace").strip()
        kb = 0
        if rss:
            try:
                kb = int(Path(tf.name).read_text().strip().splitlines()[-1])
            except (ValueError, IndexError, OSError):
                kb = 0
    return t1 - t0, rc, kb, tail


def unmount_under(path: Path) -> None:
    """Unmount whatever a tool left mounted below `path` (podman's overlay bind mount, a crashed run)."""
    p = str(Path(path).resolve())
    with open("/proc/self/mounts") as f:
        mps = [line.split()[1].encode().decode("unicode_escape") for line in f]
    for mp in sorted((m for m in mps if m == p or m.startswith(p + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def wipe(path: Path) -> None:
    if Path(path).exists():
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)
        if Path(path).exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)


def fstype(path: Path) -> str:
    r = sh(["findmnt", "-no", "FSTYPE", "-T", str(path)], check=False)
    lines = r.stdout.split()
    return lines[-1] if lines else "?"


def last_line(s: str) -> str:
    lines = [x for x in s.strip().splitlines() if x.strip()]
    return lines[-1][:160] if lines else ""


# -- a measurement: cases run round-robin ------------------------------------------------------------------
@dataclass
class Case:
    tool: str
    cmd: Callable[[Path], list[str] | str] | None      # given the run's fresh dir
    prepare: Callable[[Path], None] | None = None       # untimed, before each run
    env: Callable[[Path], dict] | None = None
    unavailable: str = ""                                # reason it cannot run here
    self_timed: bool = False                             # the command prints its own seconds last on stdout
    count_bytes: bool = False                            # record registry bytes fetched per run
    fresh: bool = True                                   # a new dir per run (False: one shared dir)
    slow: bool = False                                   # left out by --quick


class Bench:
    def __init__(self, args, reg, udocker_bin: str | None):
        self.args = args
        self.reg = reg
        self.udocker = udocker_bin
        self.seq = 0
        self.daemons: dict[str, ctrd.Daemon] = {}

    def containerd(self, fs: str, base: Path) -> tuple[ctrd.Daemon | None, str]:
        """The private containerd for filesystem `fs` (started on first use), or why there is none."""
        why = ctrd.ensure_installed()
        if why:
            return None, why
        if fs not in self.daemons:
            self.daemons[fs] = ctrd.Daemon(base / "containerd")
        dm = self.daemons[fs]
        return dm, dm.start()

    def stop_daemons(self) -> None:
        for dm in self.daemons.values():
            dm.stop()
        self.daemons.clear()

    # The registry's bytes for GET blobs since a mark.
    def blob_bytes(self, since: int) -> int:
        n = 0
        for e in self.reg.requests(since):
            if e.method == "GET" and "/blobs/" in e.path and e.status in (200, 206):
                n += e.size
        return n

    def measure(self, section: str, subject: str, fs: str, base: Path, cases: list[Case],
                runs: int, warmup: int, unit: str = "s") -> list[Row]:
        if self.args.quick:
            for c in cases:
                if c.slow and not c.unavailable:
                    c.unavailable = "not run with --quick"
        rows = {c.tool: Row(section, subject, fs, c.tool, unit=unit, note=c.unavailable) for c in cases}
        live = [c for c in cases if not c.unavailable]
        shared = {}
        for r in range(warmup + runs):
            k = r % len(live) if live else 0
            for c in live[k:] + live[:k]:
                row = rows[c.tool]
                if row.note:
                    continue
                self.seq += 1
                if c.fresh:
                    d = base / f"run{self.seq}"
                else:
                    d = shared.setdefault(c.tool, base / f"shared-{len(shared)}")
                d.mkdir(parents=True, exist_ok=True)
                try:
                    if c.prepare:
                        c.prepare(d)
                except subprocess.CalledProcessError as e:
                    row.note = f"failed (setup): {last_line(e.stderr or '') or e}"
                    wipe(d)
                    continue
                env = dict(os.environ, **(c.env(d) if c.env else {}))
                os.sync()
                mark = self.reg.mark() if c.count_bytes else 0
                if c.self_timed:
                    p = subprocess.run(c.cmd(d), env=env, capture_output=True, text=True)
                    rc, tail = p.returncode, p.stderr
                    try:
                        secs = float(p.stdout.strip().split()[-1]) if rc == 0 else 0.0
                    except (ValueError, IndexError):
                        rc, tail = 1, f"bad driver output: {p.stdout[-200:]!r} {p.stderr[-400:]}"
                else:
                    secs, rc, _rss, tail = timed(c.cmd(d), env=env)
                if rc != 0:
                    row.note = f"failed (exit {rc}): {last_line(tail)}"
                    log(f"{section} {subject} {fs} {c.tool}: {row.note}")
                elif r >= warmup:
                    row.values.append(secs)
                    if not c.self_timed:
                        row.extra.setdefault("cpu", []).append(LAST_CPU[0])
                    if c.count_bytes:
                        row.extra.setdefault("bytes", []).append(self.blob_bytes(mark))
                if c.fresh:
                    wipe(d)
            done = ", ".join(f"{t}={rows[t].values[-1]:.3f}" for t in rows if rows[t].values)
            log(f"{section} [{fs}] round {r + 1}/{warmup + runs}: {done}")
        for d in shared.values():
            wipe(d)
        RESULTS.extend(rows.values())
        return list(rows.values())


# -- the tools ----------------------------------------------------------------------------------------------
def ours_available() -> str:
    if not CONTAINER.exists():
        return "not installed (.venv/bin/container missing)"
    return ""


def ours_has(command: str, flag: str | None = None) -> bool:
    """Does our CLI have `command` (and `flag` in its --help)?"""
    if ours_available():
        return False
    r = sh([str(CONTAINER), command, "--help"], check=False)
    if r.returncode != 0:
        return False
    return flag is None or flag in r.stdout


def podman_argv(d: Path, driver: str) -> list[str]:
    return ["podman", "--root", str(d / "root"), "--runroot", str(d / "run"), "--storage-driver", driver,
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--log-level", "error"]


# podman's default rlimits (nofile 1048576, nproc) exceed what a container without CAP_SYS_RESOURCE may set.
PODMAN_RUN = ["run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def udocker_env(d: Path) -> dict:
    return {"UDOCKER_DIR": str(d / "udocker"), "UDOCKER_TARBALL": "",
            "UDOCKER_USE_PROOT_EXECUTABLE": shutil.which("proot") or "/usr/bin/proot",
            "UDOCKER_USE_RUNC_EXECUTABLE": shutil.which("runc") or "/usr/sbin/runc",
            "UDOCKER_DEFAULT_EXECUTION_MODE": "P1"}


def which_reason(*tools: str) -> str:
    missing = [t for t in tools if not shutil.which(t)]
    return f"cannot run here: {', '.join(missing)} not installed" if missing else ""


# -- sections -----------------------------------------------------------------------------------------------
def section_pull(b: Bench, fs: str, base: Path, img: str, runs: int, warmup: int):
    reg = b.reg.host
    ref = f"{reg}/{img}"
    skopeo = f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{{d}}/oci:img"

    # 1. download only
    dl_flag = next((f for f in ("--download-only", "--no-unpack") if ours_has("pull", f)), None)
    cases = [
        Case(OURS, (lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", dl_flag, ref]),
             unavailable="" if dl_flag else ("not exposed: `container pull` has no download-only flag"
                                             if not ours_available() else ours_available())),
        Case("skopeo copy", lambda d: skopeo.format(d=d), unavailable=which_reason("skopeo")),
    ]
    if dl_flag:
        b.measure("1. cold pull, download only", img, fs, base, cases, runs, warmup)
    else:
        b.measure("1. cold pull, download only", img, fs, base, cases[1:], runs, warmup)
        RESULTS.append(Row("1. cold pull, download only", img, fs, OURS, note=cases[0].unavailable))

    # 2. pull + unpack
    ud = b.udocker
    cases = [
        Case(OURS, lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", ref],
             unavailable=ours_available()),
        Case("skopeo copy + umoci unpack",
             lambda d: skopeo.format(d=d) + f" && umoci unpack --image {d}/oci:img {d}/bundle",
             unavailable=which_reason("skopeo", "umoci")),
        Case("podman pull (overlay)",
             lambda d: podman_argv(d, "overlay") + ["pull", "-q", "--tls-verify=false", ref],
             unavailable=which_reason("podman")),
        Case("podman pull (vfs)",
             lambda d: podman_argv(d, "vfs") + ["pull", "-q", "--tls-verify=false", ref],
             unavailable=which_reason("podman"), slow=True),
        Case("udocker pull + create",
             lambda d: f"{ud} --allow-root -q pull --registry={b.reg.url} {img} && "
                       f"{ud} --allow-root -q create --name=c {img}",
             env=udocker_env, unavailable="" if ud else "cannot run here: udocker not installed"),
    ]
    dm, why = b.containerd(fs, base)
    cases.append(Case("containerd ctr images pull", lambda d: dm.pull(ctrd.namespace(d), ref) if dm else [],
                      unavailable=why))
    b.measure("2. cold pull + unpack", img, fs, base, cases, runs, warmup)


def section_zstd(b: Bench, fs: str, base: Path, img: str, runs: int, warmup: int):
    ref = f"{b.reg.host}/{img}"
    cases = [
        Case(OURS, lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", ref],
             unavailable=ours_available()),
        Case("skopeo copy + umoci unpack",
             lambda d: f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{d}/oci:img && "
                       f"umoci unpack --image {d}/oci:img {d}/bundle",
             unavailable=which_reason("skopeo", "umoci")),
        Case("podman pull (overlay)",
             lambda d: podman_argv(d, "overlay") + ["pull", "-q", "--tls-verify=false", ref],
             unavailable=which_reason("podman")),
    ]
    rows = b.measure("2b. cold pull + unpack, zstd layers", img, fs, base, cases, runs, warmup)
    for r in rows:
        if r.tool.startswith("skopeo") and ("mediatype" in r.note.lower() or "runtime bundle" in r.note):
            ver = sh(["umoci", "--version"], check=False).stdout.strip()
            r.note = f"cannot run here: {ver or 'umoci'} (Debian) cannot unpack zstd layers"


def section_second_pull(b: Bench, fs: str, base: Path, img1: str, img2: str, runs: int, warmup: int):
    r1, r2 = f"{b.reg.host}/{img1}", f"{b.reg.host}/{img2}"
    ud = b.udocker

    def ours_cmd(ref):
        return lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", ref]

    def skopeo_cmd(ref, tag):
        return (lambda d: f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{d}/oci:{tag} && "
                          f"umoci unpack --image {d}/oci:{tag} {d}/bundle-{tag}")

    def podman_cmd(ref):
        return lambda d: podman_argv(d, "overlay") + ["pull", "-q", "--tls-verify=false", ref]

    def run_ok(argv, env=None):
        def f(d):
            secs, rc, _, tail = timed(argv(d), env=dict(os.environ, **(env(d) if env else {})))
            if rc:
                raise subprocess.CalledProcessError(rc, "prepare", stderr=tail)
        return f

    def ud_cmd(img):
        return lambda d: (f"{ud} --allow-root -q pull --registry={b.reg.url} {img} && "
                          f"{ud} --allow-root -q create --name=c{img.split(':')[-1]} {img}")

    cases = [
        Case(OURS, ours_cmd(r2), prepare=run_ok(ours_cmd(r1)), count_bytes=True, unavailable=ours_available()),
        Case("skopeo copy + umoci unpack", skopeo_cmd(r2, "v2"), prepare=run_ok(skopeo_cmd(r1, "v1")),
             count_bytes=True, unavailable=which_reason("skopeo", "umoci"), slow=True),
        Case("podman pull (overlay)", podman_cmd(r2), prepare=run_ok(podman_cmd(r1)), count_bytes=True,
             unavailable=which_reason("podman")),
        Case("udocker pull + create", ud_cmd(img2), prepare=run_ok(ud_cmd(img1), udocker_env), env=udocker_env,
             count_bytes=True, unavailable="" if ud else "cannot run here: udocker not installed", slow=True),
    ]
    dm, why = b.containerd(fs, base)
    if dm is not None and not why:
        cases.append(Case("containerd ctr images pull", lambda d: dm.pull(ctrd.namespace(d), r2),
                          prepare=run_ok(lambda d: dm.pull(ctrd.namespace(d), r1)), count_bytes=True))
    else:
        cases.append(Case("containerd ctr images pull", None, unavailable=why))
    b.measure("3. second pull (next app version)", f"{img1} -> {img2}", fs, base, cases, runs, warmup)


def section_run(b: Bench, fs: str, base: Path, img: str, runs: int, warmup: int):
    ref = f"{b.reg.host}/{img}"
    ud = b.udocker
    # One prepared store per tool, shared by all runs of that tool.
    d = base / "run-latency"
    wipe(d)
    d.mkdir(parents=True)
    notes = {}

    def prep(name, cmd, env=None):
        secs, rc, _, tail = timed(cmd, env=dict(os.environ, **(env or {})))
        if rc:
            notes[name] = f"failed (setup): {last_line(tail)}"
            log(f"run setup {name}: {tail[-400:]}")

    if not ours_available():
        prep(OURS, [str(CONTAINER), "--root", str(d / "ours"), "pull", "-q", ref])
        if OURS not in notes:   # the first run builds the snapshot; later runs reuse it
            prep(OURS, [str(CONTAINER), "--root", str(d / "ours"), "run", "--rm", ref, "true"])
    if shutil.which("podman"):
        prep("podman", podman_argv(d / "podman", "overlay") + ["pull", "-q", "--tls-verify=false", ref])
    if ud:
        uenv = udocker_env(d)
        prep("udocker", f"{ud} --allow-root -q pull --registry={b.reg.url} {img} && "
                        f"{ud} --allow-root -q create --name=bench {img} && "
                        f"{ud} --allow-root -q create --name=bench-r1 {img} && "
                        f"{ud} --allow-root -q setup --execmode=R1 bench-r1", env=uenv)
    prep("chroot", f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{d}/oci:img && "
                   f"umoci unpack --image {d}/oci:img {d}/bundle")
    dm, why = b.containerd(fs, base)
    if dm is not None and not why:
        prep("containerd", dm.pull("run", ref))
        notes["containerd"] = notes.get("containerd", "")
    else:
        notes["containerd"] = why
    cases = [
        Case(OURS, lambda _: [str(CONTAINER), "--root", str(d / "ours"), "run", "--rm", ref, "true"],
             fresh=False, unavailable=ours_available() or notes.get(OURS, "")),
        Case("podman run --network none",
             lambda _: podman_argv(d / "podman", "overlay") + PODMAN_RUN + [ref, "true"],
             fresh=False, unavailable=which_reason("podman") or notes.get("podman", "")),
        Case("udocker run (proot)", lambda _: [ud, "--allow-root", "-q", "run", "bench", "/bin/true"],
             env=lambda _: udocker_env(d), fresh=False,
             unavailable=("" if ud else "cannot run here: udocker not installed") or notes.get("udocker", "")),
        # udocker 1.3.17 exits 1 in R1 mode even when the command succeeded: check its output instead.
        Case("udocker run (runc, R1)",
             lambda _: f"{ud} --allow-root -q run bench-r1 /bin/sh -c 'echo BENCH-OK' | grep -q BENCH-OK",
             env=lambda _: udocker_env(d), fresh=False,
             unavailable=("" if ud else "cannot run here: udocker not installed") or notes.get("udocker", "")),
        Case("chroot DIR true", lambda _: ["chroot", str(d / "bundle" / "rootfs"), "/bin/true"],
             fresh=False, unavailable=notes.get("chroot", "")),
        Case("containerd ctr run --rm", lambda _: dm.run_rm("run", ref) if dm else [],
             fresh=False, unavailable=notes.get("containerd", "")),
    ]
    b.measure("4. run --rm IMAGE true", img, fs, base / "x", cases, runs, warmup)
    wipe(d)


def section_first_run(b: Bench, fs: str, base: Path, img: str, runs: int, warmup: int):
    """First run of a never-run image (the pull is untimed; our snapshot build is included)."""
    ref = f"{b.reg.host}/{img}"
    ud = b.udocker

    def prepare(argv, env=None):
        def f(d):
            secs, rc, _, tail = timed(argv(d), env=dict(os.environ, **(env(d) if env else {})))
            if rc:
                raise subprocess.CalledProcessError(rc, "prepare", stderr=tail)
        return f

    cases = [
        Case(OURS, lambda d: [str(CONTAINER), "--root", str(d / "root"), "run", "--rm", ref, "true"],
             prepare=prepare(lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", ref]),
             unavailable=ours_available()),
        Case("podman run --network none", lambda d: podman_argv(d, "overlay") + PODMAN_RUN + [ref, "true"],
             prepare=prepare(lambda d: podman_argv(d, "overlay") + ["pull", "-q", "--tls-verify=false", ref]),
             unavailable=which_reason("podman")),
        # Debian's proot 5.1 cannot load glibc 2.36 programs ("libc.so.6: cannot stat shared object"),
        # so the first run of the debian image uses udocker's runc mode (R1) with Debian's runc.
        Case("udocker create + run (runc, R1)",
             lambda d: f"{ud} --allow-root -q create --name=c {img} && {ud} --allow-root -q setup --execmode=R1 c "
                       f"&& {ud} --allow-root -q run c /bin/sh -c 'echo BENCH-OK' | grep -q BENCH-OK",
             prepare=prepare(lambda d: f"{ud} --allow-root -q pull --registry={b.reg.url} {img}", udocker_env),
             env=udocker_env, unavailable="" if ud else "cannot run here: udocker not installed"),
    ]
    b.measure("4b. first run of a never-run image", img, fs, base, cases, runs, warmup)


SNAP_DRIVER = Path(__file__).with_name("snapshot_driver.py")


def section_snapshot(b: Bench, fs: str, base: Path, img: str, runs: int, warmup: int):
    ref = f"{b.reg.host}/{img}"
    d = base / "snap"
    wipe(d)
    d.mkdir(parents=True)
    note = ours_available()
    src = None
    if not note:
        secs, rc, _, tail = timed([str(CONTAINER), "--root", str(d / "ours"), "pull", "-q", ref])
        if rc:
            note = f"failed (setup pull): {last_line(tail)}"
        else:
            p = subprocess.run([str(PY), str(SNAP_DRIVER), str(d / "ours"), ref], capture_output=True, text=True)
            if p.returncode:
                note = f"failed: {last_line(p.stderr)}"
            else:
                src = p.stdout.split()[1] if len(p.stdout.split()) > 1 else None
    if src is None:
        # Without our snapshot, compare the cp variants on umoci's rootfs of the same image.
        sh(f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{d}/oci:img && "
           f"umoci unpack --image {d}/oci:img {d}/bundle")
        src = str(d / "bundle" / "rootfs")
    cases = [
        Case(f"{OURS} (ensure_snapshot)", lambda _: [str(PY), str(SNAP_DRIVER), str(d / "ours"), ref],
             self_timed=True, fresh=False, unavailable=note),
        Case("cp -al", lambda x: ["cp", "-al", src, str(x / "copy")]),
        Case("cp -a", lambda x: ["cp", "-a", src, str(x / "copy")]),
    ]
    entries = sum(1 for _ in Path(src).rglob("*")) if src else 0
    b.measure("5. snapshot build", f"{img} rootfs ({entries} entries)", fs, d / "runs", cases, runs, warmup)
    wipe(d)


def section_rss(b: Bench, fs: str, base: Path, img: str, size_label: str):
    """Peak RSS (largest process, from wait4) and time of one pull of a big-layer image."""
    ref = f"{b.reg.host}/{img}"
    section = "6. peak RSS, pull of one big layer"
    cases = [
        (OURS, lambda d: [str(CONTAINER), "--root", str(d / "root"), "pull", "-q", ref], ours_available()),
        ("skopeo copy", lambda d: ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                                   f"oci:{d}/oci:img"], which_reason("skopeo")),
        ("umoci unpack (after skopeo)", None, which_reason("umoci")),
        ("podman pull (overlay)", lambda d: podman_argv(d, "overlay") + ["pull", "-q", "--tls-verify=false", ref],
         which_reason("podman")),
    ]
    for tool, cmd, why in cases:
        if b.args.quick and not why and tool not in (OURS, "skopeo copy"):
            why = "not run with --quick"
        rss = Row(section, f"{img} ({size_label})", fs, tool, unit="MiB", note=why)
        tm = Row(section + " (time)", f"{img} ({size_label})", fs, tool, note=why)
        if not why:
            d = base / f"rss-{tool.split()[0]}"
            wipe(d)
            d.mkdir(parents=True)
            if cmd is None:   # umoci unpack of skopeo's layout
                s0, rc0, _, t0 = timed(cases[1][1](d))
                secs, rc, kb, tail = timed(["umoci", "unpack", "--image", f"{d}/oci:img", f"{d}/bundle"], rss=True) \
                    if rc0 == 0 else (0, rc0, 0, t0)
            else:
                os.sync()
                secs, rc, kb, tail = timed(cmd(d), rss=True)
            if rc:
                rss.note = tm.note = f"failed (exit {rc}): {last_line(tail)}"
            else:
                rss.values.append(kb / 1024)
                tm.values.append(secs)
            wipe(d)
            log(f"{section} [{fs}] {tool}: {rss.values} MiB {tm.values} s {rss.note}")
        RESULTS.extend([rss, tm])


def section_gc_df(b: Bench, fs: str, base: Path, quick: bool):
    """tools/bench/gc_df.py: synthetic stores of 50 and 500 images (10 with --quick), the read-only
    commands in alternating rounds (medians), gc / rmi of half once."""
    script = Path(__file__).with_name("gc_df.py")
    section = "7. gc, df, fsck, sql, images, ps on stores of 50 and 500 images"
    if not script.exists():
        RESULTS.append(Row(section, "-", fs, OURS, note="not available: tools/bench/gc_df.py missing"))
        return
    d = base / "gcdf"
    wipe(d)
    d.mkdir(parents=True)
    argv = [str(PY), str(script), "--root", str(d / "root"), "--json", "--images", "10" if quick else "50,500"]
    p = subprocess.run(argv, capture_output=True, text=True)
    wipe(d)
    if p.returncode:
        RESULTS.append(Row(section, "-", fs, OURS, note=f"failed: {last_line(p.stderr)}"))
        return
    try:
        data = json.loads(p.stdout[p.stdout.index("["):] if p.stdout.lstrip().startswith("[")
                          else p.stdout[p.stdout.index("{"):])
    except ValueError:
        RESULTS.append(Row(section, "-", fs, OURS, note=f"failed: bad output {p.stdout[-200:]!r}"))
        return
    for res in data if isinstance(data, list) else [data]:
        GCDF.append(res)
        st = res.get("store", {})
        subject = (f"{st.get('images', '?')} images, {st.get('layers', '?')} layers, {st.get('blobs', '?')} blobs "
                   f"({st.get('blobs_after_gc', '?')} after gc), {st.get('containers', '?')} containers")
        for name, secs in res.get("seconds", {}).items():
            lo, hi = res.get("minmax", {}).get(name, (secs, secs))
            row = Row(section, subject, fs, f"{OURS} {name}", values=[lo, secs, hi] if lo != hi else [secs])
            if name in res.get("cpu", {}):
                row.extra["cpu"] = [res["cpu"][name]]
            RESULTS.append(row)
        log(f"{section} [{fs}]: {res.get('seconds')}")


PROFILES: list[tuple[str, str]] = []   # (title, text)


def section_profiles(b: Bench, base: Path, names: dict):
    """cProfile (all threads) of our cold pull, our run --rm and one snapshot build, on tmpfs."""
    if ours_available():
        return
    prof = [str(PY), str(Path(__file__).with_name("profile_cmd.py")), "--top", "18"]
    d = base / "profiles"
    wipe(d)
    d.mkdir(parents=True)
    app, bb = f"{b.reg.host}/{names['app1']}", f"{b.reg.host}/{names['busybox']}"
    steps = [
        (f"container pull {names['app1']} (cold, tmpfs)", prof + ["--", "--root", str(d / "a"), "pull", "-q", app]),
        (f"snapshot build of {names['app1']} (tmpfs)", prof + ["--snapshot", str(d / "a"), app]),
        ("setup", [str(CONTAINER), "--root", str(d / "b"), "pull", "-q", bb]),
        ("setup", [str(CONTAINER), "--root", str(d / "b"), "run", "--rm", bb, "true"]),
        (f"container run --rm {names['busybox']} true (tmpfs, snapshot cached)",
         prof + ["--", "--root", str(d / "b"), "run", "--rm", bb, "true"]),
    ]
    for title, argv in steps:
        p = subprocess.run(argv, capture_output=True, text=True)
        if title == "setup":
            continue
        head = next((line for line in p.stderr.splitlines() if line.startswith("wall ")), "")
        text = f"{head}\n{p.stdout}".replace(str(REPO) + "/", "")
        if p.returncode:
            text += f"\n(exit {p.returncode}: {last_line(p.stderr)})"
        PROFILES.append((title, text))
        log(f"profile: {title}: {head}")
    # Import time of the run path (python -X importtime), the biggest modules by cumulative time.
    p = subprocess.run([str(PY), "-X", "importtime", str(CONTAINER), "--root", str(d / "b"), "run", "--rm", bb,
                        "true"], capture_output=True, text=True)
    rows = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [x.strip() for x in line[len("import time:"):].split("|")]
            if parts[1].isdigit():
                rows.append((int(parts[1]), parts[2]))
    rows.sort(reverse=True)
    if rows:
        PROFILES.append(("imports of `container run` (python -X importtime, cumulative µs, top 15)",
                         "\n".join(f"{us:>9} {name}" for us, name in rows[:15])))
    wipe(d)


# -- setup: registry and images -----------------------------------------------------------------------------
def start_registry(cache: Path):
    from tools.registry import Registry
    run = cache / "registry-run"
    wipe(run)
    reg = Registry(cache / "registry", workdir=run)
    reg.start()
    return reg


def manifest_exists(reg, repo: str, tag: str) -> bool:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"{reg.url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


def prepare_images(reg, cache: Path, big_size: int) -> dict:
    """Build (once, cached) and push the benchmark images. Returns {name: 'repo:tag'} and stats."""
    layout = bimages.Layout(cache / "layout")
    tags = layout.tags()
    # Base images from the infra helper's tools/images.py when present: busybox and the debian minbase.
    if "busybox" not in tags or "debian" not in tags:
        import_base_images(layout, cache)
    t0 = time.time()
    bimages.build_app(layout, "debian" if "debian" in layout.tags() else "busybox")
    tag_big = bimages.build_big(layout, big_size, "busybox") if big_size else ""   # 0: section 6 not run
    if time.time() - t0 > 1:
        log(f"built benchmark images in {time.time() - t0:.0f}s")
    names = {"busybox": ("bench/busybox", "1", "busybox"), "debian": ("bench/debian", "1", "debian"),
             "app1": ("bench/app", "1", "app-1"), "app2": ("bench/app", "2", "app-2"),
             "appz": ("bench/appz", "1", "appz-1")}
    if tag_big:
        names["big"] = ("bench/big", tag_big, tag_big)
    out = {}
    for key, (repo, tag, ltag) in names.items():
        if ltag not in layout.tags():
            continue
        if not manifest_exists(reg, repo, tag):
            log(f"pushing {repo}:{tag}")
            bimages.push(layout, ltag, f"{reg.host}/{repo}:{tag}")
        out[key] = f"{repo}:{tag}"
    stats_file = cache / "image-stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    for key, (repo, tag, ltag) in names.items():
        if key in out and out[key] not in stats:
            stats[out[key]] = bimages.image_stats(layout, ltag)
    stats_file.write_text(json.dumps(stats, indent=1))
    return {"names": out, "stats": stats}


def import_base_images(layout, cache: Path) -> None:
    """busybox and the debootstrap debian from tools/images.py (shared with the tests' cache)."""
    try:
        from tools import images as infra
    except ImportError as e:
        infra = None
        log(f"tools/images.py not importable ({e})")
    tags = layout.tags()
    if infra is not None:
        if "busybox" not in tags:
            img = infra.build_all(cache / "infra")["busybox"]
            sh(["skopeo", "copy", "-q", "--preserve-digests", img.oci_ref, f"oci:{layout.path}:busybox"])
        if "debian" not in tags:
            log("building the debootstrap minbase debian image (once, cached; about a minute)")
            try:
                img = infra.build_debian()
                sh(["skopeo", "copy", "-q", "--preserve-digests", img.oci_ref, f"oci:{layout.path}:debian"])
            except Exception as e:  # no Debian mirror reachable, no debootstrap
                log(f"debian base image unavailable: {e}")
    if "busybox" not in layout.tags():
        log("using the bench's fallback busybox")
        lay = bimages.write_layer(layout, bimages.busybox_fallback_layer)
        bimages.compose(layout, "busybox", None, [lay])
    if "debian" not in layout.tags():
        log("no debian minbase image available: app images are built on busybox")


# -- report --------------------------------------------------------------------------------------------------
def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "MiB":
        return f"{v:.0f} MiB"
    return f"{v:.3g} {unit}"


def human_bytes(n: float) -> str:
    for u in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1000
    return f"{n:.1f} TB"


def is_ours(tool: str) -> bool:
    """Our rows: "container" or "container <what>" (not "containerd ...")."""
    return tool == OURS or tool.startswith(OURS + " ")


def ours_row(rows: list[Row]) -> Row | None:
    for r in rows:
        if r.tool == OURS or r.tool.startswith(OURS + " ("):
            return r
    return None


def _section_key(section: str) -> tuple:
    """'2b. cold pull ...' sorts after '2. ...' and before '3. ...'."""
    head = section.split(".")[0]
    digits = "".join(ch for ch in head if ch.isdigit()) or "0"
    return (int(digits), head, section)


def render_markdown(meta: dict) -> str:
    out = []
    w = out.append
    w("# Benchmarks: `container` side by side with skopeo, umoci, podman, udocker\n")
    w(f"Generated by `tools/bench/run{' --quick' if meta['quick'] else ''}` on {meta['date']} "
      f"(commit {meta['commit']}). Re-run it to refresh this page and the chart:\n")
    w("```sh\ntools/bench/run            # full: ext4 and tmpfs, 1 warm-up + 3 runs (20 for run latency); "
      "about half an hour\ntools/bench/run --quick    # tmpfs only, one run each, smaller images: about "
      "2 minutes once the images are cached\n```\n")
    w("It installs what it needs (Debian packages, the venv's `bench` extra, udocker in its own venv), starts "
      "a loopback `docker-registry`, builds and pushes the images below once (cached in "
      "`~/.cache/container-bench`), and must run as root.\n")
    w(f"Machine: {meta['machine']}. Load average at start {meta['load_start']}, at end {meta['load_end']}"
      f"{' — other work was running; numbers are noisy' if meta['noisy'] else ''}.\n")
    w("Method: each measurement runs every tool in turn, rotating the order round by round, each run "
      "on a fresh destination (every pull is a real pull), after `sync`; "
      f"{meta['warmup']} warm-up round(s) discarded, then {meta['runs']} measured runs "
      f"(run latency: {meta['run_runs']}); median, with min–max. "
      "Ratio = our median / the peer's median (below 1 means we are faster). "
      f"Disks: ext4 = `{meta['dirs']['ext4']}`, tmpfs = `{meta['dirs']['tmpfs']}`.\n")
    w("Images (loopback `docker-registry`, plain HTTP):\n")
    w("| image | layers | compressed | uncompressed | tar entries |")
    w("|---|---:|---:|---:|---:|")
    for ref, s in meta["images"].items():
        w(f"| {ref} | {s['layers']} | {human_bytes(s['size'])} | {human_bytes(s['uncompressed'])} | {s['entries']} |")
    w("")
    from tools.bench import goals12

    w(goals12.render([r.__dict__ for r in RESULTS], GCDF, meta))
    groups: dict[tuple, list[Row]] = {}
    for r in RESULTS:
        groups.setdefault((r.section, r.subject, r.fs), []).append(r)
    sections: dict[str, list] = {}
    for key, rows in groups.items():
        sections.setdefault(key[0], []).append((key, rows))
    for section in sorted(sections, key=_section_key):
        w(f"## {section}\n")
        has_bytes = any("bytes" in r.extra for _, rows in sections[section] for r in rows)
        w("| subject | fs | tool | median | min–max | CPU (user+sys) | runs |"
          + (" registry bytes |" if has_bytes else "") + " ours / this |")
        w("|---|---|---|---:|---:|---:|---:|" + ("---:|" if has_bytes else "") + "---:|")
        for (sec, subject, fs), rows in sections[section]:
            mine = ours_row(rows)
            for r in rows:
                if r.values and r.ok:
                    med, lo, hi = fmt(r.median, r.unit), fmt(min(r.values), r.unit), fmt(max(r.values), r.unit)
                else:
                    med, lo, hi = r.note or "-", "", ""
                    if r.values:
                        med = f"{fmt(r.median, r.unit)} ({r.note})"
                ratio = ""
                if mine and mine is not r and mine.ok and r.ok and r.median:
                    ratio = f"{mine.median / r.median:.2f}×"
                elif mine is r and r.ok:
                    ratio = "1"
                cpu = r.extra.get("cpu")
                cpu_s = fmt(statistics.median(cpu), "s") if cpu and r.ok else ""
                line = (f"| {subject} | {fs} | {r.tool} | {med} | {lo}{'–' if hi else ''}{hi} | {cpu_s} "
                        f"| {len(r.values)} |")
                if has_bytes:
                    bl = r.extra.get("bytes")
                    line += f" {human_bytes(statistics.median(bl)) if bl else ''} |"
                w(line + f" {ratio} |")
        w("")
    w("## Goals (issues 2, 3, 6)\n")
    for g in goals():
        w(f"- {g}")
    w("")
    if meta.get("notes"):
        w("## Notes\n")
        for n in meta["notes"]:
            w(f"- {n}")
        w("")
    if PROFILES:
        w("## Where the time goes (cProfile over all threads, waits removed; tmpfs)\n")
        w("Own time per function, merged over the worker threads; on 2 busy cores the thread times add up to "
          "more than the wall time.\n")
        for title, text in PROFILES:
            w(f"<details><summary>{title}</summary>\n\n```\n{text.strip()}\n```\n</details>\n")
    w("![benchmark chart](benchmarks.png)\n")
    return "\n".join(out)


def find(section_prefix: str, fs: str, tool: str, subject_has: str = "") -> Row | None:
    for r in RESULTS:
        if r.section.startswith(section_prefix) and r.fs == fs and r.tool == tool and subject_has in r.subject:
            return r
    return None


def goals() -> list[str]:
    res = []

    def ratio(sec, fs, peer, goal, label):
        a, p = find(sec, fs, OURS), find(sec, fs, peer)
        if a and p and a.ok and p.ok:
            x = a.median / p.median
            res.append(f"{label} on {fs}: {x:.2f}× {peer} (goal ≤ {goal}×): {'met' if x <= goal else 'MISSED'}")
        else:
            why = (a.note if a and not a.ok else "") or (p.note if p and not p.ok else "") or "not measured"
            res.append(f"{label} on {fs}: not measured ({why})")

    ratio("1.", "tmpfs", "skopeo copy", 1.2, "download phase")
    ratio("1.", "ext4", "skopeo copy", 1.2, "download phase")
    ratio("2. ", "tmpfs", "skopeo copy + umoci unpack", 0.25, "cold pull+unpack")
    ratio("2. ", "ext4", "skopeo copy + umoci unpack", 0.65, "cold pull+unpack")
    for fs in ("tmpfs", "ext4"):
        a = find("3.", fs, OURS)
        if a and a.ok and a.extra.get("bytes"):
            res.append(f"second pull on {fs}: fetched {human_bytes(statistics.median(a.extra['bytes']))} "
                       f"(the new top layer plus manifest/config only: see the per-tool bytes above)")
    for a in [r for r in RESULTS if r.section.startswith("5.") and is_ours(r.tool) and r.ok]:
        c = find("5.", a.fs, "cp -al", a.subject)
        if c and c.ok:
            x = a.median / c.median
            res.append(f"snapshot of {a.subject} on {a.fs}: {x:.2f}× cp -al (goal ≤ 0.8×): "
                       f"{'met' if x <= 0.8 else 'MISSED'}")
    for fs in ("tmpfs", "ext4"):
        a, p = find("4. ", fs, OURS), find("4. ", fs, "podman run --network none")
        if a and a.ok:
            ms = a.median * 1000
            pod = f", podman {p.median * 1000:.0f} ms" if p and p.ok else ""
            res.append(f"run --rm busybox true on {fs}: {ms:.0f} ms (goal ≤ 60 ms, at least below podman"
                       f"{pod}): {'met' if ms <= 60 else ('below podman' if p and p.ok and a.median < p.median else 'MISSED')}")
    return res


def render_chart(path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (pip install -e '.[bench]'): no chart")
        return False
    groups: dict[tuple, list[Row]] = {}
    for r in RESULTS:
        if r.ok and r.unit in ("s", "MiB"):
            groups.setdefault((r.section, r.subject, r.fs, r.unit), []).append(r)
    keys = [k for k in groups if len(groups[k]) >= 1]
    if not keys:
        return False
    keys.sort(key=lambda k: (_section_key(k[0]), k[2]))
    n = len(keys)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.2 + 1.9 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        rs = groups[key]
        names = [r.tool for r in rs]
        scale = 1000 if key[3] == "s" and max(r.median for r in rs) < 2 else 1
        unit = "ms" if scale == 1000 else key[3]
        meds = [r.median * scale for r in rs]
        lo = [r.median * scale - min(r.values) * scale for r in rs]
        hi = [max(r.values) * scale - r.median * scale for r in rs]
        colors = ["#d62728" if is_ours(r.tool) else "#7f7f7f" for r in rs]
        y = range(len(rs))
        ax.barh(list(y), meds, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{key[0]} — {key[2]}\n{key[1]}", fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for yi, m in zip(y, meds):
            ax.text(m, yi - 0.25, f" {m:.0f}" if m >= 100 else f" {m:.2f}", va="bottom", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("container (red) vs peers (grey): median, whiskers min–max; shorter is better", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def print_table() -> None:
    print(f"{'section':40} {'fs':6} {'tool':34} {'median':>10} {'min-max':>20} {'ours/this':>9}")
    groups: dict[tuple, list[Row]] = {}
    for r in RESULTS:
        groups.setdefault((r.section, r.subject, r.fs), []).append(r)
    for (sec, subject, fs), rows in groups.items():
        mine = ours_row(rows)
        for r in rows:
            if r.ok:
                med = fmt(r.median, r.unit)
                mm = f"{fmt(min(r.values), r.unit)}–{fmt(max(r.values), r.unit)}"
            else:
                med, mm = "", r.note[:60]
            ratio = f"{mine.median / r.median:.2f}x" if (mine and mine is not r and mine.ok and r.ok) else ""
            print(f"{sec[:40]:40} {fs:6} {r.tool[:34]:34} {med:>10} {mm:>20} {ratio:>9}")


# -- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/bench/run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few runs, smaller big layer: under 2 minutes")
    ap.add_argument("--runs", type=int, help="measured runs per tool (default 3; --quick 1)")
    ap.add_argument("--warmup", type=int, help="discarded warm-up rounds (default 1; --quick 0)")
    ap.add_argument("--only", default="", help="comma list of sections to run: 1-7 (e.g. 2,4)")
    ap.add_argument("--fs", default=None, help="where to measure: ext4,tmpfs (default both; --quick: tmpfs)")
    ap.add_argument("--ext4-dir", default="/var/tmp/container-bench")
    ap.add_argument("--tmpfs-dir", default="/dev/shm/container-bench")
    ap.add_argument("--cache", default=os.environ.get("BENCH_CACHE") or
                    str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "container-bench"))
    ap.add_argument("--udocker", default=os.environ.get("BENCH_UDOCKER", ""), help="udocker executable")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--profile", action="store_true", help="also profile our pull/run/snapshot (default unless --quick)")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite docs/benchmarks.md and the chart from the cache's last-results.json")
    args = ap.parse_args(argv)
    if args.render_only:
        saved = json.loads((Path(args.cache) / "last-results.json").read_text())
        RESULTS.extend(Row(**r) for r in saved["rows"])
        PROFILES.extend(tuple(p) for p in saved.get("profiles", []))
        print_table()
        out = Path(args.out)
        md = render_markdown(saved["meta"])
        if not render_chart(out.with_suffix(".png")):
            md = md.replace("![benchmark chart](benchmarks.png)\n", "(no chart: matplotlib not installed)\n")
        out.write_text(md)
        return 0
    if os.geteuid() != 0:
        log("run as root: podman/umoci/chroot comparisons and our namespaces need it")
        return 2
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if quick else 1)
    run_runs = 3 if quick else 20
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    want = (lambda s: not only or s in only)
    big_size = (64 if quick else 1024) * bimages.MB
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ud = args.udocker if args.udocker and Path(args.udocker).exists() else None

    # A user's installed `container` has its bytecode cached (pip compiles at install; an editable
    # install on first import). With PYTHONDONTWRITEBYTECODE set (as in some CI shells) every call
    # would recompile the engine modules (~70-130 ms): measure what users get instead.
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        log("PYTHONDONTWRITEBYTECODE was set: unset for the benchmark (users have cached bytecode)")
    subprocess.run([str(PY), "-m", "compileall", "-q", *(str(REPO / d) for d in ("cas", "engine", "cli", "schema"))],
                   capture_output=True)
    load_start = os.getloadavg()
    reg = start_registry(cache)
    try:
        info = prepare_images(reg, cache, big_size if want("6") else 0)
        names = info["names"]
        b = Bench(args, reg, ud)
        app1, app2 = names["app1"], names["app2"]
        pull_img = names["debian"] if quick and "debian" in names else app1
        dirs = {"ext4": Path(args.ext4_dir), "tmpfs": Path(args.tmpfs_dir)}
        notes = [
            "Peers as Debian 12 ships them: skopeo, umoci, podman (with runc: crun is not installed; "
            "`--cgroup-manager cgroupfs --events-backend file`, throwaway `--root/--runroot` per run; "
            "`--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` because podman's default rlimits exceed what "
            "a process without CAP_SYS_RESOURCE may set here), udocker from PyPI in its own venv.",
            "udocker's `install` downloads its tools tarball from the internet, which this machine cannot reach: "
            "it is pointed at Debian's `proot` (mode P1) and `runc` (mode R1) instead (UDOCKER_TARBALL empty, "
            "UDOCKER_USE_PROOT_EXECUTABLE, UDOCKER_USE_RUNC_EXECUTABLE). Debian's proot 5.1 runs the static "
            "busybox but cannot load glibc 2.36 programs, so the debian first-run row uses R1.",
            "`container` is timed through `.venv/bin/container` (the console script), every run with a fresh "
            "`--root`; `run` uses its own defaults (namespaces, overlay). Our snapshot build is timed in-process "
            "around engine.layer.snapshot.ensure_snapshot (tools/bench/snapshot_driver.py); `cp` includes its exec.",
            "Peak RSS is GNU time's %M (the largest single process of the command's tree).",
        ]
        if "debian" not in names:
            notes.append("no debootstrap debian base image was available: the app image sits on busybox")
        if quick:
            notes.append(f"--quick: one run per tool; cold pulls and the snapshot use {pull_img} instead of "
                         f"{app1}; the big layer is 64 MB; sections 2b and 4b and the slowest peers are skipped")
        fs_list = args.fs or ("tmpfs" if quick else "ext4,tmpfs")
        if quick and not args.fs:
            notes.append("--quick measures on tmpfs only (add --fs ext4,tmpfs for both)")
        for fs in [f.strip() for f in fs_list.split(",") if f.strip()]:
            base = dirs[fs]
            wipe(base)
            base.mkdir(parents=True, exist_ok=True)
            real = fstype(base)
            if real != fs:
                notes.append(f"{fs} dir {base} is on {real}")
            t0 = time.time()
            if want("1") or want("2"):
                section_pull(b, fs, base, pull_img, runs, warmup)
            if (want("2") or want("2b")) and not quick and "appz" in names:
                section_zstd(b, fs, base, names["appz"], runs, warmup)
            if want("3"):
                section_second_pull(b, fs, base, app1, app2, runs, warmup)
            if want("4"):
                section_run(b, fs, base, names["busybox"], run_runs, 3 if not quick else 1)
                if not quick:
                    section_first_run(b, fs, base, names.get("debian", names["busybox"]), runs, warmup)
            if want("5"):
                for img in ([pull_img] if quick else [names.get("debian"), app1]):
                    if img:
                        section_snapshot(b, fs, base, img, runs + (1 if quick else 2), 1)
            if want("6") and "big" in names:
                section_rss(b, fs, base, names["big"], f"{big_size // bimages.MB} MB layer")
            if want("7"):
                section_gc_df(b, fs, base, quick)
            if fs == "tmpfs" and (args.profile or (not quick and not only)):
                section_profiles(b, base, names)
            b.stop_daemons()
            wipe(base)
            log(f"{fs}: done in {time.time() - t0:.0f}s")
    finally:
        if "b" in locals():
            b.stop_daemons()
        reg.stop()
    load_end = os.getloadavg()
    commit = sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    meta = {
        "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit or "?",
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, "
                   f"Python {platform.python_version()}",
        "load_start": " ".join(f"{x:.2f}" for x in load_start),
        "load_end": " ".join(f"{x:.2f}" for x in load_end),
        "noisy": max(load_start[0], load_end[0]) > 0.5, "runs": runs, "warmup": warmup, "run_runs": run_runs,
        "dirs": {k: str(v) for k, v in dirs.items()},
        "images": {k: v for k, v in info["stats"].items() if k in names.values()},
        "notes": notes,
    }
    print_table()
    (cache / "last-results.json").write_text(json.dumps(
        {"meta": meta, "rows": [r.__dict__ for r in RESULTS], "profiles": PROFILES}, indent=1))
    if not args.no_write:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        png = out.with_suffix(".png")
        md = render_markdown(meta)
        if not render_chart(png):
            md = md.replace("![benchmark chart](benchmarks.png)\n", "(no chart: matplotlib not installed)\n")
        out.write_text(md)
        log(f"wrote {out}" + (f" and {png}" if png.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
