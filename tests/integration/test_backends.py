"""The metadata database on both backends: SQLite in ROOT and a real PostgreSQL (the `pg` fixture).

The same user-visible flows on each (pull/images/tag/rmi, run/ps/rm, gc/prune/df, fsck, sql), then
what only PostgreSQL has: where the password comes from, concurrent pulls serialised by the writers'
lock, `container sql` read-only whatever the text, run's SQLite fast path giving way to a URL.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from checks import json_lines, one_error

import gc_synth as S  # noqa: E402
from container.schema import SCHEMA_VERSION


def rows(cli, sql: str) -> list[dict]:
    r = cli("sql", "--format", "json", sql, check=True)
    return json.loads(r.stdout)


def images(cli) -> list[dict]:
    return json_lines(cli("images", "--format", "json", check=True).stdout)


def tags_of(cli) -> set[str]:
    return {f"{i['Repository']}:{i['Tag']}" for i in images(cli) if i["Tag"] != "<none>"}


def content(root) -> list[str]:
    out = []
    for d in ("blobs/sha256", "layers", "snapshots", "containers"):
        if (root / d).exists():
            out += [f"{d}/{x}" for x in os.listdir(root / d)]
    return out


def pg_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql)


# -- the same flows on both backends ---------------------------------------------------------------
def test_pull_images_tag_rmi(db_cli, root, pushed):
    a, b = pushed["shared-a"], pushed["shared-b"]
    db_cli("pull", a.ref, check=True)
    db_cli("pull", b.ref, check=True)
    assert {a.ref, b.ref} <= tags_of(db_cli)
    db_cli("tag", a.ref, "example.com/mine:v1", check=True)
    assert "example.com/mine:v1" in tags_of(db_cli)
    assert rows(db_cli, "SELECT COUNT(*) AS n FROM image") == [{"n": 2}]
    # the layer both images share is counted twice, stored once
    shared = set(a.diff_ids) & set(b.diff_ids)
    got = rows(db_cli, "SELECT diff_id, refs FROM layer WHERE refs > 1")
    assert {r["diff_id"] for r in got} == shared and all(r["refs"] == 2 for r in got)
    db_cli("rmi", "example.com/mine:v1", check=True)
    db_cli("rmi", a.ref, check=True)
    assert tags_of(db_cli) == {b.ref}
    assert one_error(db_cli("rmi", a.ref))
    # on PostgreSQL nothing of the metadata lives in ROOT
    assert (root / "metadata.db").exists() == (db_cli.db_url is None)


def test_run_ps_rm(db_cli, root, pushed):
    bb = pushed["busybox"].ref
    r = db_cli("run", "--name", "hello", bb, "echo", "hi", check=True)
    assert r.stdout == "hi\n"
    r = db_cli("run", "--name", "fails", bb, "sh", "-c", "exit 3")
    assert r.returncode == 3
    ps = {c["Names"]: c for c in json_lines(db_cli("ps", "-a", "--format", "json", check=True).stdout)}
    assert set(ps) == {"hello", "fails"} and "Exited (3)" in ps["fails"]["Status"]
    assert one_error(db_cli("run", "--name", "hello", bb, "true"))       # the name is taken
    db_cli("rm", "hello", "fails", check=True)
    assert json_lines(db_cli("ps", "-a", "--format", "json", check=True).stdout) == []
    assert (root / "metadata.db").exists() == (db_cli.db_url is None)


def test_gc_prune_df(db_cli, root, pushed):
    db_cli("pull", pushed["layered"].ref, check=True)
    db_cli("run", "--name", "c1", pushed["busybox"].ref, "true", check=True)
    df = json_lines(db_cli("df", "--format", "json", check=True).stdout)
    assert df and "Images" in json.dumps(df)
    r = db_cli("gc", check=True)                # everything is referenced: nothing goes
    assert content(root) and db_cli("run", "--rm", pushed["layered"].ref, "true").returncode == 0
    db_cli("system", "prune", "-a", "--force", check=True)
    db_cli("gc", check=True)
    assert content(root) == [], content(root)
    assert images(db_cli) == [] and rows(db_cli, "SELECT COUNT(*) AS n FROM blob") == [{"n": 0}]
    r = db_cli("df", "--format", "report", check=True)
    assert all(x.get("Size", 0) in (0, "0B", "0 B") for x in json.loads(r.stdout).get("Types", [])), r.stdout


def test_fsck_finds_and_repairs_drift(db_cli, root, pushed):
    a = pushed["shared-a"]
    db_cli("pull", a.ref, check=True)
    r = db_cli("fsck")
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout
    drift = "UPDATE layer SET refs = refs + 3"
    if db_cli.db_url:
        pg_exec(db_cli.db_url, drift)
    else:
        import sqlite3

        con = sqlite3.connect(root / "metadata.db")
        con.execute(drift)
        con.commit()
        con.close()
    r = db_cli("fsck")
    assert r.returncode == 1 and "refcount" in r.stdout, r.stdout
    assert db_cli("fsck", "--repair").returncode == 0
    r = db_cli("fsck")
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout


def _synthetic(root, url):
    S.sql_example_store(root, url)


def test_readme_queries(db_cli, root):
    """The README's three queries (engine/maint/sql.py EXAMPLES) give the same answers on both."""
    from container.engine.maint.sql import EXAMPLES

    _synthetic(root, db_cli.db_url)
    readme = (S.Path(__file__).resolve().parents[2] / "README.md").read_text()
    shared = rows(db_cli, EXAMPLES[0][1])
    assert len(shared) == 1 and shared[0]["images"] == 3
    assert shared[0]["tags"] == ",".join(f"docker.io/library/app{i}:latest" for i in range(3))
    largest = rows(db_cli, EXAMPLES[1][1])
    assert len(largest) == 4 and [x["unpacked"] for x in largest] == sorted((x["unpacked"] for x in largest),
                                                                          reverse=True)
    by_code = rows(db_cli, EXAMPLES[2][1])
    assert [(x["exit_code"], x["status"], x["containers"]) for x in by_code] == [("0", "exited", 2),
                                                                                ("3", "exited", 1)]
    assert sorted(by_code[0]["names"].split(",")) == ["ok1", "ok2"]
    flat = " ".join(readme.split())
    for _, q in EXAMPLES:                       # the README shows these very queries
        assert " ".join(q.split()) in flat, q


def test_sql_is_read_only_on_both(db_cli, root):
    _synthetic(root, db_cli.db_url)
    before = rows(db_cli, "SELECT COUNT(*) AS n FROM tag")
    for q in ("DELETE FROM tag", "UPDATE blob SET refs = 0", "COMMIT; DELETE FROM tag",
              "SELECT 1; DELETE FROM tag", "CREATE TABLE x (a int)", "DROP TABLE tag"):
        r = db_cli("sql", q)
        assert r.returncode != 0, q
        one_error(r)
    assert rows(db_cli, "SELECT COUNT(*) AS n FROM tag") == before


# -- PostgreSQL only -------------------------------------------------------------------------------
def test_pg_sql_cannot_switch_back_to_read_write(cli, root, pg_url):
    _synthetic(root, pg_url)
    cli.env["CONTAINER_DB"] = pg_url
    for q in ("SET TRANSACTION READ WRITE", "SELECT set_config('transaction_read_only', 'off', true)",
              "SELECT nextval('tag_id_seq')"):
        r = cli("sql", q)
        assert r.returncode != 0, (q, r.stdout)
        assert "read-only" in one_error(r) or "read-write" in r.stderr, r.stderr
    assert rows(cli, "SELECT COUNT(*) AS n FROM tag") == [{"n": 3}]


def test_pg_password_from_url_env_pgpass_and_config(cli, root, pg, pg_url, tmp_path, pushed):
    from pgserver import PASSWORD

    bb = pushed["busybox"].ref
    dbname = pg_url.rsplit("/", 1)[1]
    bare = pg.url(dbname, password=False)
    r = cli("--db", bare, "pull", bb, env={"PGPASSFILE": str(tmp_path / "none")})
    assert "password" in one_error(r)
    wrong = bare.replace("container@", "container:wrong-pw@")
    r = cli("--db", wrong, "images")
    err = one_error(r)
    assert "password authentication failed" in err and "wrong-pw" not in r.stderr, err
    cli("--db", bare, "pull", bb, env={"PGPASSWORD": PASSWORD}, check=True)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg.port}:{dbname}:container:{PASSWORD}\n")
    pgpass.chmod(0o600)
    listed = json_lines(cli("--db", bare, "images", "--format", "json", env={"PGPASSFILE": str(pgpass)},
                            check=True).stdout)
    assert bb in {f"{i['Repository']}:{i['Tag']}" for i in listed}
    cli.write_config(f'[store]\ndb = "{pg_url}"\n')
    assert bb in tags_of(cli)                   # the config file's [store] db
    assert not (root / "metadata.db").exists()
    cli.write_config('[store]\ndb = 5\n')
    assert "store.db" in one_error(cli("images"))


def test_pg_run_fast_path_gives_way(cli, root, pg_url, pushed):
    """A local SQLite store has the image; with CONTAINER_DB naming PostgreSQL, run uses that
    database (where the image is not yet), never the SQLite file the fast path would read."""
    bb = pushed["busybox"].ref
    cli("pull", bb, check=True)
    assert cli("run", "--rm", bb, "true").returncode == 0      # SQLite: the fast path's case
    r = cli("run", "--name", "on-pg", bb, "echo", "pg", env={"CONTAINER_DB": pg_url})
    assert r.returncode == 0 and r.stdout == "pg\n", r.stderr
    assert "Unable to find image" in r.stderr                   # the PostgreSQL store pulled it
    cli.env["CONTAINER_DB"] = pg_url
    assert [x["name"] for x in rows(cli, "SELECT name FROM container")] == ["on-pg"]
    del cli.env["CONTAINER_DB"]
    assert rows(cli, "SELECT COUNT(*) AS n FROM container") == [{"n": 0}]     # SQLite untouched


def test_pg_create_uses_the_database_the_environment_names(cli, root, pg_url, pushed):
    """create resolves the database as run does ($CONTAINER_DB here), never the SQLite file."""
    cli.env["CONTAINER_DB"] = pg_url
    r = cli("create", "--name", "made", pushed["busybox"].ref, "true")
    assert r.returncode == 0, r.stderr
    assert [x["name"] for x in rows(cli, "SELECT name, status FROM container")] == ["made"]
    assert not (root / "metadata.db").exists()


def test_pg_concurrent_pulls_and_runs_stay_consistent(cli, root, pg_url, pushed):
    cli.env["CONTAINER_DB"] = pg_url
    refs = [pushed[k].ref for k in ("busybox", "layered", "shared-a", "shared-b", "zstd", "library/busybox")]

    def pull(ref):
        return cli("pull", ref)

    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(pull, refs))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    r = cli("fsck")                             # refcounts, rows and files agree
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout

    def run(i):
        return cli("run", "--rm", refs[i % len(refs)], "true")

    with ThreadPoolExecutor(6) as ex:
        assert all(r.returncode == 0 for r in ex.map(run, range(6)))
    assert cli("fsck").returncode == 0


def test_pg_unreachable_server_is_one_error(cli):
    r = cli("--db", "postgresql://u:pw-secret@127.0.0.1:1/x?connect_timeout=2", "images")
    err = one_error(r)
    assert "127.0.0.1" in err and "pw-secret" not in r.stderr, err


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/x"])
def test_pg_without_psycopg_says_how_to_get_it(cli, url, tmp_path):
    """A Python without psycopg (the extra not installed): one line that names the extra."""
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from container.cli.app import main\n"
            f"main(['--root', {str(tmp_path / 'r')!r}, '--db', {url!r}, 'images'])\n")
    r = subprocess.run([str(cli.exe.parent / "python"), "-c", code], capture_output=True, text=True,
                       env=cli.env, timeout=60)
    assert "container[postgres]" in one_error(r)


def test_pg_new_database_created_once_by_concurrent_commands(cli, pg_url):
    """Four commands on an empty database at once: one schema, every command answers."""
    cli.env["CONTAINER_DB"] = pg_url
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: cli("images", "--format", "json"), range(4)))
    assert all(r.returncode == 0 and json_lines(r.stdout) == [] for r in results), [r.stderr for r in results]
    assert rows(cli, "SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": str(SCHEMA_VERSION)}]


def test_pg_newer_schema_is_refused_and_left_alone(cli, pg_url):
    cli.env["CONTAINER_DB"] = pg_url
    cli("images", check=True)
    pg_exec(pg_url, "UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    assert "newer" in one_error(cli("images"))
    assert rows(cli, "SELECT value FROM meta") == [{"value": "999"}]


def test_sqlite_commands_never_import_psycopg(cli, root):
    """psycopg costs ~100 ms to import: a store on SQLite never pays it, the extra installed or not."""
    code = ("import sys\nfrom container.cli.app import main\n"
            "try:\n    main(['--root', sys.argv[1], 'images'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('psycopg', 'psycopg2') if sys.modules.get(m) is not None))\n")
    r = subprocess.run([str(cli.exe.parent / "python"), "-c", code, str(root)], capture_output=True,
                       text=True, env=cli.env, timeout=60)
    assert r.stdout.splitlines()[-1] == "[]", r.stdout + r.stderr


def test_migration_runs_once_on_both(backend, tmp_path, monkeypatch):
    """A store at the current schema version opened by a program one version newer: the step runs,
    the version moves, the rows stay; opened again, nothing runs twice."""
    import peewee
    from playhouse.migrate import SchemaMigrator, migrate

    from container.engine.store import Store
    from container.schema import db as schema_db, migrations

    root = tmp_path / "root"
    S.sql_example_store(root, backend)
    ran = []

    def up(db):
        ran.append(1)
        m = SchemaMigrator.from_database(db)
        migrate(m.add_column("tag", "note", peewee.TextField(default="")))

    nxt = schema_db.SCHEMA_VERSION + 1          # the step after the current schema
    monkeypatch.setitem(migrations.STEPS, nxt, up)
    monkeypatch.setattr(schema_db, "SCHEMA_VERSION", nxt)
    for _ in range(2):
        s = Store(root, backend)
        db = s.db()
        assert migrations.current_version(db) == nxt
        assert sorted(r[0] for r in db.execute_sql("SELECT note FROM tag").fetchall()) == ["", "", ""]
        s.close()
    assert ran == [1]
