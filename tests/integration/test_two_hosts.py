"""Two hosts on this machine sharing one store (docs/shared-store.md): one ROOT, seen by host B
through a bind mount, one PostgreSQL database, two host ids (CONTAINER_HOST_ID).

- concurrent pulls of overlapping images from both hosts fetch each blob from the registry once;
- a run on B of an image A pulled downloads and unpacks nothing;
- gc/prune on A while B runs a container keep B's container and its content;
- B killed with SIGKILL: once its heartbeat is older than the lease expiry, A's gc reclaims B's
  container rows, ROOT/hosts/<B>/ state, and then what only B used.

Needs root (bind mounts, container run) and PostgreSQL (the `pg` fixture).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checks import json_lines
from conftest import ContainerCli

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                       reason="bind mounts and container run need root on Linux"),
]

EXPIRY = 3          # seconds: CONTAINER_LEASE_EXPIRY for both hosts


@pytest.fixture
def hosts(tmp_path, pg_url):
    shared = tmp_path / "shared"
    shared.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(mnt)], check=True)
    out = []
    for name, root in (("host-a", shared), ("host-b", mnt)):
        work = tmp_path / name
        work.mkdir()
        c = ContainerCli(root, work)
        c.env.update(CONTAINER_DB=pg_url, CONTAINER_HOST_ID=name, CONTAINER_LEASE_EXPIRY=str(EXPIRY))
        c.host = name
        out.append(c)
    try:
        yield out
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def start(c: ContainerCli, *args) -> subprocess.Popen:
    return subprocess.Popen([str(c.exe), "--root", str(c.root), *map(str, args)], env=c.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def finish(p: subprocess.Popen, timeout: float = 120) -> str:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}: {err}"
    return out


def entries(d: Path) -> dict:
    """name -> (inode, mtime) of a store folder's entries."""
    return {e.name: (e.inode(), e.stat(follow_symlinks=False).st_mtime_ns) for e in os.scandir(d)} \
        if d.is_dir() else {}


def test_two_hosts_share_one_store(hosts, pushed, registry):
    a, b = hosts
    ia, ib, bb = pushed["shared-a"], pushed["shared-b"], pushed["busybox"]
    mark = registry.mark()
    # Concurrent pulls of overlapping images on both hosts (shared-a and shared-b share layers).
    procs = [start(a, "pull", "-q", ia.ref), start(b, "pull", "-q", ib.ref),
             start(a, "pull", "-q", bb.ref), start(b, "pull", "-q", bb.ref)]
    for p in procs:
        finish(p)
    for p in (start(a, "pull", "-q", ib.ref), start(b, "pull", "-q", ia.ref)):
        finish(p)
    wanted = set(ia.layer_digests) | set(ib.layer_digests) | set(bb.layer_digests)
    assert set(ia.layer_digests) & set(ib.layer_digests)             # they do overlap
    for d in wanted | {ia.config_digest, ib.config_digest, bb.config_digest}:
        assert registry.blob_gets(d, since=mark) == 1, d                # once, for both hosts together
    assert registry.blob_gets(since=mark) == len(wanted) + 3
    # Both hosts list the same images.
    names = {r["Repository"] for r in json_lines(b("images", "--format", "json", check=True).stdout)}
    assert names == {x.ref.rsplit(":", 1)[0] for x in (ia, ib, bb)}

    # A run on B of what A pulled: no download, no unpack, no new snapshot.
    shared = a.root
    before = {sub: entries(shared / sub) for sub in ("blobs/sha256", "layers", "snapshots")}
    mark = registry.mark()
    r = b("run", "--rm", ia.ref, "true")
    assert r.returncode == 0, r.stderr
    assert registry.blob_gets(since=mark) == 0 and "Unable to find image" not in r.stderr
    assert {sub: entries(shared / sub) for sub in before} == before

    # Per-host state: B's container under ROOT/hosts/host-b/, not A's.
    long = start(b, "run", "--name", "long-b", bb.ref, "sleep", "120")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ps = json_lines(b("ps", "--format", "json", check=True).stdout)
        if any(c["Names"] == "long-b" for c in ps):
            break
        time.sleep(0.2)
    else:
        pytest.fail("B's container never showed as running")
    cid = json.loads(b("inspect", "long-b", check=True).stdout)[0]["Id"]
    bdir = shared / "hosts" / "host-b" / "containers" / cid
    assert bdir.is_dir() and not (shared / "containers").exists()
    assert [c["Names"] for c in json_lines(a("ps", "--format", "json", check=True).stdout)] == ["long-b"]

    # gc and prune on A while B's container runs: B's container, its image and snapshot stay.
    snaps = set(entries(shared / "snapshots"))
    a("container", "prune", "-f", check=True)
    a("system", "prune", "-a", "-f", check=True)
    a("gc", check=True)
    assert bdir.is_dir() and long.poll() is None
    assert [c["Names"] for c in json_lines(b("ps", "--format", "json", check=True).stdout)] == ["long-b"]
    kept = set(entries(shared / "snapshots"))
    assert kept and kept <= snaps
    assert b("run", "--rm", bb.ref, "true").returncode == 0       # B's image is still whole

    # B dies (SIGKILL: its supervisor and the container). Before the expiry A keeps its state;
    # after it, A's gc reclaims B's container and dir, then what nothing else uses.
    pid = json.loads(b("inspect", "long-b", check=True).stdout)[0]["State"]["Pid"]
    os.killpg(long.pid, signal.SIGKILL)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    long.wait(timeout=10)
    a("system", "prune", "-a", "-f", check=True)
    assert bdir.is_dir()                                            # not yet expired: kept
    time.sleep(EXPIRY + 1)
    gone = json_lines(a("ps", "-a", "--format", "json", check=True).stdout)
    assert [(c["Names"], c["State"]) for c in gone] == [("long-b", "exited")]     # its host is gone
    a("system", "prune", "-a", "-f", check=True)
    assert not bdir.exists()
    assert json_lines(a("ps", "-a", "--format", "json", check=True).stdout) == []
    assert entries(shared / "snapshots") == {} and entries(shared / "layers") == {}
