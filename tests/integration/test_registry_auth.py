"""Authentication against real registries: htpasswd Basic, Bearer tokens from a token server
(tools/tokenserver.py signs the JWTs distribution's token mode verifies; `cryptography` is a test
extra), login/logout writing $DOCKER_CONFIG/config.json 0600, credential helpers, RFC 7235 parsing."""

from __future__ import annotations

import json
import os
import stat
import textwrap

import pytest

from container.engine.registry.challenge import parse_www_authenticate
from checks import FAST, one_error


def test_www_authenticate_rfc7235():
    chs = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push",error="insufficient_scope"')
    assert len(chs) == 1 and chs[0].scheme == "bearer"
    assert chs[0].get("scope") == "repository:samalba/my-app:pull,push"
    assert chs[0].get("error") == "insufficient_scope"
    chs = parse_www_authenticate('Basic realm="x y", Bearer realm="https://a/t", service=reg')
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].get("realm") == "x y" and chs[1].get("service") == "reg"
    chs = parse_www_authenticate(r'BEARER realm="a\"b", scope="repository:h:5000/x:pull repository:y:pull"')
    assert chs[0].get("realm") == 'a"b' and chs[0].get("scope").split(" ")[0] == "repository:h:5000/x:pull"
    assert parse_www_authenticate("") == []


@pytest.fixture
def basic_registry(make_registry):
    return make_registry(htpasswd={"alice": "s3cret"})


def test_basic_auth_needs_login(cli, root, pushed, basic_registry):
    img = pushed["busybox"]
    ref = f"{basic_registry.host}/{img.repo}:{img.tag}"
    line = one_error(cli("pull", ref, env=FAST))
    assert "may require 'container login'" in line

    bad = cli("login", basic_registry.host, "-u", "alice", "-p", "wrong")
    assert "incorrect username or password" in one_error(bad)
    assert not (cli.docker_config / "config.json").exists()

    ok = cli("login", basic_registry.host, "-u", "alice", "--password-stdin", input="s3cret\n")
    assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok.stderr
    cfg_path = cli.docker_config / "config.json"
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    assert basic_registry.host in json.loads(cfg_path.read_text())["auths"]

    r = cli("pull", ref, env=FAST)
    assert r.returncode == 0, r.stderr
    assert basic_registry.blob_gets(img.layers[0].digest, status=200) == 1

    out = cli("logout", basic_registry.host)
    assert out.returncode == 0 and "Removing login credentials" in out.stdout
    assert basic_registry.host not in json.loads(cfg_path.read_text()).get("auths", {})


def test_credential_helper(cli, root, pushed, basic_registry, tmp_path):
    img = pushed["busybox"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-testhelper"
    helper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        read server
        if [ "$1" = get ] && [ "$server" = "{basic_registry.host}" ]; then
          echo '{{"ServerURL": "{basic_registry.host}", "Username": "alice", "Secret": "s3cret"}}'
          exit 0
        fi
        echo "credentials not found in native keychain"; exit 1
        """))
    helper.chmod(0o755)
    (cli.docker_config / "config.json").write_text(json.dumps({"credHelpers": {basic_registry.host: "testhelper"}}))
    r = cli("pull", f"{basic_registry.host}/{img.repo}:{img.tag}",
            env={**FAST, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr


def test_bearer_token_flow_anonymous(cli, root, pushed, make_registry, make_token_server):
    img = pushed["layered"]
    ts = make_token_server(anonymous_pull=True)
    reg = make_registry(token=ts.auth())
    r = cli("pull", f"{reg.host}/{img.repo}:{img.tag}", env=FAST)
    assert r.returncode == 0, r.stderr
    scopes = [s for rq in ts.requests for s in rq["scope"]]
    assert f"repository:{img.repo}:pull" in scopes
    # one token for the whole pull (cached per scope), not one per request
    assert len(ts.requests) == 1, ts.requests
    assert all(rq["user"] is None for rq in ts.requests)


def test_bearer_token_flow_with_login(cli, root, pushed, make_registry, make_token_server):
    img = pushed["busybox"]
    ts = make_token_server(users={"bob": "pw"}, anonymous_pull=False)
    reg = make_registry(token=ts.auth())
    ref = f"{reg.host}/{img.repo}:{img.tag}"
    assert "container login" in one_error(cli("pull", ref, env=FAST))
    ok = cli("login", reg.host, "-u", "bob", "-p", "pw")
    assert ok.returncode == 0, ok.stderr
    ts.requests.clear()
    r = cli("pull", ref, env=FAST)
    assert r.returncode == 0, r.stderr
    assert ts.requests and all(rq["user"] == "bob" for rq in ts.requests)


def test_token_server_down_is_one_line(cli, root, pushed, make_registry, make_token_server):
    img = pushed["busybox"]
    ts = make_token_server()
    reg = make_registry(token=ts.auth())
    ts.fail_next[:] = [500] * 10
    line = one_error(cli("pull", f"{reg.host}/{img.repo}:{img.tag}",
                         env={**FAST, "CONTAINER_REGISTRY_ATTEMPTS": "2"}))
    assert "token server" in line
