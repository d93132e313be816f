"""version_lt / version_cmp in `container sql` with the package's manager: rpm's and apk's orderings
beside dpkg's, the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import tarmaker as tm
from test_contents import dpkg_status, load, sql
from version_vectors import APK, DPKG, DPKG_INVALID, RPM

OPENSSL = [  # tag, manager, version, older than 3.0.14 by that manager's rules
    ("deb", "dpkg", "3.0.11-1~deb12u2", True), ("deb-new", "dpkg", "3.0.14-1~deb12u1", False),
    ("deb-ok", "dpkg", "3.0.15-1~deb12u1", False),
    ("el9", "rpm", "1:3.0.7-27.el9", False),          # the epoch: 1:3.0.7 is after 3.0.14 (write '1:3.0.14')
    ("el9-noepoch", "rpm", "3.0.7-27.el9", True), ("fc-snap", "rpm", "3.0.13^20240101git-1.fc40", True),
    ("fc-ok", "rpm", "3.0.14^20240101git-1.fc40", False),
    ("alpine-rc", "apk", "3.0.14_rc1-r0", True), ("alpine", "apk", "3.0.14-r0", False),
    ("alpine-old", "apk", "3.0.9-r3", True),
]


def layer(tmp_path, tag: str, manager: str, version: str) -> bytes:
    if manager == "dpkg":
        return tm.tar(tm.file("var/lib/dpkg/status", dpkg_status({"openssl": version})))
    if manager == "apk":
        return tm.tar(tm.file("lib/apk/db/installed", f"P:openssl\nV:{version}\nA:x86_64\no:openssl\n\n".encode()))
    e, _, vr = version.rpartition(":")
    v, _, r = vr.rpartition("-")
    hdr: dict[int, object] = {1000: "openssl", 1001: v, 1002: r, 1022: "x86_64", 1044: f"openssl-{v}-{r}.src.rpm"}
    if e:
        hdr[1003] = int(e)
    return tm.tar(tm.file("var/lib/rpm/rpmdb.sqlite", tm.rpmdb(tmp_path / f"{tag}.sqlite", [hdr])))


def test_openssl_query_by_each_manager(db_cli, tmp_path):
    cli = db_cli
    for tag, manager, version, _ in OPENSSL:
        load(cli, tmp_path, f"example.com/ssl:{tag}", [layer(tmp_path, tag, manager, version)])
    got = sql(cli, "SELECT t.tag, p.manager, p.version FROM package p JOIN tag t ON t.image_id = p.image_id "
                   "WHERE p.name = 'openssl' AND version_lt(p.version, '3.0.14', p.manager) ORDER BY t.tag")
    assert got == [{"tag": t, "manager": m, "version": v} for t, m, v, old in sorted(OPENSSL) if old]
    # without the manager: dpkg's rules for every row, which get an apk pre-release wrong
    two = {r["tag"]: r["lt"] for r in sql(cli, "SELECT t.tag, CASE WHEN version_lt(p.version, '3.0.14') THEN 1 "
                                               "ELSE 0 END AS lt FROM package p JOIN tag t ON t.image_id = p.image_id "
                                               "WHERE p.name = 'openssl'")}
    assert two["deb"] == 1 and two["deb-ok"] == 0 and two["alpine-rc"] == 0


@pytest.mark.parametrize("manager", ["rpm", "apk", "dpkg"])
def test_sql_functions_agree_with_the_vectors(db_cli, manager):
    db_cli("images", check=True)                     # (creates the store's database)
    if manager == "dpkg":
        from debian.debian_support import version_compare

        vectors = [(a, b, (version_compare(a, b) > 0) - (version_compare(a, b) < 0)) for a in DPKG for b in DPKG]
    else:
        vectors = RPM if manager == "rpm" else APK
        vectors = vectors + [(b, a, -c) for a, b, c in vectors]
    got = []
    for i in range(0, len(vectors), 150):            # (SQLite: at most 500 terms in a compound SELECT)
        q = " UNION ALL ".join(f"SELECT {n} AS n, version_cmp('{a}', '{b}', '{manager}') AS c"
                               for n, (a, b, _) in enumerate(vectors[i:i + 150], start=i))
        got += [r["c"] for r in sorted(sql(db_cli, q), key=lambda r: r["n"])]
    assert got == [c for _, _, c in vectors]
    nulls = sql(db_cli, f"SELECT version_cmp(NULL, '1', '{manager}') AS a, version_cmp('1', '2', NULL) AS b")
    assert nulls == [{"a": None, "b": None}]
    if manager == "dpkg":
        q = " UNION ALL ".join(f"SELECT '{v}' AS v, version_cmp('{v}', '1') AS c, version_cmp('1', '{v}', 'dpkg') "
                               "AS d" for v in DPKG_INVALID)
        assert sql(db_cli, q) == [{"v": v, "c": None, "d": None} for v in DPKG_INVALID]
