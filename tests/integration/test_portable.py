"""The macOS case: everything but `run` (and unpacking) is portable code.

A child interpreter plays a non-Linux host: sys.platform is "darwin", the os functions Python
has only on Linux are gone (xattrs, sched_*affinity, pidfd_open, memfd_create, ...), and libc
has no Linux syscalls (unshare, mount, pivot_root, syncfs, ...). In it, every module outside
engine/runtime imports, the store's read and maintenance commands work on a store a Linux pull
made, and `run` says in one line why it cannot, with docker's 125.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path


LINUX_ONLY_OS = ("getxattr", "setxattr", "listxattr", "removexattr", "sched_getaffinity", "sched_setaffinity",
                 "pidfd_open", "memfd_create", "posix_fadvise", "posix_fallocate", "splice", "copy_file_range",
                 "eventfd", "unshare", "setns", "O_PATH", "O_TMPFILE")
LINUX_ONLY_LIBC = ("unshare", "mount", "umount2", "pivot_root", "syncfs", "sethostname", "prctl", "setns")

FAKE_HOST = f"""
import ctypes, os, sys
import urllib.request  # noqa: F401  (imports macOS-only _scproxy when sys.platform is darwin)
sys.platform = "darwin"
for n in {LINUX_ONLY_OS!r}:
    if hasattr(os, n):
        delattr(os, n)
_CDLL = ctypes.CDLL
class _NoLinux(_CDLL):
    def __getattr__(self, name):
        if name in {LINUX_ONLY_LIBC!r}:
            raise AttributeError(name)
        return _CDLL.__getattr__(self, name)
    def __getitem__(self, name):
        if name in {LINUX_ONLY_LIBC!r}:
            raise AttributeError(name)
        return _CDLL.__getitem__(self, name)
ctypes.CDLL = _NoLinux
"""


def _modules() -> list[str]:
    import importlib

    out = []
    for top in ("cas", "schema", "engine", "cli"):
        pkg = importlib.import_module(f"container.{top}")
        out.append(pkg.__name__)
        out += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}.")]
    return [m for m in out if not m.startswith("container.engine.runtime.") and m != "container.cli.__main__"]


def _fake(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FAKE_HOST + code], capture_output=True, text=True,
                          timeout=timeout)


def test_every_module_outside_runtime_imports_without_linux():
    mods = _modules()
    assert "container.engine.pull" in mods and "container.cli.app" in mods and len(mods) > 30
    r = _fake("import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok')" % mods)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    code = f"import sys\nsys.argv = ['container', '--root', {str(root)!r}, *{list(args)!r}]\n" \
           "from container.cli.app import main\nmain()\n"
    return _fake(code)


def test_store_commands_work_on_a_non_linux_host_and_run_says_why_not(cli, root, pushed):
    img = pushed["busybox"]
    cli("pull", img.ref, check=True)                     # a Linux host filled the store
    r = _cli(root, "images", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["ImageID"] == img.config_digest
    r = _cli(root, "inspect", img.ref)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["RootFS"]["Layers"] == img.diff_ids, r.stderr
    for args in (["ps", "-a"], ["df"], ["gc", "--dry-run"], ["sql", "SELECT count(*) FROM image"], ["fsck"]):
        r = _cli(root, *args)
        assert r.returncode == 0, (args, r.stderr)
    r = _cli(root, "run", "--rm", img.ref, "true")
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == ["Error: container run needs Linux (namespaces, overlayfs, chroot); "
                                             "this host is darwin"]
