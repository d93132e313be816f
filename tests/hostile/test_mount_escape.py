"""Hostile images against -v / --mount / --tmpfs: symlinks in the image that point at the host's
/etc, at /tmp paths, up through "..", or into /proc, must never make a mount, a created mount
target or a volume's copy-up land outside the container's rootfs (engine/runtime/mounts.py).

Each case runs on the overlay rootfs and on the private copy (CONTAINER_ROOTFS=copy) and checks
the host: the paths the attacks aim at never appear, the host's /etc is unchanged, and the image's
snapshot is unchanged.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

from checks import one_error
from conftest import ContainerCli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from test_volumes import build_volimg  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="run needs root on Linux")

TOKEN = secrets.token_hex(4)
ABS = f"/tmp/container-pwned-{TOKEN}"
REL = f"/tmp/container-pwned-rel-{TOKEN}"
SECRET_DIR = f"/tmp/container-secret-{TOKEN}"
ETC_NAME = f"container-pwned-{TOKEN}"


def evil(L) -> None:
    L.symlink("evil-abs", ABS)
    L.symlink("evil-rel", "../../../../../../.." + REL)
    L.symlink("etclink", "/etc")
    L.symlink("srv/loop", "/srv/loop")
    L.symlink("proclink", "/proc/sys/kernel")
    L.symlink("steal", SECRET_DIR)


@pytest.fixture(scope="module")
def store(tmp_path_factory, pushed):
    base = tmp_path_factory.mktemp("mountesc")
    root = base / "root"
    root.mkdir()
    c = ContainerCli(root, base)
    c("load", "-q", "-i", str(build_volimg(base / "evil", evil)), check=True)
    c("run", "--rm", "volimg", "true", check=True)            # the snapshot built
    os.makedirs(SECRET_DIR, exist_ok=True)
    Path(SECRET_DIR, "secret.txt").write_text("host secret\n")
    yield c
    import shutil

    shutil.rmtree(SECRET_DIR, ignore_errors=True)


def host_etc() -> list[str]:
    return sorted(os.listdir("/etc"))


def snapshot_listing(root: Path) -> list[str]:
    snaps = root / "snapshots"
    return sorted(str(p.relative_to(snaps)) for p in snaps.rglob("*"))


@pytest.fixture(params=["overlay", "copy"])
def env(request):
    return {"CONTAINER_ROOTFS": "copy"} if request.param == "copy" else {}


def test_symlinked_targets_stay_inside(store, tmp_path, env):
    host = tmp_path / "src"
    host.mkdir()
    (host / "f").write_text("mine\n")
    etc, snaps = host_etc(), snapshot_listing(store.root)
    script = (f"cat {ABS}/sub/f {REL}/f /etc/{ETC_NAME}/f; ls -d /tmp/container-pwned-*; "
              f"grep -c ' {ABS}/t ' /proc/mounts")
    r = store("run", "--rm", "-v", f"{host}:/evil-abs/sub", "-v", f"{host}:/evil-rel",
              "-v", f"{host}:/etclink/{ETC_NAME}:ro", "--tmpfs", "/evil-abs/t", "volimg", "sh", "-c", script, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"mine\nmine\nmine\n{ABS}\n{REL}\n1\n"          # where the container sees them
    assert not os.path.lexists(ABS) and not os.path.lexists(REL)       # never on the host
    assert host_etc() == etc and not os.path.lexists(f"/etc/{ETC_NAME}")
    assert sorted(os.listdir(host)) == ["f"]
    assert snapshot_listing(store.root) == snaps


def test_targets_into_proc_or_a_loop_are_refused(store, tmp_path, env):
    for target, says in (("/proclink/x", "resolves to /proc/sys/kernel/x"), ("/srv/loop/x", "symbolic links")):
        r = store("run", "--rm", "--tmpfs", target, "volimg", "true", env=env)
        assert r.returncode == 125 and says in one_error(r), r.stderr
    assert os.listdir(store.root / "containers") == []


def test_copy_up_never_reads_the_host(store, env):
    r = store("run", "--rm", "-v", "stolen:/steal", "volimg", "sh", "-c", f"ls -A /steal {SECRET_DIR}", env=env)
    assert r.returncode == 0, r.stderr
    assert "secret.txt" not in r.stdout
    assert os.listdir(store.root / "volumes" / "stolen" / "_data") == []
    assert Path(SECRET_DIR, "secret.txt").read_text() == "host secret\n"
    store("volume", "rm", "stolen", check=True)
