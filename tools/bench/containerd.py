"""containerd as a benchmark peer: a private daemon (its own root, state dir and socket; no system
service) driven with `ctr`.

Debian's containerd (1.6) is ~100 MB installed, so tools/setup.sh leaves it out and the benchmark
installs it (`ensure_installed`). One daemon per filesystem under test (its root on that fs), long
lived as containerd is meant to be; every cold pull goes into a fresh namespace with the content
store's sharing policy "isolated", so nothing another run fetched is reused (a real pull: fetch,
then unpack into the overlayfs snapshotter). `ctr run --rm` runs in one namespace pulled once.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"""


def ensure_installed() -> str:
    """"" when containerd and ctr are there (installing Debian's package if apt can), else why not."""
    if shutil.which("containerd") and shutil.which("ctr"):
        return ""
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "containerd"],
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), capture_output=True)
    if shutil.which("containerd") and shutil.which("ctr"):
        return ""
    return "cannot run here: containerd is not installed (apt-get install containerd)"


class Daemon:
    """A private containerd under `base` (root, state, socket); stop() ends it and unmounts."""

    def __init__(self, base: Path):
        self.base = base
        self.sock = str(base / "containerd.sock")
        self.proc: subprocess.Popen | None = None
        self.ids = itertools.count()
        self.error = ""

    def start(self) -> str:
        """"" when serving, else why not."""
        if self.proc is not None:
            return self.error
        self.base.mkdir(parents=True, exist_ok=True)
        cfg = self.base / "config.toml"
        cfg.write_text(CONFIG.format(root=self.base / "root", state=self.base / "state", sock=self.sock))
        log = open(self.base / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log,
                                     start_new_session=True)
        for _ in range(100):
            if subprocess.run(["ctr", "-a", self.sock, "version"], capture_output=True).returncode == 0:
                return ""
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.error = "failed: containerd did not start (see its log)"
        return self.error

    def ctr(self, ns: str, *args: str) -> list[str]:
        return ["ctr", "-a", self.sock, "-n", ns, *args]

    def pull(self, ns: str, ref: str) -> list[str]:
        """`ctr images pull` (fetch + unpack) from the loopback registry."""
        return self.ctr(ns, "images", "pull", "--plain-http", ref)

    def run_rm(self, ns: str, ref: str) -> list[str]:
        return self.ctr(ns, "run", "--rm", ref, f"bench-{next(self.ids)}", "true")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        # the overlayfs snapshotter and the shims may leave mounts under its root and state
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(str(self.base) + "/"):
                    mounts.append(mp)
        for mp in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)


def namespace(d: Path) -> str:
    """A fresh namespace per run directory (a cold pull)."""
    return "b-" + d.name
