"""Tag references and digests without engine/image/reference.py's parser (re and a dataclass:
together about a sixth of `run`'s time): what the fast paths (engine/runtime/fast.py,
engine/image/quickfiles.py) accept before they read anything; anything else takes the full parser.

    fast_reference(s) -> (repository, tag) | None     is_sha256(d)     looks_like_id(s)
"""

from __future__ import annotations

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _component(c: str) -> bool:
    """A path component: [a-z0-9]+ ((\\.|_|__|-+)[a-z0-9]+)* (the distribution grammar)."""
    n = len(c)
    if not n or c[0] not in _ALNUM:
        return False
    i = 1
    while i < n:
        ch = c[i]
        if ch in _ALNUM:
            i += 1
            continue
        if ch == ".":
            i += 1
        elif ch == "_":
            i += 2 if c[i + 1:i + 2] == "_" else 1
        elif ch == "-":
            while i < n and c[i] == "-":
                i += 1
        else:
            return False
        if i >= n or c[i] not in _ALNUM:
            return False
    return True


def _domain(d: str) -> bool:
    """host[:port], the host dot-separated labels of [a-z0-9-] that start and end alphanumeric."""
    host, colon, port = d.partition(":")
    if colon and not (port and port.isascii() and port.isdigit()):
        return False
    for label in host.split("."):
        if not label or label[0] not in _ALNUM or label[-1] not in _ALNUM or \
                not all(ch in _ALNUM or ch == "-" for ch in label):
            return False
    return True


def _split_tag(s: str) -> tuple[str, str | None] | None:
    """(name, tag or None) of name[:tag] when both are well formed (lowercase names only)."""
    slash = s.rfind("/")
    colon = s.rfind(":")
    tag = None
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
        if not tag or len(tag) > 128 or tag[0] in ".-" or not all(ch in _TAG for ch in tag):
            return None
    parts = s.split("/")
    if not (_component(parts[0]) or (len(parts) > 1 and _domain(parts[0]))):
        return None
    if not all(_component(p) for p in parts[1:]):
        return None
    return s, tag


def fast_reference(s: str) -> tuple[str, str] | None:
    """(repository, tag) as engine.image.reference.parse() normalises a *tag* reference, for the
    common spellings only (lowercase, no digest, no IPv6 host); None for anything else, which
    then takes the full parser. Neither that parser's dataclass nor re is imported: together
    they cost `run` about a sixth of its time. tests/test_run.py checks this against parse()."""
    m = _split_tag(s)
    if not m or (len(s) == 64 and all(c in "0123456789abcdef" for c in s)):
        return None
    name, tag = m[0], m[1] or "latest"
    domain, _, rest = name.partition("/")
    if not rest or not (domain == "localhost" or "." in domain or ":" in domain):
        domain, path = "docker.io", name
    else:
        path = rest
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > 255:
        return None
    return f"{domain}/{path}", tag


def is_sha256(d) -> bool:
    """A well-formed "sha256:<64 hex>" (what may become a path under blobs/ or snapshots/)."""
    return isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") and \
        all(c in "0123456789abcdef" for c in d[7:])


def looks_like_id(s: str) -> bool:
    """An image id or id prefix (engine.image.reference.looks_like_id): the ORM path's to resolve."""
    return 4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s)
