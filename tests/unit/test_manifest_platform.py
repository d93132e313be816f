"""Manifest parsing (strict, CVE-2021-41190 media type check, caps) and platform choice."""

import json

import pytest

from container.engine.image import platform as plat
from container.engine.errors import PlatformMismatch, UnsupportedMediaType, VerificationError
from container.engine.image.manifest import (ACCEPT, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST, OCI_INDEX, OCI_MANIFEST,
                                       Index, Manifest, check_image_manifest, parse_config, parse_manifest)

D = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def manifest(mt=OCI_MANIFEST, config_mt="application/vnd.oci.image.config.v1+json",
             layer_mt="application/vnd.oci.image.layer.v1.tar+gzip", with_mt=True):
    m = {"schemaVersion": 2, "config": {"mediaType": config_mt, "digest": D, "size": 10},
         "layers": [{"mediaType": layer_mt, "digest": D2, "size": 20}]}
    if with_mt:
        m["mediaType"] = mt
    return json.dumps(m).encode()


def index(entries, mt=OCI_INDEX):
    return json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": entries}).encode()


def entry(os_, arch, variant=None, digest=D, mt=OCI_MANIFEST, ann=None):
    p = {"os": os_, "architecture": arch}
    if variant:
        p["variant"] = variant
    e = {"mediaType": mt, "digest": digest, "size": 100, "platform": p}
    if ann:
        e["annotations"] = ann
    return e


def test_accept_header_lists_all_four_types():
    for t in (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX):
        assert t in ACCEPT


def test_parse_manifest_and_index():
    m = parse_manifest(manifest(), OCI_MANIFEST)
    assert isinstance(m, Manifest) and m.layers[0].digest == D2
    check_image_manifest(m)
    i = parse_manifest(index([entry("linux", "amd64")]), OCI_INDEX)
    assert isinstance(i, Index) and i.manifests[0].platform.architecture == "amd64"
    # no mediaType anywhere: by shape
    assert isinstance(parse_manifest(manifest(with_mt=False), None), Manifest)


def test_media_type_must_match_content_type():
    with pytest.raises(VerificationError, match="does not match Content-Type"):
        parse_manifest(manifest(mt=OCI_MANIFEST), OCI_INDEX)


def test_both_manifests_and_layers_refused():
    body = json.loads(manifest(with_mt=False))
    body["manifests"] = []
    with pytest.raises(VerificationError, match="ambiguous"):
        parse_manifest(json.dumps(body).encode(), None)


def test_schema1_is_a_clear_error():
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        parse_manifest(b'{"schemaVersion": 1, "name": "x", "fsLayers": []}',
                       "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        parse_manifest(b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', "application/json")


def test_cap_and_garbage():
    with pytest.raises(VerificationError, match="too large"):
        parse_manifest(b" " * (MAX_MANIFEST + 1), OCI_MANIFEST)
    with pytest.raises(VerificationError, match="not valid JSON"):
        parse_manifest(b"{nope", OCI_MANIFEST)
    bad = manifest().replace(D2.encode(), b"sha256:../../etc/passwd")
    with pytest.raises(VerificationError, match="invalid digest"):
        parse_manifest(bad, OCI_MANIFEST)


def test_non_image_config_and_unknown_layer_refused():
    with pytest.raises(UnsupportedMediaType, match="not a container image"):
        check_image_manifest(parse_manifest(manifest(config_mt="application/vnd.cncf.helm.config.v1+json"),
                                            OCI_MANIFEST))
    with pytest.raises(UnsupportedMediaType, match="unsupported layer media type"):
        check_image_manifest(parse_manifest(manifest(layer_mt="application/vnd.example.weird"), OCI_MANIFEST))


def test_parse_config():
    raw = json.dumps({"os": "linux", "architecture": "arm64", "variant": "v8",
                      "rootfs": {"type": "layers", "diff_ids": [D]}, "config": {"Cmd": ["sh"]}}).encode()
    c = parse_config(raw)
    assert c.diff_ids == (D,) and c.config["Cmd"] == ["sh"] and c.platform.variant == "v8"
    with pytest.raises(VerificationError, match="rootfs.type"):
        parse_config(b'{"os": "linux", "architecture": "amd64", "rootfs": {"type": "x", "diff_ids": []}}')


@pytest.mark.parametrize("s,expect", [
    ("linux/arm64/v8", ("linux", "arm64", "")), ("linux/aarch64", ("linux", "arm64", "")),
    ("linux/arm64", ("linux", "arm64", "")), ("linux/x86_64", ("linux", "amd64", "")),
    ("linux/armhf", ("linux", "arm", "v7")), ("linux/arm", ("linux", "arm", "v7")),
    ("linux/i386", ("linux", "386", "")), ("arm64", ("linux", "arm64", "")),
])
def test_platform_normalisation(s, expect):
    p = plat.parse(s)
    assert (p.os, p.architecture, p.variant) == expect


def test_platform_parse_invalid():
    from container.engine.errors import InvalidReference
    with pytest.raises(InvalidReference):
        plat.parse("linux//")


def test_choose_exact_first_and_attestation_skipped():
    att = entry("unknown", "unknown", digest="sha256:" + "c" * 64,
                ann={"vnd.docker.reference.type": "attestation-manifest"})
    idx = parse_manifest(index([att, entry("linux", "amd64", digest=D), entry("linux", "arm64", "v8", digest=D2)]),
                         OCI_INDEX)
    assert plat.choose(idx, plat.parse("linux/arm64")).digest == D2
    assert plat.choose(idx, plat.parse("linux/arm64/v8")).digest == D2
    assert plat.choose(idx, plat.parse("linux/amd64")).digest == D


def test_choose_fallbacks():
    idx = parse_manifest(index([entry("linux", "arm", "v6", digest=D), entry("linux", "386", digest=D2)]), OCI_INDEX)
    assert plat.choose(idx, plat.parse("linux/arm64")).digest == D        # arm64 runs arm/v6
    assert plat.choose(idx, plat.parse("linux/amd64")).digest == D2       # amd64 runs 386
    with pytest.raises(PlatformMismatch) as ei:
        plat.choose(idx, plat.parse("linux/s390x"))
    assert "linux/arm/v6" in str(ei.value) and "linux/386" in str(ei.value)


def test_host_platform_is_normalised():
    h = plat.host()
    assert h.os == "linux" and h.architecture in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")
