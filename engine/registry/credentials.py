"""Registry credentials as docker keeps them: ~/.docker/config.json ($DOCKER_CONFIG) with
credHelpers[host], then credsStore, then auths[host], through the docker-credential-* programs;
lookup, store (`login`) and erase (`logout`), and the server names `login` accepts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from container.engine.errors import AuthError, InvalidReference
from container.engine.image.reference import DOCKER_HUB

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


def docker_config_path() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    return Path(d) / "config.json" if d else Path(os.path.expanduser("~")) / ".docker" / "config.json"


def _load_docker_config() -> dict:
    p = docker_config_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise AuthError(f"cannot read {p}: {e}") from None
    return data if isinstance(data, dict) else {}


def _norm_key(k: str) -> str:
    k = k.strip().lower()
    for p in ("https://", "http://"):
        if k.startswith(p):
            k = k[len(p):]
    k = k.split("/", 1)[0]
    if k in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        k = DOCKER_HUB
    return k


def auth_key(host: str) -> str:
    """The key docker's config.json uses for this registry."""
    return DOCKER_HUB_AUTH_KEY if _norm_key(host) == DOCKER_HUB else host


def _helper(name: str, action: str, data: str) -> subprocess.CompletedProcess:
    prog = f"docker-credential-{name}"
    try:
        return subprocess.run([prog, action], input=data, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AuthError(f"credential helper {prog} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {prog} timed out") from None


def _helper_for(cfg: dict, host: str) -> str | None:
    helpers = cfg.get("credHelpers") or {}
    for k, v in helpers.items():
        if _norm_key(k) == _norm_key(host) and v:
            return v
    return cfg.get("credsStore") or None


def get_credentials(host: str) -> tuple[str, str] | None:
    """(username, secret) for a registry host, or None for anonymous."""
    cfg = _load_docker_config()
    helper = _helper_for(cfg, host)
    if helper:
        r = _helper(helper, "get", auth_key(host))
        if r.returncode == 0:
            try:
                d = json.loads(r.stdout)
                if isinstance(d, dict) and d.get("Secret"):
                    return str(d.get("Username", "")), str(d["Secret"])
            except ValueError:
                raise AuthError(f"credential helper docker-credential-{helper} returned invalid JSON") from None
        elif "credentials not found" not in (r.stdout + r.stderr).lower():
            raise AuthError(f"credential helper docker-credential-{helper}: "
                            f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['failed']}")
    for k, v in (cfg.get("auths") or {}).items():
        if _norm_key(k) != _norm_key(host) or not isinstance(v, dict):
            continue
        if v.get("identitytoken"):
            return "<token>", str(v["identitytoken"])
        if v.get("auth"):
            try:
                user, _, pw = base64.b64decode(v["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"invalid auth entry for {k} in {docker_config_path()}") from None
            return user, pw
        if v.get("username") and v.get("password"):
            return str(v["username"]), str(v["password"])
    return None


def _write_docker_config(cfg: dict) -> None:
    p = docker_config_path()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent="\t")
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def store_credentials(host: str, username: str, secret: str) -> str:
    """Save like `docker login`: through the helper if one is configured, else base64 in auths. Returns where."""
    cfg = _load_docker_config()
    helper = _helper_for(cfg, host)
    key = auth_key(host)
    if helper:
        r = _helper(helper, "store", json.dumps({"ServerURL": key, "Username": username, "Secret": secret}))
        if r.returncode != 0:
            raise AuthError(f"credential helper docker-credential-{helper} could not store: "
                            f"{(r.stderr or r.stdout).strip()}")
        cfg.setdefault("auths", {})[key] = {}
        _write_docker_config(cfg)
        return f"docker-credential-{helper}"
    auths = cfg.setdefault("auths", {})
    for k in list(auths):
        if _norm_key(k) == _norm_key(host) and k != key:
            del auths[k]
    auths[key] = {"auth": base64.b64encode(f"{username}:{secret}".encode()).decode()}
    _write_docker_config(cfg)
    return str(docker_config_path())


def erase_credentials(host: str) -> bool:
    cfg = _load_docker_config()
    found = False
    helper = _helper_for(cfg, host)
    if helper:
        r = _helper(helper, "erase", auth_key(host))
        found = r.returncode == 0
    auths = cfg.get("auths") or {}
    for k in list(auths):
        if _norm_key(k) == _norm_key(host):
            del auths[k]
            found = True
    if found:
        _write_docker_config(cfg)
    return found


def normalize_server(server: str | None) -> str:
    """`container login [SERVER]`: docker.io by default; scheme and path dropped."""
    if not server:
        return DOCKER_HUB
    s = _norm_key(server) if "://" in server or server.lower() in (
        "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com") else server.strip().rstrip("/")
    if not s or "/" in s or " " in s:
        raise InvalidReference(f"invalid registry address {server!r}")
    return s

