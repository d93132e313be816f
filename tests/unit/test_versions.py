"""engine/image/versions.py: rpm's, apk's and dpkg's version orderings, against the managers'
own test vectors and, where the tool is installed, the tool itself."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess

import pytest

from version_vectors import APK, DPKG, RPM

from container.engine.image.versions import version_cmp, version_lt


@pytest.mark.parametrize("manager, vectors", [("rpm", RPM), ("apk", APK)])
def test_known_orderings(manager, vectors):
    got = [(a, b, version_cmp(a, b, manager)) for a, b, _ in vectors]
    assert got == vectors
    assert [version_cmp(b, a, manager) for a, b, _ in vectors] == [-c for _, _, c in vectors]


def test_dpkg_is_the_default_and_matches_dpkg():
    for a, b in itertools.product(DPKG, DPKG):
        c = version_cmp(a, b)
        assert version_cmp(a, b, "dpkg") == c == version_cmp(a, b, "os-release")
        want = 0 if subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0 else (
            -1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 1)
        assert c == want, (a, b)


def test_where_the_managers_disagree():
    # rpm: '^' sorts after the base version and before a further segment; dpkg refuses the character
    assert version_lt("3.0.13^20240101git-1.fc40", "3.0.14", "rpm") == 1
    assert version_lt("3.0.14^20240101git-1.fc40", "3.0.14", "rpm") == 0
    assert version_lt("3.0.13^20240101git-1.fc40", "3.0.14") is None
    # apk: _rc is a pre-release; dpkg refuses '_'; -r0 is a revision (dpkg: "r0" after "")
    assert version_lt("3.0.14_rc1-r0", "3.0.14", "apk") == 1 and version_lt("3.0.14_rc1-r0", "3.0.14") is None
    assert version_cmp("1.0-r10", "1.0.1-r1", "apk") == -1 and version_cmp("1.0-r10", "1.0.1-r1") == -1
    assert version_cmp("1.0a-r1", "1.0.1-r1", "apk") == -1
    # rpm: separators are all alike; dpkg orders them
    assert version_cmp("1.0+1", "1.0.1", "rpm") == 0 and version_cmp("1.0+1", "1.0.1") == -1
    assert version_lt("3.0.7-27.el9", "3.0.14", "rpm") == 1 and version_lt("1:3.0.7-27.el9", "3.0.14", "rpm") == 0


def test_null_and_bad_input():
    assert version_cmp(None, "1", "rpm") is None and version_lt("1", "2", None) is None
    assert version_cmp("a:1", "1") is None                       # dpkg: a bad epoch
    assert version_cmp("", "1", "apk") == -1 and version_cmp("x", "x", "apk") == 0     # invalid: apk's answer
    assert version_cmp(" 1.0 ", "1.0", "rpm") == 0


@pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm not installed")
def test_rpm_agrees_with_rpm_itself(tmp_path):
    vs = sorted({v for a, b, _ in RPM for v in (a, b)} | {"1.0+1", "1.0-1^x", "1.fc17", "1b.fc17", "~1", "999^"})
    pairs = list(itertools.product(vs, vs))
    lua = tmp_path / "cmp.lua"
    lua.write_text("local o = {}\nlocal t = {" + ",".join(f"{{{json.dumps(a)},{json.dumps(b)}}}" for a, b in pairs)
                   + "}\nfor _, p in ipairs(t) do local x, y = rpm.ver(p[1]), rpm.ver(p[2])\n"
                   "o[#o + 1] = x < y and '-1' or (x > y and '1' or '0') end\nprint(table.concat(o, ' '))\n")
    out = subprocess.run(["rpm", "--eval", f'%{{lua: dofile("{lua}")}}'], capture_output=True, text=True,
                         check=True).stdout.split()
    assert [version_cmp(a, b, "rpm") for a, b in pairs] == [int(x) for x in out]
