"""Package databases read by engine/image/packages.py: dpkg, apk, rpm (rpmdb.sqlite), os-release."""

from __future__ import annotations

import tarmaker as tm

from container.engine.image.packages import is_package_db, parse_db
from container.engine.image.versions import version_cmp, version_lt


def test_which_files_are_databases():
    assert is_package_db("/var/lib/dpkg/status") and is_package_db("/var/lib/dpkg/status.d/base")
    assert not is_package_db("/var/lib/dpkg/status.d/base.md5sums")
    assert not is_package_db("/var/lib/dpkg/status-old") and not is_package_db("/var/lib/dpkg/status.d/")
    assert is_package_db("/lib/apk/db/installed") and is_package_db("/usr/lib/sysimage/rpm/rpmdb.sqlite")
    assert is_package_db("/etc/os-release")


def test_dpkg_status_states_and_sources():
    data = (b"Package: a\nStatus: install ok installed\nVersion: 1:2.0-1\nArchitecture: all\n"
            b"Source: asrc (1.9)\nDescription: x\n continued\n\n"
            b"Package: gone\nStatus: purge ok not-installed\nArchitecture: amd64\n\n"
            b"Package: cfg\nStatus: deinstall ok config-files\nVersion: 3\nArchitecture: amd64\n")
    assert parse_db("/var/lib/dpkg/status", data) == [("a", "1:2.0-1", "all", "asrc", "dpkg"),
                                                      ("cfg", "3", "amd64", "cfg", "dpkg")]


def test_apk_installed():
    data = b"C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n\n"
    assert parse_db("/lib/apk/db/installed", data) == [("musl", "1.2.4-r2", "x86_64", "musl", "apk"),
                                                       ("busybox", "1.36.1-r5", "x86_64", "busybox", "apk")]


def test_os_release():
    data = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'
    assert parse_db("/etc/os-release", data) == [("alpine", "3.19.1", "", "Alpine Linux v3.19", "os-release")]


def test_rpmdb_sqlite(tmp_path):
    data = tm.rpmdb(tmp_path / "rpmdb.sqlite", [
        {1000: "openssl-libs", 1001: "3.0.7", 1002: "25.el9", 1003: 1, 1022: "x86_64",
         1044: "openssl-3.0.7-25.el9.src.rpm"},
        {1000: "bash", 1001: "5.1.8", 1002: "9.el9", 1022: "x86_64", 1044: "bash-5.1.8-9.el9.src.rpm"},
        {1000: "gpg-pubkey", 1001: "1"}])
    got = parse_db("/var/lib/rpm/rpmdb.sqlite", data)
    assert got == [("openssl-libs", "1:3.0.7-25.el9", "x86_64", "openssl", "rpm"),
                   ("bash", "5.1.8-9.el9", "x86_64", "bash", "rpm")]


def test_broken_database_yields_nothing():
    assert parse_db("/var/lib/rpm/rpmdb.sqlite", b"not sqlite") == []
    assert parse_db("/lib/apk/db/installed", b"\xff\xfe") == []


def test_dpkg_version_order():
    assert version_cmp("1:1.0", "2.0") == 1 and version_cmp("1.0~rc1", "1.0") == -1
    assert version_cmp("1.0", "1.0-0") == 0 and version_cmp(None, "1") is None
    assert version_lt("3.0.11-1~deb12u2", "3.0.14") == 1 and version_lt("3.0.14-1", "3.0.14") == 0
    assert version_cmp("a:1", "1") is None
