"""cli/format.py: docker's --format templates over dicts (Go's text/template subset)."""

from __future__ import annotations

import pytest

from container.cli.format import Format, FormatError, go_str, tabwrite

ROW = {"Repository": "busybox", "Tag": "latest", "ID": "abc", "Labels": {"b": "2", "a": "1"},
       "Env": ["PATH=/usr/bin", "HOME=/"], "N": 3, "None": None, "Label": lambda k: {"a": "1"}.get(k, "")}


def out(tmpl: str, row=ROW, **kw) -> str:
    return "".join(x + "\n" for x in Format(tmpl, headers={"ID": "IMAGE ID"}, default="{{.ID}}", **kw).lines([row]))


@pytest.mark.parametrize("tmpl, want", [
    ("{{.Repository}}:{{.Tag}}", "busybox:latest"),
    ("{{.Env}}", "[PATH=/usr/bin HOME=/]"),
    ("{{.Labels}}", "map[a:1 b:2]"),
    ("{{json .Labels}}", '{"a":"1","b":"2"}'),
    ('{{index .Labels "a"}}{{index .Labels "zz"}}', "1"),
    ("{{.Repository | upper}} {{lower \"X\"}} {{title \"a b\"}}", "BUSYBOX x A B"),
    ('{{join .Env ","}}', "PATH=/usr/bin,HOME=/"),
    ('{{split "a:b" ":"}}', "[a b]"),
    ("{{truncate .Repository 4}}|{{pad .Tag 1 1}}|", "busy| latest |"),
    ("{{range .Env}}<{{.}}>{{end}}", "<PATH=/usr/bin><HOME=/>"),
    ("{{range .None}}x{{else}}empty{{end}}", "empty"),
    ('{{if eq .Tag "latest" "v1"}}yes{{else}}no{{end}}', "yes"),
    ("{{if and .N (not .None)}}ok{{end}}", "ok"),
    ('{{.Label "a"}}', "1"),
    ('{{printf "%s=%d" .Tag .N}}', "latest=3"),
    ("{{len .Env}} {{.None}} {{true}}", "2 <nil> true"),
    ("a  {{- .Tag -}}  b", "alatestb"),
    ("{{(index .Env 1) | lower}}", "home=/"),
    ("{{.ID}}\\t{{.Tag}}\\n", "abc\tlatest\n"),
])
def test_templates(tmpl, want):
    assert out(tmpl) == want + "\n"


def test_json_table_and_headers():
    assert out("json") == '{"Env":["PATH=/usr/bin","HOME=/"],"ID":"abc","Labels":{"a":"1","b":"2"},' \
                          '"N":3,"None":null,"Repository":"busybox","Tag":"latest"}\n'     # no methods
    assert Format("table", headers={"ID": "IMAGE ID"}, default="{{.ID}}\t{{.Tag}}").lines([ROW]) == \
        ["IMAGE ID\tTAG", "abc\tlatest"]
    assert Format("table {{.SharedSize}}", headers={}, default="").header() == "SHARED SIZE"
    # docker's tabwriter: a column is its widest cell + 3, at least 10
    assert tabwrite(["A\tB", "long-value-here\tx"]) == "A".ljust(18) + "B\n" + "long-value-here   x\n"
    assert tabwrite(["A\tB"]) == "A".ljust(10) + "B\n"


def test_go_values():
    assert go_str([{"a": 1}, None, False, 2.0]) == "[map[a:1] <nil> false 2]"


@pytest.mark.parametrize("tmpl, says", [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{nosuch .ID}}", 'function "nosuch" not defined'),
    ("{{$x := 1}}", "variables"),
    ("{{with .ID}}{{end}}", "{{with}}"),
    ("{{define \"x\"}}{{end}}", "{{define}}"),
    ("{{if .ID}}", "without {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{.ID", "unclosed"),
    ("{{(.ID}}", "unclosed '('"),
    ("{{.ID | }}", "missing"),
    ("{{join .Env}}", "wrong number of args"),
    ("{{.Tag.Inner}}", "can't evaluate field Inner"),
    ("plain", "unknown format"),
    ("{{range .Tag}}x{{end}}", "range can't iterate"),
])
def test_errors(tmpl, says):
    with pytest.raises(FormatError, match=None) as e:
        out(tmpl)
    assert says in str(e.value)


def test_inspect_mode_prints_no_value():
    assert out("{{.Nope}}", strict=False) == "<no value>\n"
    assert out("{{.Labels.zz}}", strict=False) == "<no value>\n"
