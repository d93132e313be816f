"""container sql: read-only by construction, three output formats, a documented schema."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


import gc_synth as S  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _store(root):
    return S.sql_example_store(root)


def test_formats_and_readme_queries(cli, root):
    _store(root)
    from container.engine.maint.sql import EXAMPLES

    r = cli("sql", "--format", "json", EXAMPLES[0][1], check=True)
    shared = json.loads(r.stdout)
    assert len(shared) == 1 and shared[0]["images"] == 3          # the base layer, in all three images
    r = cli("sql", "--format", "csv", EXAMPLES[1][1], check=True)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 4 and [int(x["unpacked"]) for x in rows] == sorted((int(x["unpacked"]) for x in rows),
                                                                            reverse=True)
    r = cli("sql", EXAMPLES[2][1], check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["exit_code", "status", "containers"]
    assert lines[1].split()[:3] == ["0", "exited", "2"] and lines[2].split()[:3] == ["3", "exited", "1"]


def test_writes_fail_whatever_the_text(cli, root):
    _store(root)
    for q in ("DELETE FROM tag", "  delete from tag", "/* hi */ UPDATE blob SET refs = 0",
              "WITH x AS (SELECT 1) DELETE FROM tag", "PRAGMA query_only = 0", "DROP TABLE tag",
              "ATTACH DATABASE 'evil.db' AS e", "CREATE TABLE t (x)", "SELECT 1; DELETE FROM tag",
              "INSERT INTO meta VALUES ('a', 'b')", "VACUUM"):
        r = cli("sql", q)
        assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr, (q, r)
    r = cli("sql", "--format", "json", "SELECT COUNT(*) AS n FROM tag", check=True)
    assert json.loads(r.stdout) == [{"n": 3}]
    assert not (root / "evil.db").exists() and not Path("evil.db").exists()


def test_schema_documented_and_in_sync(cli, root):
    r = cli("sql", "--schema", check=True)
    assert r.stdout == (REPO / "docs" / "schema.md").read_text()
    from container.schema import ALL_MODELS

    for m in ALL_MODELS:
        assert f"## {m._meta.table_name}" in r.stdout
        for f in m._meta.sorted_fields:
            assert f"| {f.column_name} |" in r.stdout


def test_errors_are_one_line(cli, root):
    r = cli("sql", "SELECT 1")
    assert r.returncode == 1 and "no metadata database" in r.stderr and "Traceback" not in r.stderr
    _store(root)
    for q in ("SELEKT 1", "SELECT * FROM nope", ""):
        r = cli("sql", q)
        assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, (q, r.stderr)
    r = cli("sql", "--format", "xml", "SELECT 1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
