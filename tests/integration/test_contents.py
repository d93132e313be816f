"""The contents index: files / diff / history / packages, the file and package tables, version_lt,
rows gone with their layer, an old store indexed by fsck --repair. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess

import pytest

import tarmaker as tm

STANZA = ("Package: {name}\nStatus: install ok installed\nArchitecture: amd64\n{src}Version: {version}\n"
          "Description: test\n\n")


def dpkg_status(pkgs: dict[str, str]) -> bytes:
    return "".join(STANZA.format(name=n, version=v, src="Source: glibc\n" if n == "libc6" else "")
                   for n, v in pkgs.items()).encode()


load = tm.load_layout


def sql(cli, q: str) -> list[dict]:
    return json.loads(cli("sql", "--format", "json", q, check=True).stdout)


BASE = [tm.dir("etc/"), tm.file("etc/hello", b"hello\n"), tm.file("etc/keep", b"k"), tm.dir("usr/share/"),
        tm.file("usr/share/a", b"a"), tm.dir("usr/share/sub/"), tm.file("usr/share/sub/b", b"bb"),
        tm.symlink("etc/os-release", "../usr/lib/os-release"),
        tm.file("usr/lib/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')]


def two_layers(openssl: str = "3.0.11-1~deb12u2"):
    base = tm.tar(*BASE, tm.file("var/lib/dpkg/status", dpkg_status({"libc6": "2.36-9", "openssl": "3.0.9-1"})))
    top = tm.tar(tm.file("etc/.wh.hello"), tm.file("usr/share/.wh..wh..opq"), tm.file("usr/share/c", b"ccc"),
                 tm.hardlink("etc/h2", "usr/share/c"), tm.dir("opt/"), tm.file("opt/new", b"n" * 1000),
                 tm.file("var/lib/dpkg/status", dpkg_status({"libc6": "2.36-9", "openssl": openssl})))
    return [base, top]


def test_files_merged_tree_and_layers(db_cli, tmp_path):
    cli = db_cli
    load(cli, tmp_path, "example.com/t:1", two_layers())
    paths = cli("files", "example.com/t:1", check=True).stdout.split()
    # whiteout (etc/hello) and opaque dir (usr/share: a and sub/ gone) applied; parents made implicitly
    assert paths == ["/etc", "/etc/h2", "/etc/keep", "/etc/os-release", "/opt", "/opt/new", "/usr", "/usr/lib",
                     "/usr/lib/os-release", "/usr/share", "/usr/share/c", "/var", "/var/lib", "/var/lib/dpkg",
                     "/var/lib/dpkg/status"]
    lay = dict(reversed(line.split("\t")) for line in cli("files", "--layers", "example.com/t:1",
                                                            check=True).stdout.splitlines())
    assert lay["/etc/keep"] == "0" and lay["/usr/share/c"] == "1" and lay["/opt/new"] == "1"
    long = cli("files", "-l", "example.com/t:1", "/opt", check=True).stdout.splitlines()
    assert long[0].startswith("drwxr-xr-x 0/0") and long[0].endswith(" /opt")
    assert long[1].startswith("-rw-r--r-- 0/0") and " 1000 " in long[1] and long[1].endswith(" /opt/new")
    j = [json.loads(x) for x in cli("files", "--format", "json", "example.com/t:1", "/etc/os-release",
                                    check=True).stdout.splitlines()]
    assert j == [dict(j[0], path="/etc/os-release", type="symlink", link="../usr/lib/os-release", layer=0)]
    r = cli("files", "example.com/t:1", "/nope")
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    # the typer command prints what the fast path prints
    for extra in ([], ["-l", "--layers"], ["--format", "json"]):
        code = ("import sys\nfrom container.cli.app import app\n"
                "app(args=sys.argv[1:], standalone_mode=False)\n")
        argv = ["--root", str(cli.root), "files", *extra, "example.com/t:1"]
        typed = subprocess.run([str(cli.exe.parent / "python"), "-c", code, *argv], capture_output=True, text=True,
                               env=cli.env, check=True).stdout
        assert typed == cli(*argv[2:], check=True).stdout
    # by tag, SQLite takes engine/image/quickfiles.py (no peewee); by id the ORM path: the same tree
    image_id = cli("image", "inspect", "--format", "{{.Id}}", "example.com/t:1", check=True).stdout.strip()
    for extra in ([], ["-l", "--layers"], ["--format", "json"], ["--layers"]):
        assert cli("files", *extra, "example.com/t:1", check=True).stdout == \
            cli("files", *extra, image_id, check=True).stdout
    # a tag that is also another image's id prefix: the id wins, on both paths (as for run and rmi)
    load(cli, tmp_path, "example.com/other:1", [tm.tar(tm.file("only-in-other", b"o"))])
    prefix = image_id[7:19]
    cli("tag", "example.com/other:1", prefix, check=True)
    assert cli("files", prefix, check=True).stdout.split() == paths
    if cli.db_url is None:
        code = ("import sys\nfrom container.cli.files_fast import fast_files\n"
                "rc = fast_files(sys.argv[1:])\nprint('peewee' in sys.modules, rc, file=sys.stderr)\n")
        r = subprocess.run([str(cli.exe.parent / "python"), "-c", code, "--root", str(cli.root), "files",
                            "example.com/t:1"], capture_output=True, text=True, env=cli.env, check=True)
        assert r.stderr.split()[-2:] == ["False", "0"], r.stderr
    # every entry of every layer is a row, markers included, with the content hash
    rows = sql(cli, "SELECT path, type, whiteout, sha256, size FROM file ORDER BY path")
    by = {r["path"]: r for r in rows}
    assert by["/etc/.wh.hello"]["whiteout"] == 1 and by["/usr/share/.wh..wh..opq"]["whiteout"] == 2
    import hashlib
    assert by["/opt/new"]["sha256"] == hashlib.sha256(b"n" * 1000).hexdigest()
    assert by["/etc/h2"]["type"] == "h" and by["/etc/h2"]["size"] == 3


def test_diff_history_packages(db_cli, tmp_path):
    cli = db_cli
    layers = two_layers()
    load(cli, tmp_path, "example.com/t:1", layers[:1])
    load(cli, tmp_path, "example.com/t:2", layers)
    d = json.loads(cli("diff", "--format", "json", "example.com/t:1", "example.com/t:2", check=True).stdout)
    assert {x["path"] for x in d["added"]} == {"/etc/h2", "/opt", "/opt/new", "/usr/share/c"}
    assert {x["path"] for x in d["removed"]} == {"/etc/hello", "/usr/share/a", "/usr/share/sub",
                                                 "/usr/share/sub/b"}
    assert [x["path"] for x in d["changed"]] == ["/var/lib/dpkg/status"]
    assert next(x for x in d["added"] if x["path"] == "/opt/new")["size"] == 1000
    text = cli("diff", "example.com/t:1", "example.com/t:2", check=True)
    assert "A /opt/new" in text.stdout and "D /etc/hello" in text.stdout and "4 removed" in text.stderr

    pk = [json.loads(x) for x in cli("packages", "--format", "json", "example.com/t:2", check=True).stdout.splitlines()]
    by = {p["name"]: p for p in pk}
    assert by["openssl"]["version"] == "3.0.11-1~deb12u2" and by["openssl"]["layer"] == 1
    assert by["libc6"]["layer"] == 0 and by["libc6"]["source"] == "glibc"      # unchanged since the base
    assert by["debian"]["manager"] == "os-release" and by["debian"]["version"] == "12"
    out = cli("packages", "example.com/t:2", check=True)
    assert out.stdout.split("\n")[0].split() == ["NAME", "VERSION", "ARCH", "SOURCE", "MANAGER", "LAYER"]
    assert "Debian GNU/Linux 12" in out.stderr

    h = cli("history", "example.com/t:2", check=True).stdout.splitlines()
    assert h[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert len(h) == 3 and h[2].startswith("<missing>")
    q = cli("history", "-q", "--no-trunc", "example.com/t:2", check=True).stdout.split()
    info = json.loads(cli("inspect", "example.com/t:2", check=True).stdout)[0]
    assert q == [info["Id"], "<missing>"]
    sizes = cli("history", "--format", "{{.Size}}", "--human=false", "example.com/t:2", check=True).stdout.split()
    assert sizes == [str(3 + 1000 + len(dpkg_status({"libc6": "2.36-9", "openssl": "3.0.11-1~deb12u2"}))),
                     sizes[1]] and int(sizes[1]) > 0


def test_version_lt_query(db_cli, tmp_path):
    cli = db_cli
    versions = {"a": "3.0.11-1~deb12u2", "b": "3.0.14~rc1-1", "c": "3.0.14-1", "d": "1:1.0-1", "e": "3.0.2"}
    for tag, v in versions.items():
        load(cli, tmp_path, f"example.com/ssl:{tag}", two_layers(v))
    got = sql(cli, "SELECT t.tag, p.version FROM package p JOIN tag t ON t.image_id = p.image_id "
                   "WHERE p.name = 'openssl' AND version_lt(p.version, '3.0.14') ORDER BY t.tag")
    # tilde sorts before the release, the epoch after everything without one, 3.0.2 < 3.0.14 numerically
    assert [r["tag"] for r in got] == ["a", "b", "e"]
    assert sql(cli, "SELECT version_cmp('1:1.0', '2.0') AS x, version_cmp('1.0~a', '1.0') AS y, "
                    "version_cmp('2.0', '2.0') AS z") == [{"x": 1, "y": -1, "z": 0}]
    # the SQL functions agree with python-debian (dpkg's rules) on both backends
    from debian.debian_support import version_compare

    vs = ["1.0", "1.0-1", "1.0-0", "1.0~rc1", "1.0~~", "1.0~", "1.0a", "1.0+b1", "1.0.1", "1:0.9", "0:1.0",
          "2:1", "1.00", "1.0-1ubuntu1", "1.0-1~bpo1", "3.0.14-1~deb12u1", "3.0.14", "3.0.2", "a1", "1.0-1.1",
          "10", "9", "1.0+dfsg-2", "1.0-2+b1", "7.88.1-10+deb12u5"]
    pairs = [(a, b) for a in vs for b in vs]
    got = {}
    for i in range(0, len(pairs), 200):           # (SQLite: at most 500 terms in a compound SELECT)
        q = " UNION ALL ".join(f"SELECT '{a}' AS a, '{b}' AS b, version_cmp('{a}', '{b}') AS c"
                               for a, b in pairs[i:i + 200])
        got.update({(r["a"], r["b"]): r["c"] for r in sql(cli, q)})
    want = {(a, b): (version_compare(a, b) > 0) - (version_compare(a, b) < 0) for a, b in pairs}
    assert got == want


def test_rows_go_with_rmi_and_gc(db_cli, tmp_path):
    cli = db_cli
    load(cli, tmp_path, "example.com/t:2", two_layers())
    assert sql(cli, "SELECT COUNT(*) AS n FROM file")[0]["n"] > 10
    cli("rmi", "example.com/t:2", check=True)
    assert sql(cli, "SELECT COUNT(*) AS n FROM package")[0]["n"] == 0
    cli("gc", check=True)
    for table in ("file", "layer_package", "layer_index", "package"):
        assert sql(cli, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 0, table


def test_old_store_indexed_by_fsck_repair(db_cli, root, tmp_path):
    cli = db_cli
    env = {"CONTAINER_INDEX": "0"}                  # as a store pulled before the index existed
    load(cli, tmp_path, "example.com/old:1", two_layers(), env=env)
    assert sql(cli, "SELECT COUNT(*) AS n FROM file")[0]["n"] == 0
    r = cli("fsck", check=True)
    assert "not in the contents index" in r.stdout + r.stderr
    blobs = sorted(p.name for p in (root / "blobs" / "sha256").iterdir())
    r = cli("fsck", "--repair", check=True)
    assert "indexed 2 layer(s)" in r.stdout + r.stderr
    assert sorted(p.name for p in (root / "blobs" / "sha256").iterdir()) == blobs     # nothing downloaded
    rows = {r["path"]: r for r in sql(cli, "SELECT path, type, sha256, whiteout FROM file")}
    import hashlib
    assert rows["/opt/new"]["sha256"] == hashlib.sha256(b"n" * 1000).hexdigest()
    assert rows["/etc/.wh.hello"]["whiteout"] == 1
    pk = {p["name"]: p for p in map(json.loads, cli("packages", "--format", "json", "example.com/old:1",
                                                     check=True).stdout.splitlines())}
    assert pk["openssl"]["layer"] == 1 and pk["libc6"]["layer"] == 0
    # the same tree as an index recorded at unpack
    cli("rmi", "example.com/old:1", check=True)
    cli("gc", check=True)
    before = rows
    load(cli, tmp_path, "example.com/old:1", two_layers())
    fresh = {r["path"]: r for r in sql(cli, "SELECT path, type, sha256, whiteout FROM file")}
    assert {p: (r["sha256"], r["whiteout"]) for p, r in fresh.items()} == \
        {p: (r["sha256"], r["whiteout"]) for p, r in before.items()}
    r = cli("fsck", "--deep", check=True)
    assert "differs" not in r.stdout


def test_first_use_indexes(cli, tmp_path):
    load(cli, tmp_path, "example.com/old:1", two_layers(), env={"CONTAINER_INDEX": "0"})
    assert "/opt/new" in cli("files", "example.com/old:1", check=True).stdout.split()


def test_fsck_deep_uses_rows(cli, root, tmp_path):
    load(cli, tmp_path, "example.com/t:2", two_layers())
    assert cli("fsck", "--deep").returncode == 0
    diff_id = sql(cli, "SELECT diff_id FROM file WHERE path = '/opt/new'")[0]["diff_id"]
    f = root / "layers" / diff_id.split(":")[1] / "opt" / "new"
    f.write_bytes(b"x" * 1000)
    r = cli("fsck", "--deep")
    assert r.returncode == 1 and "/opt/new: content differs" in r.stdout


@pytest.mark.slow
def test_debian_agrees_with_find_and_dpkg_query(cli, root, debian_image):
    cli("pull", debian_image.ref, check=True)
    chain = sql(cli, "SELECT chain_id FROM image")[0]["chain_id"]
    snap = root / "snapshots" / chain.split(":")[1]
    assert snap.is_dir()
    found = subprocess.run(["find", str(snap), "-mindepth", "1", "-printf", "/%P\n"], capture_output=True,
                           text=True, check=True).stdout.split("\n")
    listed = cli("files", debian_image.ref, check=True).stdout.split("\n")
    assert sorted(x for x in listed if x) == sorted(x for x in found if x)
    # types and sizes agree too
    long = {json.loads(x)["path"]: json.loads(x) for x in
            cli("files", "--format", "json", debian_image.ref, check=True).stdout.splitlines()}
    st = subprocess.run(["find", str(snap), "-mindepth", "1", "-printf", "/%P\t%y\t%s\t%m\n"], capture_output=True,
                        text=True, check=True).stdout.splitlines()
    kinds = {"f": "file", "d": "directory", "l": "symlink", "c": "char", "b": "block", "p": "fifo"}
    for line in st:
        p, y, s, m = line.split("\t")
        e = long[p]
        assert kinds[y] == e["type"] or (y == "f" and e["type"] == "hardlink"), p
        if y == "f":
            assert int(s) == e["size"], p
        if y != "l":
            assert int(m, 8) == int(e["mode"], 8), p
    q = subprocess.run(["dpkg-query", f"--admindir={snap}/var/lib/dpkg", "-W",
                        "-f=${Package}\t${Version}\t${Architecture}\n"], capture_output=True, text=True, check=True)
    want = sorted(tuple(x.split("\t")) for x in q.stdout.splitlines())
    pk = [json.loads(x) for x in cli("packages", "--format", "json", debian_image.ref, check=True).stdout.splitlines()]
    got = sorted((p["name"], p["version"], p["arch"]) for p in pk if p["manager"] == "dpkg")
    assert got == want and len(got) > 50


def test_store_at_schema_1_migrates_and_indexes(db_cli, root, tmp_path):
    """A store written before the index (schema 1: no index tables, no rows): the next command
    migrates it, `files` indexes the image's layers from their trees, fsck --repair the rest."""
    cli = db_cli
    load(cli, tmp_path, "example.com/old:1", two_layers())
    load(cli, tmp_path, "example.com/old:2", two_layers("3.0.15-1")[1:])
    drop = ["DROP TABLE package", "DROP TABLE layer_package", "DROP TABLE file", "DROP TABLE layer_index",
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'"]
    if cli.db_url:
        from test_backends import pg_exec
        for q in drop:
            pg_exec(cli.db_url, q)
    else:
        import sqlite3
        with sqlite3.connect(root / "metadata.db") as c:
            for q in drop:
                c.execute(q)
    from container.schema import SCHEMA_VERSION

    assert cli("images", check=True).stdout.count("example.com/old") == 2      # migrated, rows kept
    assert sql(cli, "SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": str(SCHEMA_VERSION)}]
    assert sql(cli, "SELECT COUNT(*) AS n FROM file")[0]["n"] == 0
    assert "/opt/new" in cli("files", "example.com/old:1", check=True).stdout.split()      # first use
    assert sql(cli, "SELECT COUNT(*) AS n FROM layer_index")[0]["n"] == 2
    r = cli("fsck", "--repair", check=True)
    assert "indexed 1 layer(s)" in r.stdout + r.stderr
    got = sql(cli, "SELECT t.tag, p.version FROM package p JOIN tag t ON t.image_id = p.image_id "
                   "WHERE p.name = 'openssl' AND version_lt(p.version, '3.0.14') ORDER BY t.tag")
    assert got == [{"tag": "1", "version": "3.0.11-1~deb12u2"}]


def test_distroless_status_d_and_apk(cli, tmp_path):
    """dpkg's status.d/ (one file a package, as distroless writes it): a whited-out file's package is
    gone, a rewritten one comes from the layer that rewrote it; apk's database in another image."""
    st = lambda n, v: STANZA.format(name=n, version=v, src="").encode()    # noqa: E731
    base = tm.tar(tm.file("var/lib/dpkg/status.d/base-files", st("base-files", "12.4")),
                  tm.file("var/lib/dpkg/status.d/tzdata", st("tzdata", "2024a-0")),
                  tm.file("var/lib/dpkg/status.d/tzdata.md5sums", b"x  /usr/share/zoneinfo/UTC\n"),
                  tm.file("var/lib/dpkg/status.d/libssl3", st("libssl3", "3.0.11-1~deb12u2")))
    top = tm.tar(tm.file("var/lib/dpkg/status.d/.wh.tzdata"),
                 tm.file("var/lib/dpkg/status.d/libssl3", st("libssl3", "3.0.15-1~deb12u1")))
    load(cli, tmp_path, "example.com/distroless:1", [base, top])
    pk = {p["name"]: p for p in map(json.loads, cli("packages", "--format", "json", "example.com/distroless:1",
                                                     check=True).stdout.splitlines())}
    assert set(pk) == {"base-files", "libssl3"}
    assert pk["libssl3"]["version"] == "3.0.15-1~deb12u1" and pk["libssl3"]["layer"] == 1
    assert pk["base-files"]["layer"] == 0
    apk = tm.tar(tm.file("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\n"
                                                 b"P:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\n\n"),
                 tm.file("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n"))
    load(cli, tmp_path, "example.com/alpine:1", [apk])
    rows = sql(cli, "SELECT p.name, p.version, p.source, p.manager FROM package p JOIN tag t ON t.image_id = "
                    "p.image_id WHERE t.repository = 'example.com/alpine' ORDER BY p.manager, p.name")
    assert rows == [{"name": "libcrypto3", "version": "3.1.4-r5", "source": "openssl", "manager": "apk"},
                    {"name": "musl", "version": "1.2.4-r2", "source": "musl", "manager": "apk"},
                    {"name": "alpine", "version": "3.19.1", "source": "Alpine Linux v3.19", "manager": "os-release"}]
