"""docker's --format: a small Go text/template subset over plain dicts, for every listing verb.

    fmt = Format(text, headers={"ID": "IMAGE ID", ...})   # FormatError: one line, exit 1
    fmt.write(rows)        # rows: dicts (their values: str, int, list, dict, callables for methods)

What docker accepts: `json` (one JSON object a line), `table` (the verb's own columns),
`table {{.A}}\t{{.B}}` (a header row from the verb's column names, tabwriter-aligned),
or a template: `{{.Field}}`, `{{.A.B}}`, `{{.}}`, `{{json .}}`, `{{index .Labels "k"}}`,
pipes `{{.Name | upper}}`, docker's functions (json join lower upper title split truncate pad
println) and Go's (index len print printf eq ne lt le gt ge and or not), `{{if}}{{else}}{{end}}`,
`{{range}}{{end}}` and `{{- trim -}}` markers. `\\t` and `\\n` in the text are tab and newline (as
docker's CLI replaces them). Values print as Go does (`[a b]` for a list, `map[k:v]` for a map).
Anything else (variables, `with`, `define`, unknown functions) is a FormatError naming it: never
silent, never a traceback. Nothing here evaluates Python.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable, Iterable


class FormatError(Exception):
    """A template we cannot parse or run; str() is the one-line message."""


# -- values as Go prints them --------------------------------------------------------------------
def go_str(v: Any) -> str:
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def to_json(v: Any) -> str:
    if isinstance(v, dict):                           # a row's methods (.Label "k") are not data
        v = {k: x for k, x in v.items() if not callable(x)}
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)


def _truth(v: Any) -> bool:
    return bool(v) if not isinstance(v, str) else v != ""


# -- functions -------------------------------------------------------------------------------------
def _index(v: Any, *keys: Any) -> Any:
    if isinstance(v, _Head):
        return v
    for k in keys:
        if v is None or isinstance(v, dict):          # a nil map, a missing key: the zero value
            v = (v or {}).get(k, "")
            continue
        try:
            v = v[k]
        except (IndexError, TypeError, KeyError):
            raise FormatError(f"error calling index: cannot index {go_str(v)!r} with {k!r}") from None
    return v


def _printf(fmt: str, *args: Any) -> str:
    out, it = [], iter(args)

    def conv(m: re.Match) -> str:
        verb = m.group(2)
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb == "q":
            return json.dumps(go_str(a) if not isinstance(a, str) else a, ensure_ascii=False)
        if verb == "d":
            return ("%" + m.group(1) + "d") % int(a)
        return ("%" + m.group(1) + "s") % go_str(a)

    out.append(re.sub(r"%([-+ 0#]*\d*(?:\.\d+)?)([a-zA-Z%])", conv, fmt))
    return "".join(out)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        try:
            return any(op(a, b) for b in bs) if op is _eq else op(a, bs[0])
        except (TypeError, IndexError):
            raise FormatError("error calling comparison: incompatible types") from None
    return f


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _pad(s: Any, left: int, right: int) -> str:
    return " " * int(left) + go_str(s) + " " * int(right)


def _truncate(s: Any, n: int) -> str:
    s = go_str(s)
    return s[:int(n)]


FUNCS: dict[str, Callable[..., Any]] = {
    "json": to_json,
    "join": lambda xs, sep: sep.join(go_str(x) for x in (xs or [])),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "title": lambda s: re.sub(r"\b([a-z])", lambda m: m.group(1).upper(), go_str(s)),
    "split": lambda s, sep: go_str(s).split(sep),
    "truncate": _truncate,
    "pad": _pad,
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "print": lambda *a: "".join(go_str(x) for x in a),
    "printf": _printf,
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "not": lambda v: not _truth(v),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1] if a else None),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1] if a else None),
}

# -- parsing -----------------------------------------------------------------------------------------
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*"|`[^`]*`)|(-?\d+(?:\.\d+)?)|(\|)|(\()|(\))|'
                    r'((?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|([A-Za-z_][A-Za-z0-9_]*)|(\S))')

Node = Any        # ("text", s) | ("out", pipeline) | ("if", pipe, then, else) | ("range", pipe, body, else)


def _tokens(src: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if m is None:
            break
        pos = m.end()
        s, num, bar, lp, rp, field, ident, other = m.groups()
        if s is not None:
            out.append(("lit", json.loads(s) if s[0] == '"' else s[1:-1]))
        elif num is not None:
            out.append(("lit", float(num) if "." in num else int(num)))
        elif bar:
            out.append(("|", None))
        elif lp:
            out.append(("(", None))
        elif rp:
            out.append((")", None))
        elif field is not None:
            out.append(("field", [] if field == "." else field[1:].split(".")))
        elif ident is not None:
            out.append(("lit", ident == "true") if ident in ("true", "false") else
                       ("lit", None) if ident == "nil" else ("ident", ident))
        else:
            if other == "$":
                raise FormatError("template variables ($x) are not supported")
            raise FormatError(f"unexpected {other!r} in {{{{{src.strip()}}}}}")
    return out


def _pipeline(toks: list[tuple[str, Any]], i: int = 0, close: bool = False) -> tuple[list, int]:
    """A pipeline: commands split by '|'; each command a list of operands (a nested pipeline for
    parentheses). Returns (commands, next token index)."""
    cmds: list[list] = [[]]
    while i < len(toks):
        kind, val = toks[i]
        if kind == "|":
            if not cmds[-1]:
                raise FormatError("missing command before '|'")
            cmds.append([])
        elif kind == "(":
            sub, i = _pipeline(toks, i + 1, close=True)
            cmds[-1].append(("pipe", sub))
        elif kind == ")":
            if not close:
                raise FormatError("unexpected ')'")
            return cmds, i
        else:
            if kind == "ident" and val not in FUNCS:
                raise FormatError(f'function "{val}" not defined')
            cmds[-1].append((kind, val))
        i += 1
    if close:
        raise FormatError("unclosed '('")
    if not cmds[-1]:
        raise FormatError("missing value for command")
    return cmds, i


def parse(text: str) -> list[Node]:
    """The template's nodes; FormatError for what we do not support."""
    root: list[Node] = []
    stack: list[tuple[list[Node], Node | None]] = [(root, None)]
    pos = 0
    pending_trim = False
    for m in _ACTION.finditer(text):
        lit = text[pos:m.start()]
        if pending_trim:
            lit = lit.lstrip()
        if m.group(1):
            lit = lit.rstrip()
        if lit:
            stack[-1][0].append(("text", lit))
        pos = m.end()
        pending_trim = bool(m.group(3))
        body = m.group(2).strip()
        if body.startswith("/*"):
            continue
        word, _, rest = body.partition(" ")
        if word in ("if", "range"):
            node = [word, _pipeline(_tokens(rest))[0], [], []]
            stack[-1][0].append(node)
            stack.append((node[2], node))
        elif word == "else":
            if stack[-1][1] is None or rest.strip():
                raise FormatError("unexpected {{else}}" if stack[-1][1] is None else "{{else if}} is not supported")
            node = stack.pop()[1]
            stack.append((node[3], node))
        elif word == "end":
            if stack[-1][1] is None:
                raise FormatError("unexpected {{end}}")
            stack.pop()
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise FormatError(f"{{{{{word}}}}} is not supported in --format")
        else:
            stack[-1][0].append(("out", _pipeline(_tokens(body))[0]))
    if len(stack) > 1:
        raise FormatError(f"unexpected EOF: {{{{{stack[-1][1][0]}}}}} without {{{{end}}}}")
    lit = text[pos:]
    if pending_trim:
        lit = lit.lstrip()
    if "{{" in lit or "}}" in lit:
        raise FormatError("unclosed action")
    if lit:
        root.append(("text", lit))
    return root


# -- evaluation ----------------------------------------------------------------------------------------
def _field(dot: Any, path: list[str], args: list[Any], strict: bool) -> Any:
    v = dot
    for n, name in enumerate(path):
        if isinstance(v, dict):
            if name not in v:
                if strict and v is dot:
                    raise FormatError(f"can't evaluate field {name}")
                return "<no value>" if n == len(path) - 1 else None
            v = v[name]
        elif v is None:
            return None
        else:
            raise FormatError(f"can't evaluate field {name} in type {type(v).__name__}")
        if isinstance(v, _Head):
            return v
        if callable(v):
            last = n == len(path) - 1
            v = v(*args) if last else v()
            if last:
                args = []
    if args and not callable(v):
        raise FormatError(f"{'.'.join(path)} is not a method but has arguments")
    return v


def _run_cmd(cmd: list, dot: Any, piped: list[Any], strict: bool) -> Any:
    def val(op: tuple[str, Any]) -> Any:
        kind, x = op
        if kind == "lit":
            return x
        if kind == "pipe":
            return _run_pipe(x, dot, strict)
        if kind == "field":
            return _field(dot, x, [], strict)
        return _call(x, [])

    head_kind, head = cmd[0]
    if head_kind == "ident":
        return _call(head, [val(o) for o in cmd[1:]] + piped)
    if head_kind == "field" and (len(cmd) > 1 or piped):
        return _field(dot, head, [val(o) for o in cmd[1:]] + piped, strict)
    if len(cmd) > 1 or piped:
        raise FormatError("can't give argument to non-function")
    return val(cmd[0])


def _call(name: str, args: list[Any]) -> Any:
    try:
        return FUNCS[name](*args)
    except TypeError:
        raise FormatError(f"wrong number of args for {name}") from None
    except (ValueError, AttributeError) as e:
        raise FormatError(f"error calling {name}: {e}") from None


def _run_pipe(cmds: list, dot: Any, strict: bool) -> Any:
    v: list[Any] = []
    for cmd in cmds:
        v = [_run_cmd(cmd, dot, v, strict)]
    return v[0]


def _exec(nodes: list[Node], dot: Any, out: list[str], strict: bool) -> None:
    for n in nodes:
        kind = n[0]
        if kind == "text":
            out.append(n[1])
        elif kind == "out":
            out.append(go_str(_run_pipe(n[1], dot, strict)))
        elif kind == "if":
            _exec(n[2] if _truth(_run_pipe(n[1], dot, strict)) else n[3], dot, out, strict)
        else:
            seq = _run_pipe(n[1], dot, strict)
            items = list(seq.values()) if isinstance(seq, dict) else list(seq or [])
            if not isinstance(seq, (list, tuple, dict)) and seq is not None:
                raise FormatError(f"range can't iterate over {go_str(seq)}")
            for x in items:
                _exec(n[2], x, out, strict)
            if not items:
                _exec(n[3], dot, out, strict)


def render(nodes: list[Node], dot: Any, strict: bool = True) -> str:
    out: list[str] = []
    _exec(nodes, dot, out, strict)
    return "".join(out)


# -- tables like docker's tabwriter (minwidth 10, padding 3) --------------------------------------
def tabwrite(lines: list[str]) -> str:
    cells = [ln.split("\t") for ln in lines]
    width: dict[int, int] = {}
    for row in cells:
        for i, c in enumerate(row[:-1]):
            width[i] = max(width.get(i, 0), len(c) + 3, 10)
    return "".join("".join(c.ljust(width[i]) for i, c in enumerate(row[:-1])) + row[-1] + "\n"
                   for row in cells)


class Format:
    """One --format value, parsed once. `headers` names the verb's columns (docker's TABLE heads),
    `default` is the verb's table template (for a bare `table`)."""

    def __init__(self, text: str, *, headers: dict[str, str], default: str, strict: bool = True):
        text = text.strip()
        self.table = text == "table" or text.startswith("table ")
        if self.table:
            text = text[len("table"):].strip() or default
        self.json = text == "json"
        if not self.json and "{{" not in text:
            raise FormatError(f"unknown format {text!r}: use json, table or a Go template such as '{{{{.ID}}}}'")
        text = "{{json .}}" if self.json else text.replace("\\t", "\t").replace("\\n", "\n")
        self.headers, self.strict = headers, strict
        try:
            self.nodes = parse(text)
        except RecursionError:
            raise FormatError("template too deeply nested") from None

    def header(self) -> str:
        heads = {k: _Head(v) for k, v in self.headers.items()}
        return render(self.nodes, _Heads(heads), strict=False)

    def lines(self, rows: Iterable[Any]) -> list[str]:
        out = [self.header()] if self.table else []
        out += [render(self.nodes, r, self.strict) for r in rows]
        return out

    def write(self, rows: Iterable[Any]) -> None:
        lines = self.lines(rows)
        text = tabwrite(lines) if self.table else "".join(ln + "\n" for ln in lines)
        sys.stdout.write(text)


class _Head(str):
    """A column name standing for a field's value in the header row (more fields, index: itself)."""


class _Heads(dict):
    """The header row's dot: every field is its column name (docker's, else the field's upper case)."""

    def __missing__(self, key: str) -> str:
        return _Head(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).upper())

    def __contains__(self, key: object) -> bool:
        return True


def parse_format(text: str, *, headers: dict[str, str], default: str, strict: bool = True) -> Format:
    """Format(...) whose error is the engine's one-line ContainerError (exit 1)."""
    from container.engine.service import ContainerError

    try:
        return Format(text, headers=headers, default=default, strict=strict)
    except FormatError as e:
        raise ContainerError(f"template parsing error: {e}") from None


def write(fmt: Format, rows: Iterable[Any]) -> None:
    """fmt.write(rows), an execution error as the one-line ContainerError."""
    from container.engine.service import ContainerError

    try:
        fmt.write(list(rows))
    except FormatError as e:
        raise ContainerError(f"template: executing: {e}") from None
    except RecursionError:
        raise ContainerError("template: executing: too deeply nested") from None
