"""References (distribution/reference grammar + Docker Hub normalisation) and the CLI's wording for bad ones."""

import pytest

from container.engine.errors import InvalidReference
from container.engine.image.reference import parse

H = "f" * 64


@pytest.mark.parametrize("s,domain,path,tag,digest", [
    ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("library/ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("index.docker.io/library/ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("nonlibrary/ubuntu", "docker.io", "nonlibrary/ubuntu", "latest", None),
    ("library/foo/bar", "docker.io", "library/foo/bar", "latest", None),
    ("localhost/fooo/bar", "localhost", "fooo/bar", "latest", None),
    ("127.0.0.1:8000/privatebase", "127.0.0.1:8000", "privatebase", "latest", None),
    ("example.com:8000/private/moonbase", "example.com:8000", "private/moonbase", "latest", None),
    ("Foo/bar", "Foo", "bar", "latest", None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "repo", "tag", None),
    ("test.com:5000", "docker.io", "library/test.com", "5000", None),
    ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app",
     "test.example.com", None),
    (f"busybox@sha256:{H}", "docker.io", "library/busybox", None, f"sha256:{H}"),
    (f"busybox:1.36@sha256:{H}", "docker.io", "library/busybox", "1.36", f"sha256:{H}"),
])
def test_valid(s, domain, path, tag, digest):
    r = parse(s)
    assert (r.domain, r.path, r.tag, r.digest) == (domain, path, tag, digest)


@pytest.mark.parametrize("s", [
    "", ":justtag", f"@sha256:{H}", "repo@sha256:" + "f" * 34, "validname@invaliddigest:" + "f" * 64,
    "Uppercase:tag", "test:5000/Uppercase/lowercase:tag", "aa/asdf$$^/aa", "[2001:db8::1]",
    "[2001:db8::1]:5000", "[fe80::1%eth0]:5000/repo", "a" * 256, H, " busybox", "busybox:",
    "busybox:" + "t" * 129,
])
def test_invalid(s):
    with pytest.raises(InvalidReference) as ei:
        parse(s)
    assert "invalid reference format" in str(ei.value)


def test_familiar_and_str():
    r = parse("busybox")
    assert r.familiar == "busybox" and str(r) == "docker.io/library/busybox:latest"
    assert parse("127.0.0.1:5000/a/b:1").familiar == "127.0.0.1:5000/a/b"


@pytest.mark.parametrize("bad", ["a/UPPER", "a/../b", "busybox@sha256:abc"])
def test_cli_invalid_reference_one_line(cli, bad):
    r = cli("pull", bad)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: invalid reference format"), r.stderr
    assert "Traceback" not in r.stderr
