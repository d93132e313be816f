"""Property tests (issue 5 item 4) for the parsers that take strangers' text before anything else
sees it: image references (engine/image/reference.py), platforms (engine/image/platform.py) and manifests,
indexes and image configs (engine/image/manifest.py).

Properties:
  * any input: a value, or our own error type (InvalidReference / ManifestError /
    UnsupportedMediaType) with a one-line message; never another exception;
  * references round-trip (parse(str(r)) == r, and the familiar form too) and agree with an
    independent oracle built from the grammar in protocol-notes §1.1 and the normalisation of §1.2;
  * whatever a manifest parser accepts has only digests that are safe as file names
    (^sha256:[a-f0-9]{64}$) and sizes that are non-negative ints.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from container.engine.image import platform as plat
from container.engine.image import reference
from container.engine.errors import InvalidReference, PlatformMismatch, UnsupportedMediaType
from container.engine.image.manifest import (DOCKER_LIST, DOCKER_MANIFEST, Index, Manifest, ManifestError, OCI_CONFIG,
                                       OCI_INDEX, OCI_MANIFEST, parse_config, parse_manifest)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAFE_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")

# -- an oracle for references, written from protocol-notes §1.1/§1.2 independently of engine/image/reference.py
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_COMP = _ALNUM + r"(?:" + _SEP + _ALNUM + r")*"
_DOMCOMP = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = r"(?:" + _DOMCOMP + r"(?:\." + _DOMCOMP + r")*|\[[a-fA-F0-9:]+\])"
_DOMAIN = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_ORACLE = re.compile(r"((?:" + _DOMAIN + r"/)?" + _COMP + r"(?:/" + _COMP + r")*)(?::(" + _TAG + r"))?"
                     r"(?:@(sha256:[a-f0-9]{64}))?", re.ASCII)


def oracle(s: str):
    """(domain, path, tag, digest) or None, per the notes; None also for what they call invalid."""
    m = _ORACLE.fullmatch(s)
    if not m or re.fullmatch(r"[a-f0-9]{64}", s):
        return None
    name, tag, digest = m.groups()
    first, slash, rest = name.partition("/")
    if slash and (first == "localhost" or "." in first or ":" in first or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if path != path.lower() or len(domain) + 1 + len(path) > 255:
        return None
    if tag is None and digest is None:
        tag = "latest"
    return domain, path, tag, digest


def one_line_error(e: Exception) -> None:
    msg = str(e)
    assert msg and "\n" not in msg.strip(), repr(msg)


# -- references -------------------------------------------------------------------------------------
REF_ALPHABET = st.sampled_from(list("abcxyz0129ABZ._-/:@[]") + ["sha256:", "library/", "localhost", "..",
                                                              "docker.io/", "index.docker.io/", "f" * 64,
                                                              "127.0.0.1:5000/", "\n", " ", "é", "\x00"])
ref_soup = st.lists(REF_ALPHABET, max_size=14).map("".join)

hexd = st.text("0123456789abcdef", min_size=64, max_size=64)
comp = st.from_regex(re.compile(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,5}){0,2}", re.ASCII), fullmatch=True)
tag_s = st.from_regex(re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", re.ASCII), fullmatch=True)
domain_s = st.one_of(st.just("localhost"), st.just("docker.io"), st.just("index.docker.io"),
                     st.just("127.0.0.1:5000"), st.just("[::1]:5000"), st.just("Foo"),
                     st.from_regex(re.compile(r"[a-z0-9]{1,6}\.[a-z]{2,4}(?::[0-9]{1,5})?", re.ASCII), fullmatch=True))


@st.composite
def valid_refs(draw) -> str:
    s = "/".join(draw(st.lists(comp, min_size=1, max_size=3)))
    if draw(st.booleans()):
        s = draw(domain_s) + "/" + s
    if draw(st.booleans()):
        s += ":" + draw(tag_s)
    if draw(st.booleans()):
        s += "@sha256:" + draw(hexd)
    return s


@settings(max_examples=400, **SETTINGS)
@given(st.one_of(ref_soup, st.text(max_size=40), valid_refs()))
@example("busybox:tag\nError: x")
@example("library/library/a")           # familiar form used to drop "library/" here
@example("a" * 300)
@example("[fe80::1%eth0]:5000/repo")
def test_reference_parse_total(s):
    try:
        r = reference.parse(s)
    except InvalidReference as e:
        one_line_error(e) if "\n" not in s else None
        assert oracle(s) is None or s != s.strip(), (s, oracle(s))
        return
    want = oracle(s)
    assert want is not None, s
    assert (r.domain, r.path, r.tag, r.digest) == want, (s, r, want)
    assert reference.parse(str(r)) == r
    first = r.path.split("/")[0]
    if r.domain != "docker.io" or not ("." in first or ":" in first or first == "localhost"):
        # (docker's quirk: docker.io/docker.io/a is shown as "docker.io/a", which names another image)
        fam = r.familiar + (f":{r.tag}" if r.tag else "") + (f"@{r.digest}" if r.digest else "")
        assert reference.parse(fam) == r
    assert r.digest is None or SAFE_DIGEST.match(r.digest)
    assert ".." not in r.path.split("/") and not r.path.startswith("/")


@settings(max_examples=200, **SETTINGS)
@given(valid_refs())
def test_generated_valid_references_parse(s):
    r = reference.parse(s)
    assert r.tag is not None or r.digest is not None
    assert reference.parse(str(r)) == r


@pytest.mark.parametrize("s,expect", [
    ("ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
    ("docker.io/ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
    ("index.docker.io/library/ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
    ("library/foo/bar", ("docker.io", "library/foo/bar", "latest", None)),
    ("localhost/fooo/bar", ("localhost", "fooo/bar", "latest", None)),
    ("127.0.0.1:8000/privatebase", ("127.0.0.1:8000", "privatebase", "latest", None)),
    ("Foo/bar", ("Foo", "bar", "latest", None)),
    ("[2001:db8::1]:5000/repo:tag", ("[2001:db8::1]:5000", "repo", "tag", None)),
    ("b.gcr.io/test.example.com/my-app:test.example.com",
     ("b.gcr.io", "test.example.com/my-app", "test.example.com", None)),
    ("test.com:5000", ("docker.io", "library/test.com", "5000", None)),
])
def test_oracle_and_parser_agree_on_the_notes_examples(s, expect):
    assert oracle(s) == expect
    r = reference.parse(s)
    assert (r.domain, r.path, r.tag, r.digest) == expect


# -- platforms --------------------------------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.text(max_size=30),
                 st.lists(st.sampled_from(["linux", "amd64", "arm", "arm64", "v7", "v8", "/", "", "..", "x"]),
                          max_size=6).map("".join)))
def test_platform_parse_total(s):
    try:
        p = plat.parse(s)
    except InvalidReference as e:
        one_line_error(e) if s.isprintable() else None
        return
    assert p.os and p.architecture and "/" not in p.os + p.architecture + p.variant
    assert ".." not in (p.os, p.architecture, p.variant)


# -- manifests, indexes, configs --------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                      st.floats(allow_nan=False), st.text(max_size=12),
                      st.sampled_from(["sha256:" + "a" * 64, "sha256:../../etc/passwd", "sha512:" + "b" * 128,
                                       OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, OCI_CONFIG,
                                       "application/vnd.oci.image.layer.v1.tar+gzip"]))
json_val = st.recursive(json_leaf, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), ch, max_size=4)),
                        max_leaves=20)
KEYS = ["schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "urls", "platform",
        "annotations", "os", "architecture", "variant", "rootfs", "diff_ids", "type", "history", "created",
        "User", "Cmd", "Env", "Entrypoint", "WorkingDir"]
shaped = st.recursive(json_leaf, lambda ch: st.one_of(st.lists(ch, max_size=3),
                                                      st.dictionaries(st.sampled_from(KEYS), ch, max_size=6)),
                      max_leaves=30)
CTYPES = st.sampled_from([None, "", OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "application/json",
                          "text/html", "application/vnd.docker.distribution.manifest.v1+prettyjws",
                          OCI_MANIFEST + "; charset=utf-8"])


def _desc(mt, size=10, **kw):
    return {"mediaType": mt, "digest": "sha256:" + "c" * 64, "size": size, **kw}


VALID_MANIFEST = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _desc(OCI_CONFIG),
                  "layers": [_desc("application/vnd.oci.image.layer.v1.tar+gzip")]}
VALID_INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX,
               "manifests": [_desc(OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"})]}


@st.composite
def mutated(draw):
    """A valid manifest or index with one value somewhere replaced by anything."""
    doc = json.loads(json.dumps(draw(st.sampled_from([VALID_MANIFEST, VALID_INDEX]))))
    node = doc
    for _ in range(draw(st.integers(0, 3))):
        kids = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        kids = [(k, v) for k, v in kids if isinstance(v, (dict, list)) and v]
        if not kids:
            break
        node = draw(st.sampled_from(kids))[1]
    if isinstance(node, dict) and node:
        key = draw(st.one_of(st.sampled_from(sorted(node)), st.sampled_from(KEYS)))
        if draw(st.booleans()):
            node[key] = draw(json_val)
        else:
            node.pop(key, None)
    elif isinstance(node, list) and node:
        node[draw(st.integers(0, len(node) - 1))] = draw(json_val)
    return doc


def check_parsed(m) -> None:
    descs = list(m.manifests) if isinstance(m, Index) else [m.config, *m.layers]
    for d in descs:
        assert SAFE_DIGEST.match(d.digest), d.digest
        assert isinstance(d.size, int) and not isinstance(d.size, bool) and d.size >= 0
        assert isinstance(d.media_type, str)
        assert all(isinstance(u, str) for u in d.urls)


def parse_any(raw: bytes, ct):
    try:
        m = parse_manifest(raw, ct)
    except (ManifestError, UnsupportedMediaType) as e:
        one_line_error(e)
        return None
    assert isinstance(m, (Index, Manifest))
    check_parsed(m)
    return m


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.binary(max_size=200), shaped.map(lambda v: json.dumps(v).encode()),
                 mutated().map(lambda v: json.dumps(v).encode())), CTYPES)
@example(b"[" * 100_000, None)
@example(b'{"manifests": [], "layers": []}', None)
@example(b"\xff\xfe{}", OCI_MANIFEST)
@example(json.dumps(VALID_MANIFEST).encode(), OCI_INDEX)
def test_manifest_parser_total(raw, ct):
    parse_any(raw, ct)


@settings(max_examples=200, **SETTINGS)
@given(mutated())
def test_mutated_manifest_either_parses_safely_or_is_refused(doc):
    m = parse_any(json.dumps(doc).encode(), doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else None)
    if m is not None and isinstance(m, Index):
        want = plat.Platform("linux", "amd64")
        try:
            d = plat.choose(m, want)
        except PlatformMismatch as e:
            one_line_error(e)
        else:
            assert d in m.manifests


VALID_CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"], "Env": ["A=b"], "User": ""},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "d" * 64]}}


@st.composite
def mutated_config(draw):
    doc = json.loads(json.dumps(VALID_CONFIG))
    node = draw(st.sampled_from([doc, doc["config"], doc["rootfs"]]))
    key = draw(st.one_of(st.sampled_from(sorted(node)), st.sampled_from(KEYS)))
    node[key] = draw(json_val)
    return doc


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.binary(max_size=100), shaped.map(lambda v: json.dumps(v).encode()),
                 mutated_config().map(lambda v: json.dumps(v).encode())))
@example(b'{"rootfs":' + b"[" * 100_000 + b"}")
def test_config_parser_total(raw):
    try:
        c = parse_config(raw)
    except (ManifestError, UnsupportedMediaType) as e:     # a sha512 diff_id is UnsupportedMediaType
        one_line_error(e)
        return
    assert all(SAFE_DIGEST.match(d) for d in c.diff_ids)
    assert isinstance(c.os, str) and isinstance(c.architecture, str)
    cfg = c.config
    for k in ("User", "WorkingDir"):
        assert cfg.get(k) is None or isinstance(cfg[k], str)
    for k in ("Cmd", "Entrypoint", "Env"):
        assert cfg.get(k) is None or (isinstance(cfg[k], list) and all(isinstance(x, str) for x in cfg[k]))
