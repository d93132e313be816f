"""Hostile input at the CLI and a damaged store (issue 5 item 3): bad references and platforms, bad
--root (a file, under a file, read-only, immutable, full), metadata.db damaged in every way we could
think of, a blob corrupted on disk after the pull, a store from a newer version.

Every failing command: exactly one "Error:" line, last on stderr, non-zero exit, no traceback, and
nothing lost (the store works again once the cause is gone)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from checks import one_error, store_state

FAST = {"CONTAINER_REGISTRY_BACKOFF": "0.01", "CONTAINER_REGISTRY_ATTEMPTS": "2"}




# -------------------------------------------------------------------------------------------- references
BAD_REFS = ["", " ", ":justtag", "@sha256:" + "f" * 64, "Uppercase:tag", "test:5000/Uppercase/lowercase:tag",
            "aa/asdf$$^/aa", "a/../b", "../../etc/passwd", "/etc/passwd", "a//b", "busybox:", "busybox@sha256:abc",
            "busybox@sha256:" + "F" * 64, "busybox@md5:" + "f" * 32, "busybox@sha256:../../../etc", "busybox:../../x",
            "busybox:" + "t" * 129, "x/" * 130 + "y", "[2001:db8::1]:5000", "[fe80::1%eth0]:5000/repo", "f" * 64,
            "busybox:tag\nError: fake\x1b[2J", "bùsybox", "-busybox", "http://127.0.0.1/x", "a:b:c"]


def test_bad_references_are_one_line(cli):
    """pull and run for every bad reference, inspect/rmi for a few: docker's wording, one line, exit != 0."""
    for i, bad in enumerate(BAD_REFS):
        cmds = [["pull", bad], ["run", "--rm", bad, "true"]]
        if i % 5 == 0:
            cmds += [["inspect", bad], ["rmi", bad]]
        for args in cmds:
            r = cli(*args, env=FAST, timeout=30)
            line = one_error(r)
            assert "\x1b" not in r.stderr, r.stderr
            if args[0] == "pull" and not bad.startswith("-"):
                assert "invalid reference format" in line, line
            if args[0] == "run":
                assert r.returncode in (125, 2), (bad, r.returncode)


def test_bad_tag_target_is_one_line(cli, pushed):
    cli("pull", pushed["busybox"].ref, check=True, env=FAST)
    for bad in ("x/UPPER", "a:../../b", "a@sha256:abc", "", "x:" + "t" * 200):
        line = one_error(cli("tag", pushed["busybox"].ref, bad))
        assert "invalid" in line.lower(), line


# -------------------------------------------------------------------------------------------- platforms
BAD_PLATFORMS = ["/", "linux/", "/amd64", "linux//amd64", "linux/amd64/v8/extra", "../../x", "linux/../..",
                 "linux/amd\n64", "a" * 1000, "windows", "li nux/amd64", "linux/ämd64", "linux/amd64/",
                 "linux/amd64/\x7f", "linux/amd64\x1b[2J"]


@pytest.mark.parametrize("bad", BAD_PLATFORMS, ids=lambda s: repr(s)[:30])
def test_bad_platform_is_one_line(cli, pushed, root, bad):
    r = cli("pull", "--platform", bad, pushed["busybox"].ref, env=FAST)
    one_error(r)
    blobs, layers, rows = store_state(root)
    assert rows.get("Image", 0) == 0 and layers == [], (layers, rows)


def test_platform_not_in_image_is_one_line(cli, pushed, root):
    line = one_error(cli("pull", "--platform", "linux/s390x", pushed["busybox"].ref, env=FAST))
    assert "platform" in line
    line = one_error(cli("pull", "--platform", "linux/s390x", pushed["multiarch"].ref, env=FAST))
    assert "platform" in line or "manifest" in line, line


# -------------------------------------------------------------------------------------------- bad --root
COMMANDS = [["images"], ["ps", "-a"], ["df"], ["fsck"], ["gc"], ["prune", "-f"], ["rmi", "x"], ["rm", "x"],
            ["inspect", "x"]]


def all_commands_fail_cleanly(cli, root, ref, *, expect: str | None = None):
    for args in COMMANDS + [["pull", ref], ["run", "--rm", ref, "true"]]:
        r = cli(*args, root=root, env=FAST, timeout=60)
        line = one_error(r)
        if expect and args[0] not in ("rmi", "rm", "inspect"):
            assert expect in line, (args, line)


def test_root_is_a_file_or_under_a_file(cli, tmp_path, pushed):
    f = tmp_path / "afile"
    f.write_text("keep me\n")
    all_commands_fail_cleanly(cli, f, pushed["busybox"].ref, expect="cannot use store root")
    all_commands_fail_cleanly(cli, f / "sub", pushed["busybox"].ref, expect="cannot use store root")
    assert f.read_text() == "keep me\n"


def test_root_with_a_file_where_a_store_dir_goes(cli, tmp_path, pushed):
    for sub in ("blobs", "layers", "ingest"):
        r = tmp_path / f"root-{sub}"
        r.mkdir()
        (r / sub).write_text("x")
        line = one_error(cli("pull", pushed["busybox"].ref, root=r, env=FAST))
        assert "store" in line or "Not a directory" in line, line
        assert (r / sub).read_text() == "x"


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.mark.root
def test_read_only_root_then_writable_again(cli, tmp_path, pushed):
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    root = tmp_path / "ro"
    root.mkdir()
    img = pushed["busybox"]
    cli("pull", img.ref, root=root, env=FAST, check=True)
    if not (_mount("--bind", str(root), str(root)) and _mount("-o", "remount,bind,ro", str(root))):
        pytest.skip("cannot make a read-only bind mount")
    try:
        for args in (["pull", pushed["layered"].ref], ["run", "--rm", img.ref, "true"], ["rmi", img.ref],
                     ["gc"], ["prune", "-af"]):
            r = cli(*args, root=root, env=FAST)
            line = one_error(r)
            assert "read-only" in line.lower() or "cannot" in line.lower() or "store" in line.lower(), (args, line)
        # the rest may refuse too, in one line
        for args in (["images"], ["df"], ["fsck"]):
            r = cli(*args, root=root)
            if r.returncode != 0:
                one_error(r)
    finally:
        subprocess.run(["umount", str(root)])
    assert cli("run", "--rm", img.ref, "true", root=root, env=FAST).returncode == 0


@pytest.mark.root
def test_immutable_root(cli, tmp_path, pushed):
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    root = tmp_path / "immutable"
    root.mkdir()
    if subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        all_commands_fail_cleanly(cli, root, pushed["busybox"].ref)
        assert list(root.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(root)])
    cli("pull", pushed["busybox"].ref, root=root, env=FAST, check=True)


@pytest.mark.root
def test_full_filesystem_then_usable_after_space_is_freed(cli, tmp_path, pushed):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)):
        pytest.skip("cannot mount tmpfs")
    try:
        root = small / "root"
        filler = small / "filler"
        img = pushed["busybox"]
        assert cli("images", root=root).returncode == 0          # an (empty) store exists
        # leave about 300 kB: the layer's blob and tree do not fit
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k", "count=1000"], capture_output=True)
        st = os.statvfs(small)
        free = st.f_bavail * st.f_frsize
        if free > 300_000:
            with open(filler, "ab") as f:
                f.write(bytes(free - 300_000))
        line = one_error(cli("pull", img.ref, root=root, env=FAST))
        assert "no space left" in line, line
        line = one_error(cli("run", "--rm", img.ref, "true", root=root, env=FAST))
        assert "no space left" in line, line
        for args in (["images"], ["df"], ["ps", "-a"], ["fsck"], ["gc"]):
            r = cli(*args, root=root)
            if r.returncode != 0:
                assert "no space left" in one_error(r)
        filler.unlink()
        blobs, layers, rows = store_state(root)
        assert rows.get("Image", 0) == 0 and [x for x in layers if x.startswith(".tmp")] == [], (layers, rows)
        r = cli("run", "--rm", img.ref, "echo", "ok", root=root, env=FAST)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        assert cli("fsck", root=root).returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(small)])


# -------------------------------------------------------------------------------------------- metadata.db
def _pulled(cli, root, img):
    cli("pull", img.ref, env=FAST, check=True)
    cli("run", "--rm", img.ref, "true", env=FAST, check=True)
    c = sqlite3.connect(root / "metadata.db")
    c.execute("pragma wal_checkpoint(truncate)")
    c.close()


def _garbage(db: Path):
    db.write_bytes(b"garbage" * 1000)


def _truncated(db: Path):
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def _pages_scribbled(db: Path):
    data = bytearray(db.read_bytes())
    for off in range(8192, len(data) - 4096, 4096):
        data[off + 100: off + 4000] = os.urandom(3900)
    db.write_bytes(bytes(data))


def _sql(stmt):
    def f(db: Path):
        c = sqlite3.connect(db)
        c.executescript(stmt)
        c.close()
    return f


def _not_ours(db: Path):
    db.unlink()
    _sql("create table image(x); insert into image values (1);")(db)


DB_DAMAGE = [
    ("garbage", _garbage, "cannot open metadata database"),
    ("truncated", _truncated, "cannot open metadata database"),
    ("pages-scribbled", _pages_scribbled, "metadata database"),
    ("newer-schema", _sql("update meta set value='999' where key='schema_version'"), "newer than this container"),
    ("version-not-a-number", _sql("update meta set value='abc' where key='schema_version'"), "schema version"),
    ("version-row-gone", _sql("delete from meta"), "no schema version"),
    ("not-ours", _not_ours, "no schema version"),
    ("table-dropped", _sql("drop table image_layer"), "metadata database"),
    ("column-dropped", _sql("alter table image drop column chain_id"), "metadata database"),
    ("db-is-a-directory", lambda db: (db.unlink(), db.mkdir()), "metadata database"),
]


@pytest.mark.parametrize("name,damage,expect", DB_DAMAGE, ids=[d[0] for d in DB_DAMAGE])
def test_damaged_metadata_db(name, damage, expect, cli, root, pushed):
    img = pushed["busybox"]
    _pulled(cli, root, img)
    db = root / "metadata.db"
    for f in ("metadata.db-wal", "metadata.db-shm"):
        (root / f).unlink(missing_ok=True)
    damage(db)
    saved = {p: p.stat().st_size for p in (root / "blobs" / "sha256").iterdir()}
    for args in [["images"], ["df"], ["fsck"], ["gc"], ["rmi", "x"], ["pull", img.ref], ["run", "--rm", img.ref, "true"]]:
        r = cli(*args, env=FAST, timeout=60)
        if r.returncode == 0 and (args[0] in ("rmi", "rm", "inspect", "ps") or name.endswith("-dropped")):
            continue            # did not need what is damaged
        line = one_error(r)
        if args[0] not in ("rmi", "rm", "inspect"):
            assert expect in line, (args, line)
        if args[0] == "run":
            assert r.returncode == 125
    # nothing lost: no command deleted the content it could not account for
    assert {p: p.stat().st_size for p in (root / "blobs" / "sha256").iterdir()} == saved
    if name == "newer-schema":
        assert sqlite3.connect(db).execute("select value from meta").fetchone()[0] == "999"


# -------------------------------------------------------------------------------------------- blobs on disk
def test_blob_corrupted_after_pull(cli, root, pushed):
    """fsck finds it (exit 1, names the digest); run works from the intact tree; fsck --repair re-fetches."""
    img = pushed["busybox"]
    cli("pull", img.ref, env=FAST, check=True)
    layer = max(img.layers, key=lambda x: x.size)
    blob = root / "blobs" / "sha256" / layer.digest[7:]
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(layer.size // 2)
        b = f.read(1)
        f.seek(layer.size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    r = cli("fsck")
    assert r.returncode == 1 and layer.digest[7:19] in (r.stdout + r.stderr), (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    r = cli("run", "--rm", img.ref, "echo", "ok", env=FAST)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    r = cli("fsck", "--repair", env=FAST)
    assert "Traceback" not in r.stderr, r.stderr
    r = cli("fsck")
    assert r.returncode == 0, (r.stdout, r.stderr)
    import hashlib
    assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer.digest


def test_blob_replaced_by_symlink_or_dir(cli, root, pushed, tmp_path):
    """A blob path turned into a symlink to a host file or a directory: fsck reports it, --repair
    never writes through the symlink."""
    img = pushed["busybox"]
    cli("pull", img.ref, env=FAST, check=True)
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    cfg = root / "blobs" / "sha256" / img.config_digest[7:]
    cfg.unlink()
    cfg.symlink_to(outside)
    r = cli("fsck")
    assert r.returncode == 1 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    r = cli("fsck", "--repair", env=FAST)
    assert "Traceback" not in r.stderr, r.stderr
    assert outside.read_text() == "host file\n"
    r = cli("inspect", img.ref)
    assert "Traceback" not in r.stderr
    assert cli("fsck").returncode == 0


def test_symlinks_planted_in_the_store_are_never_followed_by_deletes(cli, root, pushed, tmp_path):
    """Store trees swapped for symlinks to host dirs (a snapshot, a layer tree, a container dir) and
    symlinks planted in blobs/, layers/, ingest/: fsck --repair, rm, rmi, prune and gc remove at
    most the links, never what they point at."""
    img = pushed["busybox"]
    cli("pull", img.ref, env=FAST, check=True)
    cli("run", "--name", "c1", img.ref, "true", env=FAST, check=True)

    def sentinel(name):
        s = tmp_path / "host" / name
        (s / "d").mkdir(parents=True)
        (s / "f").write_text("keep\n")
        (s / "d" / "g").write_text("keep\n")
        return s

    def swap(p: Path, name):
        shutil.rmtree(p)
        p.symlink_to(sentinel(name))

    swap(next((root / "snapshots").iterdir()), "snapshot")
    swap(next((root / "layers").iterdir()), "layer")
    swap(next((root / "containers").iterdir()), "container")
    (root / "ingest" / ("a" * 64)).symlink_to(sentinel("ingest"))
    (root / "blobs" / "sha256" / ("b" * 64)).symlink_to(sentinel("blob"))
    (root / "layers" / ("c" * 64)).symlink_to(sentinel("layers-entry"))
    before = sorted((str(p), p.lstat().st_mode, p.lstat().st_size) for p in (tmp_path / "host").rglob("*"))
    for args in (["fsck"], ["fsck", "--repair"], ["rm", "-f", "c1"], ["rmi", "-f", img.ref], ["prune", "-af"],
                 ["gc"], ["df"], ["images"]):
        r = cli(*args, env=FAST)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        if r.returncode != 0 and args != ["fsck"]:
            one_error(r)
    after = sorted((str(p), p.lstat().st_mode, p.lstat().st_size) for p in (tmp_path / "host").rglob("*"))
    assert after == before


@pytest.mark.parametrize("var", ["CONTAINER_REGISTRY_ATTEMPTS", "CONTAINER_REGISTRY_BACKOFF",
                                 "CONTAINER_REGISTRY_READ_TIMEOUT", "CONTAINER_PULL_WORKERS",
                                 "CONTAINER_PULL_RECONNECTS", "CONTAINER_LAYER_MAX_BYTES"])
def test_garbage_in_tunables_is_one_line(var, cli, pushed):
    for value in ("abc", "nan", "-1e999"):
        r = cli("pull", pushed["busybox"].ref, env={**FAST, var: value})
        if r.returncode != 0:
            assert var in one_error(r)
        else:
            assert "Traceback" not in r.stderr


def test_digests_tampered_in_the_db_never_become_paths(cli, root, pushed, tmp_path):
    """chain_id / config digest rows rewritten to '../..' paths: run does not use them as paths (the
    host's /etc must not become the container's lower), it fails in one line or ignores them."""
    img = pushed["busybox"]
    cli("run", "--rm", img.ref, "true", env=FAST, check=True)
    host = tmp_path / "hostdir"
    (host / "bin").mkdir(parents=True)
    (host / "marker").write_text("HOST\n")
    bb = shutil.which("busybox") or "/bin/busybox"
    if os.path.exists(bb):      # so that `cat /marker` would work if the host dir became the rootfs
        shutil.copy(bb, host / "bin" / "cat")
    evil = "sha256:" + "/".join([".."] * 12) + str(host)
    c = sqlite3.connect(root / "metadata.db")
    c.execute("pragma foreign_keys = off")
    c.execute("update image set chain_id = ?", (evil,))
    c.execute("update snapshot set chain_id = ?", (evil,))
    c.commit()
    c.close()
    r = cli("run", "--rm", img.ref, "cat", "/marker", env=FAST)
    assert "HOST" not in r.stdout, r.stdout
    if r.returncode != 0:
        one_error(r)
