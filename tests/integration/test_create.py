"""`container create` (docker create): the container made as run makes it, not started."""

from __future__ import annotations

import json
import os
import re

from checks import json_lines, one_error


def test_create_makes_a_container_that_is_not_started(cli, root, pushed):
    bb = pushed["busybox"]
    r = cli("create", "--name", "made", "-e", "X=1", bb.ref, "sh", "-c", "echo ran > /proof")
    assert r.returncode == 0, r.stderr
    assert "Unable to find image" in r.stderr                 # pulled as run pulls
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert cli("ps", "-q", check=True).stdout == ""           # not running
    [row] = json_lines(cli("ps", "-a", "--format", "json", check=True).stdout)
    assert (row["FullID"], row["Names"], row["State"], row["Status"]) == (cid, "made", "created", "Created")
    table = cli("ps", "-a", check=True).stdout
    assert "Created" in table.splitlines()[1]
    assert cli("ps", "--filter", "status=created", "--format", "{{.Names}}", check=True).stdout == "made\n"
    [doc] = json.loads(cli("inspect", "made", check=True).stdout)
    assert doc["State"]["Status"] == "created" and doc["State"]["Pid"] == 0
    assert doc["Path"] == "sh" and doc["Args"] == ["-c", "echo ran > /proof"] and "X=1" in doc["Config"]["Env"]
    cdir = root / "containers" / cid
    assert cdir.is_dir()                                       # its rootfs is prepared ...
    assert not any(p.name == "proof" for p in cdir.rglob("proof"))  # ... and the command never ran
    # a second create with the same name: docker's conflict, exit 125, nothing left behind
    r = cli("create", "--name", "made", bb.ref)
    assert r.returncode == 125 and "already in use" in one_error(r)
    assert sorted(os.listdir(root / "containers")) == [cid]
    # rm removes it (not running: no -f needed)
    assert cli("rm", "made", check=True).stdout == "made\n"
    assert cli("ps", "-a", "-q", check=True).stdout == "" and os.listdir(root / "containers") == []


def test_create_errors_are_run_errors(cli, root, pushed):
    r = cli("create", "--pull", "never", "no-such-image:1")
    assert r.returncode == 125 and "No such image" in one_error(r)
    r = cli("create", "--user", "nobody-here", pushed["busybox"].ref)
    assert r.returncode == 125 and "nobody-here" in one_error(r)
    assert cli("ps", "-a", "-q", check=True).stdout == ""
    assert not (root / "containers").exists() or os.listdir(root / "containers") == []
    r = cli("create")
    assert r.returncode == 2 and "Traceback" not in r.stderr
