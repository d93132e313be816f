"""WWW-Authenticate (RFC 7235): the challenges a registry's 401 carries, parsed properly (commas
inside quoted values, several challenges in one header, a token68 after the scheme)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Challenge:
    scheme: str                      # lower-case: "bearer", "basic"
    params: dict = field(hash=False)

    def get(self, k: str, default: str | None = None) -> str | None:
        return self.params.get(k, default)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'


def parse_www_authenticate(value: str) -> list[Challenge]:
    """All challenges of one header value. Params are case-insensitive keys; quoted values unescaped."""
    out: list[Challenge] = []
    pos, n = 0, len(value or "")
    s = value or ""
    cur: Challenge | None = None
    tok_re = re.compile(r"\s*(" + _TOKEN + r")")
    param_re = re.compile(r"\s*(" + _TOKEN + r")\s*=\s*(" + _QUOTED + "|" + _TOKEN + r")\s*")
    token68_re = re.compile(r"\s*([A-Za-z0-9\-._~+/]+=*)\s*(?:,|$)")
    while pos < n:
        while pos < n and s[pos] in " \t,":
            pos += 1
        if pos >= n:
            break
        m = param_re.match(s, pos)
        if m and cur is not None:
            k, v = m.group(1).lower(), m.group(2)
            if v.startswith('"'):
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            cur.params[k] = v
            pos = m.end()
            continue
        m = tok_re.match(s, pos)
        if not m:
            break  # garbage: stop, keep what we have
        cur = Challenge(m.group(1).lower(), {})
        out.append(cur)
        pos = m.end()
        # a token68 (Basic xyz==) directly after the scheme
        t = token68_re.match(s, pos)
        if t and not param_re.match(s, pos):
            cur.params["token68"] = t.group(1)
            pos = t.end()
    return out

