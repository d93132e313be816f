"""Small pieces of the pull path without a registry: config file, credential lookup order,
foreign-layer policy, docker-style ages, created timestamps, Retry-After."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

import pytest

from container.engine.registry import config as cfgmod
from container.engine.registry import client as reg
from container.engine.registry import credentials as creds
from container.engine.registry.endpoints import is_loopback_host
from container.cli.output import humanize_age
from container.engine.image.catalog import parse_created
from container.engine.image.manifest import Descriptor


def test_config_file(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    p.write_text('allow_foreign_layers = true\n[registries."docker.io"]\nmirrors = ["127.0.0.1:5000", '
                 '"https://m.example.com/"]\n[registries."reg.lan:5000"]\ninsecure = true\n')
    monkeypatch.setenv("CONTAINER_CONFIG", str(p))
    c = cfgmod.load()
    assert c.registry("docker.io").mirrors == ("127.0.0.1:5000", "https://m.example.com")
    assert c.registry("index.docker.io").mirrors == c.registry("docker.io").mirrors
    assert c.is_insecure("reg.lan:5000") and not c.is_insecure("other:5000")
    assert c.foreign_allowed("docker.io")
    client = reg.RegistryClient("reg.lan:5000", config=c)
    assert [e.insecure for e in client.endpoints] == [True]
    client = reg.RegistryClient("docker.io", config=c)
    assert [e.host for e in client.endpoints] == ["127.0.0.1:5000", "m.example.com", "registry-1.docker.io"]
    assert [e.insecure for e in client.endpoints] == [True, False, False]


@pytest.mark.parametrize("text,msg", [("x = [", "invalid config file"),
                                      ('[registries."a"]\ninsecure = "yes"\n', "expected true or false"),
                                      ('[registries."a"]\nmirrors = "m"\n', "must be a list")])
def test_config_errors_are_one_line(tmp_path, monkeypatch, text, msg):
    p = tmp_path / "c.toml"
    p.write_text(text)
    monkeypatch.setenv("CONTAINER_CONFIG", str(p))
    with pytest.raises(cfgmod.ConfigError, match=msg):
        cfgmod.load()


def test_credentials_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"u:p").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth}, "http://reg.example.com:5000/v2/": {"auth": auth}}}))
    assert creds.get_credentials("docker.io") == ("u", "p")
    assert creds.get_credentials("reg.example.com:5000") == ("u", "p")
    assert creds.get_credentials("other.example.com") is None
    # a helper wins over auths; "credentials not found" means anonymous
    bindir = tmp_path / "bin"
    bindir.mkdir()
    h = bindir / "docker-credential-t"
    h.write_text('#!/bin/sh\nread s\n[ "$s" = "https://index.docker.io/v1/" ] && '
                 'echo \'{"Username":"hu","Secret":"hs"}\' && exit 0\necho "credentials not found"; exit 1\n')
    h.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "t", "auths": {}}))
    assert creds.get_credentials("docker.io") == ("hu", "hs")
    assert creds.get_credentials("reg.example.com") is None


def test_store_credentials_is_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    creds.store_credentials("docker.io", "a", "b")
    p = tmp_path / "d" / "config.json"
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert "https://index.docker.io/v1/" in json.loads(p.read_text())["auths"]
    assert creds.erase_credentials("docker.io") and not creds.erase_credentials("docker.io")


def test_loopback_detection():
    for h in ("127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000", "127.9.9.9"):
        assert is_loopback_host(h), h
    for h in ("10.0.0.1:5000", "example.com", "[2001:db8::1]:5000"):
        assert not is_loopback_host(h), h


def test_foreign_layer_policy():
    from container.engine.registry.blobs import open_foreign

    d = Descriptor("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "sha256:" + "a" * 64, 10,
                   urls=("http://example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "ftp://h/x"))
    msgs = []
    assert open_foreign(d.urls, 0, allow_private=False, log=msgs.append) is None   # none acceptable: no request
    assert any("https only" in m for m in msgs) and any("private or loopback" in m for m in msgs)
    assert cfgmod.Config(allow_foreign_layers=True).foreign_allowed("docker.io")
    assert not cfgmod.Config().foreign_allowed("docker.io")


def test_humanize_age():
    now = dt.datetime(2026, 1, 10, 12, 0, 0)
    assert humanize_age(now - dt.timedelta(seconds=30), now) == "30 seconds ago"
    assert humanize_age(now - dt.timedelta(minutes=1, seconds=10), now) == "About a minute ago"
    assert humanize_age(now - dt.timedelta(hours=1), now) == "About an hour ago"
    assert humanize_age(now - dt.timedelta(days=2), now) == "2 days ago"
    assert humanize_age(now - dt.timedelta(days=21), now) == "3 weeks ago"
    assert humanize_age(now - dt.timedelta(days=100), now) == "3 months ago"
    assert humanize_age(now - dt.timedelta(days=800), now) == "2 years ago"
    assert humanize_age(None) == "N/A"


def test_parse_created():
    assert parse_created("2023-11-14T22:13:20Z") == dt.datetime(2023, 11, 14, 22, 13, 20)
    assert parse_created("2023-11-14T22:13:20.123456789+02:00") == dt.datetime(2023, 11, 14, 20, 13, 20, 123456)
    assert parse_created("garbage") is None and parse_created(None) is None


def test_retry_after():
    assert reg.parse_retry_after("3") == 3.0
    assert reg.parse_retry_after(None) is None and reg.parse_retry_after("soon") is None
