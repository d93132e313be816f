"""--format as docker's users write it: Go templates, `table`, `json` (one object a line) on images,
ps, inspect and df; a construct we do not support is one clear error, never a traceback."""

from __future__ import annotations

import json

import pytest
from checks import json_lines, one_error


@pytest.fixture
def filled(cli, pushed):
    bb = pushed["busybox"]
    cli("pull", bb.ref, check=True)
    cli("pull", pushed["layered"].ref, check=True)
    r = cli("run", "--name", "first", bb.ref, "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    return bb


def test_images_templates(cli, filled, pushed):
    bb = filled
    repo = f"{bb.host}/{bb.repo}"
    r = cli("images", "--format", "{{.Repository}}:{{.Tag}}", check=True)
    assert sorted(r.stdout.splitlines()) == sorted([f"{repo}:latest", f"{bb.host}/test/layered:latest"])
    r = cli("images", "--format", "{{.ID}} {{.Digest}} {{.Repository | upper}}", check=True)
    line = next(x for x in r.stdout.splitlines() if x.endswith(repo.upper()))
    assert line == f"{bb.config_digest[7:19]} {bb.manifest_digest} {repo.upper()}"
    # table: docker's header names, tabwriter columns
    r = cli("images", "--format", "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.Size}}", check=True)
    head = r.stdout.splitlines()[0]
    assert head.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"] and head.index("TAG") > len(repo)
    # json: one object a line, docker's keys (strings) and ours
    rows = json_lines(cli("images", "--format", "json", check=True).stdout)
    assert len(rows) == 2
    b = next(x for x in rows if x["Repository"] == repo)
    for k in ("ID", "Repository", "Tag", "Digest", "CreatedAt", "CreatedSince", "Size", "SharedSize",
              "UniqueSize", "VirtualSize", "Containers"):
        assert isinstance(b[k], str), k
    assert b["ID"] == bb.config_digest[7:19] and b["Tag"] == "latest" and b["CreatedAt"].endswith("+0000 UTC")
    assert b["ManifestDigest"] == bb.manifest_digest and b["Platform"].startswith("linux/")
    assert json_lines(cli("images", "--format", "{{json .}}", check=True).stdout) == rows
    assert cli("images", "-a", "-q", check=True).stdout == cli("images", "-q", check=True).stdout


def test_ps_templates(cli, filled):
    r = cli("ps", "-a", "--format", "{{.ID}} {{.Status}}", check=True)
    [line] = r.stdout.splitlines()
    cid, status = line.split(" ", 1)
    assert len(cid) == 12 and status.startswith("Exited (3) ")
    [doc] = json_lines(cli("ps", "-a", "--format", "json", check=True).stdout)
    for k in ("ID", "Image", "Command", "CreatedAt", "RunningFor", "Status", "State", "Names", "Labels",
              "Mounts", "Ports", "Size"):
        assert isinstance(doc[k], str), k
    assert doc["ID"] == cid and doc["State"] == "exited" and doc["Names"] == "first" and doc["ExitCode"] == 3
    assert "Label" not in doc and cli("ps", "-a", "--format", '{{.Label "x"}}|', check=True).stdout == "|\n"
    r = cli("ps", "-a", "--format", "table {{.Names}}\\t{{.RunningFor}}", check=True)
    assert r.stdout.splitlines()[0].split() == ["NAMES", "CREATED"]
    r = cli("ps", "-a", "--format", '{{if eq .State "exited"}}{{.Names}} stopped{{else}}up{{end}}', check=True)
    assert r.stdout == "first stopped\n"
    assert cli("ps", "--format", "{{.ID}}", check=True).stdout == ""     # running only: none
    assert cli("run", "--name", "second", filled.ref, "true").returncode == 0
    assert cli("ps", "-l", "--format", "{{.Names}}", check=True).stdout == "second\n"
    assert cli("ps", "-n", "2", "--format", "{{.Names}}", check=True).stdout == "second\nfirst\n"


def test_inspect_format_prints_go_values(cli, filled):
    bb = filled
    env = bb.config["config"].get("Env") or []
    r = cli("inspect", "-f", "{{.Config.Env}}", bb.ref, check=True)
    assert r.stdout == "[" + " ".join(env) + "]\n"
    r = cli("inspect", "--format", "{{json .Config.Env}}", bb.ref, check=True)
    assert json.loads(r.stdout) == env
    r = cli("inspect", "-f", "{{.Id}} {{len .RootFS.Layers}}", bb.ref, check=True)
    assert r.stdout == f"{bb.config_digest} {len(bb.diff_ids)}\n"
    r = cli("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.Name}}", "first", check=True)
    assert r.stdout == "exited 3 /first\n"
    r = cli("inspect", "--type", "image", "first")
    assert r.returncode == 1 and "No such image: first" in one_error(r)
    r = cli("inspect", "--type", "container", "-f", "{{.Name}}", "first", bb.ref)
    assert r.returncode == 1 and r.stdout == "/first\n" and "No such container: " + bb.ref in one_error(r)
    r = cli("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", bb.ref, check=True)
    assert r.stdout == "".join(e + "\n" for e in env) + "\n"
    r = cli("inspect", "-f", "{{.Container}}", bb.ref, check=True)
    assert r.stdout.startswith("map[ChainID:sha256:")
    r = cli("inspect", "-f", '{{index .Config.Labels "nope"}}|{{.NoSuchKey}}', bb.ref, check=True)
    assert r.stdout == "|<no value>\n"


def test_df_format_and_images_row(cli, filled):
    rows = json_lines(cli("df", "--format", "json", check=True).stdout)
    assert [r["Type"] for r in rows] == ["Images", "Containers", "Local Volumes"]
    img = rows[0]
    assert img["TotalCount"] == "2" and img["Active"] == "1"
    rep = json.loads(cli("df", "-v", "--format", "report", check=True).stdout)
    # the Images row is what the images hold (layers and snapshots included), not their manifests
    assert img["Bytes"] == rep["images_total"] > 100_000
    by = {r["type"]: r for r in rep["summary"]}
    assert img["Bytes"] == by["Manifests"]["size"] + by["Layers"]["size"] + by["Snapshots"]["size"]
    table = cli("df", check=True).stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"] and len(table) == 4
    verbose = cli("df", "-v", check=True).stdout
    for t in ("Manifests", "Layers", "Snapshots", "Local Volumes", "Ingest", "Unreferenced"):
        assert t in verbose
    r = cli("df", "--format", "{{.Type}}={{.Size}}", check=True)
    assert r.stdout.splitlines()[0].startswith("Images=")


@pytest.mark.parametrize("tmpl, says", [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{.ID | frobnicate}}", 'function "frobnicate" not defined'),
    ("{{$x := .ID}}", "variables"),
    ("{{with .ID}}x{{end}}", "{{with}} is not supported"),
    ("{{if .ID}}x", "without {{end}}"),
    ("{{.ID", "unclosed"),
    ("yaml", "unknown format"),
    ("{{index .ID 1 2 3}}", "index"),
])
def test_unsupported_templates_are_one_line_errors(cli, filled, tmpl, says):
    for verb in (["images"], ["ps", "-a"]):
        r = cli(*verb, "--format", tmpl)
        assert r.returncode == 1 and says in one_error(r), (verb, r.stderr)
        assert r.stdout == ""
    r = cli("inspect", "-f", "{{.Config.Env | nosuch}}", filled.ref)
    assert r.returncode == 1 and "not defined" in one_error(r)
