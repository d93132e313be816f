"""Registry v2 / OCI distribution client on one requests.Session.

    client = RegistryClient("docker.io", config=cfg, log=print)
    head = client.head_manifest("library/busybox", "latest")        # HEAD: free on Docker Hub
    raw, ctype, digest = client.get_manifest("library/busybox", head.digest)
    with client.get_blob("library/busybox", digest, offset=n) as resp: ...

Auth: a 401 carries WWW-Authenticate (RFC 7235, parsed properly: commas inside quotes,
several challenges). Bearer -> token from the realm (Basic credentials to the realm when we
have them), cached per (realm, service, scope) until it expires; Basic -> credentials on every
request. Credentials come from ~/.docker/config.json ($DOCKER_CONFIG): credHelpers[host],
then credsStore, then auths[host], via the docker-credential-* programs.

Transport: https, or plain http for loopback registries and registries configured insecure
(https is tried first, as docker does). Mirrors from the config are tried first, then the origin.
Redirects are followed by requests, which drops Authorization when the host (or port) changes.
Retries with exponential backoff and jitter on 408/429/5xx and connection resets, honouring
Retry-After; never on 401/403/404.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit

from container.engine.tunables import env_number
from container.engine.errors import AuthError, ManifestUnknown, RegistryError, RegistryUnavailable
from container.engine.image.manifest import ACCEPT, MAX_MANIFEST, base_type
from container.engine.image.reference import familiar

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
USER_AGENT = "container/0.1 (python-requests)"

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 522})
ATTEMPTS = env_number("CONTAINER_REGISTRY_ATTEMPTS", 5, int, minimum=1)
BACKOFF = env_number("CONTAINER_REGISTRY_BACKOFF", 0.25, minimum=0)
MAX_RETRY_AFTER = 60.0
CONNECT_TIMEOUT = 15.0
# seconds without a byte before a request (or a blob body, which is then resumed with Range) is
# given up; a stalled registry costs at most ATTEMPTS (manifests) or CONTAINER_PULL_RECONNECTS
# (blobs) times this
READ_TIMEOUT = env_number("CONTAINER_REGISTRY_READ_TIMEOUT", 60.0, minimum=0.001)


# -- WWW-Authenticate (RFC 7235) ------------------------------------------------------------
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


# -- credentials ------------------------------------------------------------------------------
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


# -- endpoints --------------------------------------------------------------------------------
def is_loopback_host(host: str) -> bool:
    """host[:port] on 127.0.0.0/8, ::1 or localhost."""
    h = host
    if h.startswith("["):
        h = h[1:h.index("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h.lower() == "localhost" or h.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass
class Endpoint:
    host: str                      # netloc: host[:port]
    mirror: bool = False
    insecure: bool = False         # plain http (and unverified TLS) allowed
    scheme: str | None = None      # decided by ping
    forced_scheme: str | None = None
    pinged: bool = False
    basic: bool = False            # the registry wants Basic on every request
    challenge: Challenge | None = None
    creds: tuple[str, str] | None = None
    creds_loaded: bool = False

    @property
    def base(self) -> str:
        return f"{self.scheme or 'https'}://{self.host}"


@dataclass
class HeadResult:
    digest: str | None
    media_type: str
    size: int | None


def _registry_errors(r) -> list[dict]:
    try:
        body = r.json()
    except (ValueError, RecursionError):       # RecursionError: "[[[[..." from a hostile registry
        return []
    if isinstance(body, dict):
        errs = body.get("errors")
        if isinstance(errs, list):
            return [e for e in errs if isinstance(e, dict)]
        if body.get("details"):
            return [{"code": "", "message": str(body["details"])}]
    return []


def _err_text(errs: list[dict]) -> str:
    parts = []
    for e in errs[:3]:
        code = str(e.get("code", "")).lower()
        msg = str(e.get("message", "")).strip()
        parts.append(f"{code}: {msg}" if code and msg else code or msg)
    return "; ".join(p for p in parts if p)


class RegistryClient:
    def __init__(self, domain: str, *, config=None, log: Callable[[str], None] | None = None,
                 session=None):
        import requests

        from container.engine.registry import config as _config

        self.domain = domain
        self.config = config if config is not None else _config.load()
        self.log = log or (lambda msg: None)
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.ratelimit_remaining: str | None = None
        self.warnings: set[str] = set()
        self.endpoints: list[Endpoint] = []
        rc = self.config.registry(domain)
        for m in rc.mirrors:
            forced = None
            host = m
            if "://" in m:
                forced, host = m.split("://", 1)
                host = host.split("/", 1)[0]
            self.endpoints.append(Endpoint(host, mirror=True, forced_scheme=forced,
                                           insecure=is_loopback_host(host) or self.config.is_insecure(host)
                                           or forced == "http"))
        origin = DOCKER_HUB_API if domain == DOCKER_HUB else domain
        self.endpoints.append(Endpoint(origin, insecure=is_loopback_host(origin) or rc.insecure))
        if any(e.insecure for e in self.endpoints):
            import urllib3    # unverified TLS is what "insecure" means here: no warning per request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    # -- transport ----------------------------------------------------------------------------
    def _send(self, ep: Endpoint, method: str, url: str, **kw):
        import requests

        kw.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        kw.setdefault("verify", not ep.insecure)
        try:
            return self.session.request(method, url, **kw)
        except requests.exceptions.SSLError:
            raise
        except requests.exceptions.ConnectionError as e:
            raise _Transient(_conn_reason(e)) from None
        except requests.exceptions.Timeout:
            raise _Transient("timed out") from None
        except requests.exceptions.TooManyRedirects:
            raise RegistryError(f"registry {ep.host}: too many redirects for {_short_url(url)}") from None
        except (requests.exceptions.RequestException, ValueError) as e:
            # InvalidURL/InvalidSchema/InvalidHeader...: a registry (or its realm, its redirect) sent junk
            raise RegistryError(f"registry {ep.host}: bad request to {_short(url)}: {_short(str(e))}") from None

    def ping(self, ep: Endpoint) -> None:
        """GET /v2/: pick the scheme, learn the auth challenge."""
        import requests

        if ep.pinged:
            return
        if ep.forced_scheme:
            schemes = [ep.forced_scheme]
        elif is_loopback_host(ep.host):
            # Loopback: plain HTTP first (no TLS context to build: ~0.1-0.2 s); a TLS registry answers
            # it with 400 "HTTP request to an HTTPS server", and then we use https.
            schemes = ["http", "https"]
        else:
            schemes = ["https", "http"] if ep.insecure else ["https"]
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{ep.host}/v2/"
            try:
                # a probe with a fallback scheme after it gets one attempt (a TLS port resets plain HTTP)
                r = self._retrying(ep, "GET", url, allow_redirects=True,
                                   attempts=1 if scheme != schemes[-1] else None)
            except requests.exceptions.SSLError as e:
                last = e
                continue
            except RegistryUnavailable as e:
                last = e
                if scheme != schemes[-1] and "refused" not in str(e):
                    continue
                raise
            with r:
                if scheme == "http" and len(schemes) > 1 and schemes[0] == "http" and r.status_code not in (200, 401) \
                        and not r.headers.get("Docker-Distribution-API-Version"):
                    last = RegistryUnavailable(f"{ep.host} does not speak plain HTTP (HTTP {r.status_code})")
                    continue
                if r.status_code == 401:
                    self._learn_challenge(ep, r)
                elif r.status_code >= 400 and r.status_code != 404:
                    # Some registries answer /v2/ oddly; only a 5xx after retries is fatal.
                    if r.status_code >= 500:
                        raise RegistryUnavailable(f"registry {ep.host} is unavailable: HTTP {r.status_code}")
                ep.scheme = scheme
                ep.pinged = True
                self.log(f"{ep.host}: registry v2 API over {scheme}")
                return
        if isinstance(last, requests.exceptions.SSLError):
            raise RegistryUnavailable(f"cannot reach registry {ep.host}: TLS error: "
                                      f"{_short(str(last))} (add it as insecure in the config?)")
        raise RegistryUnavailable(f"cannot reach registry {ep.host}: {last}")

    def _retrying(self, ep: Endpoint, method: str, url: str, *, attempts: int | None = None, **kw):
        """One request with retries on transient failures; returns the last response."""
        attempt = 0
        attempts = attempts or ATTEMPTS
        while True:
            attempt += 1
            try:
                r = self._send(ep, method, url, **kw)
            except _Transient as e:
                if attempt >= attempts:
                    raise RegistryUnavailable(f"cannot reach registry {ep.host}: {e}") from None
                self._sleep(attempt, None, f"{method} {_short_url(url)}: {e}")
                continue
            if r.status_code in RETRY_STATUS and attempt < attempts:
                ra = _retry_after(r.headers.get("Retry-After"))
                if ra is not None and ra > MAX_RETRY_AFTER:
                    return r
                r.close()
                self._sleep(attempt, ra, f"{method} {_short_url(url)}: HTTP {r.status_code}")
                continue
            return r

    def _sleep(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = retry_after if retry_after is not None else BACKOFF * (2 ** (attempt - 1))
        delay = delay * (1 + random.uniform(0, 0.25))
        self.log(f"retrying in {delay:.1f}s ({why})")
        time.sleep(delay)

    # -- auth ---------------------------------------------------------------------------------
    def _learn_challenge(self, ep: Endpoint, r) -> None:
        chs = parse_www_authenticate(r.headers.get("WWW-Authenticate", ""))
        for c in chs:
            if c.scheme == "bearer" and c.get("realm"):
                ep.challenge = c
                ep.basic = False
                return
        for c in chs:
            if c.scheme == "basic":
                ep.challenge = c
                ep.basic = True
                return

    def _creds(self, ep: Endpoint) -> tuple[str, str] | None:
        if not ep.creds_loaded:
            key = DOCKER_HUB if (ep.host == DOCKER_HUB_API and not ep.mirror) else ep.host
            ep.creds = get_credentials(key)
            ep.creds_loaded = True
        return ep.creds

    def _auth_header(self, ep: Endpoint, scope: str | None, *, refresh: bool = False) -> dict:
        c = ep.challenge
        if c is None:
            return {}
        if ep.basic:
            creds = self._creds(ep)
            if not creds:
                return {}
            return {"Authorization": "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()}
        token = self._token(ep, c, scope, refresh=refresh)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _token(self, ep: Endpoint, c: Challenge, scope: str | None, *, refresh: bool) -> str | None:
        realm, service = c.get("realm"), c.get("service") or ""
        scopes = [s for s in (scope or c.get("scope") or "").split(" ") if s]
        key = (realm, service, tuple(sorted(scopes)))
        with self._lock:
            hit = self._tokens.get(key)
            if hit and hit[1] > time.monotonic() and not refresh:
                return hit[0]
        try:
            parts = urlsplit(realm or "")
        except ValueError:          # "http://[::1" from a hostile registry
            raise AuthError(f"registry {ep.host} sent an invalid token realm {realm!r}") from None
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise AuthError(f"registry {ep.host} sent an invalid token realm {realm!r}")
        if parts.scheme == "http" and not (ep.insecure or is_loopback_host(parts.netloc)):
            raise AuthError(f"registry {ep.host} sent a plain-http token realm {realm!r}: refused "
                            "(mark the registry insecure in the config to allow it)")
        params = [("service", service)] if service else []
        params += [("scope", s) for s in scopes]
        creds = self._creds(ep)
        headers = {}
        if creds and creds[0] != "<token>":
            headers["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        if creds and creds[0] == "<token>":
            # identity token: OAuth2 refresh-token grant (POST)
            r = self._retrying(ep, "POST", realm, data={"grant_type": "refresh_token", "refresh_token": creds[1],
                                                        "service": service, "scope": " ".join(scopes),
                                                        "client_id": "container"})
        else:
            r = self._retrying(ep, "GET", url, headers=headers,
                               verify=not (ep.insecure or is_loopback_host(parts.netloc)))
        with r:
            if r.status_code in (401, 403):
                if creds:
                    raise AuthError(f"authentication to {ep.host} failed: unauthorized: incorrect username or "
                                    f"password (token server {parts.netloc} answered HTTP {r.status_code})")
                repos = [s.split(":")[1] if s.count(":") >= 2 else s for s in scopes]
                what = familiar(f"{self.domain}/{repos[0]}") if repos else ep.host
                raise AuthError(f"pull access denied for {what}, repository does not exist or may require "
                                f"'container login': unauthorized (token server {parts.netloc} answered "
                                f"HTTP {r.status_code})")
            if r.status_code != 200:
                raise RegistryError(f"token server {parts.netloc} answered HTTP {r.status_code}")
            try:
                body = r.json()
            except (ValueError, RecursionError):
                raise AuthError(f"token server {parts.netloc} sent an invalid response") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise AuthError(f"token server {parts.netloc} sent no token")
        try:
            expires = min(max(60, int(body.get("expires_in") or 60)), 86400)
        except (TypeError, ValueError, OverflowError):     # Python's JSON reads Infinity
            expires = 60
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + expires - 10)
        self.log(f"{ep.host}: got a token for {' '.join(scopes) or 'registry'} (expires in {expires}s)")
        return token

    # -- requests with auth, per endpoint --------------------------------------------------------
    def request(self, ep: Endpoint, method: str, path: str, *, repo: str, headers: dict | None = None,
                stream: bool = False):
        """Send with auth; handles one 401 round (new token / insufficient_scope). Returns the response."""
        self.ping(ep)
        scope = f"repository:{repo}:pull"
        url = ep.base + path
        hdrs = dict(headers or {})
        refreshed = False
        while True:
            h = dict(hdrs)
            h.update(self._auth_header(ep, scope, refresh=refreshed))
            r = self._retrying(ep, method, url, headers=h, stream=stream)
            self._note_headers(r)
            if r.status_code == 401 and not refreshed:
                chs = parse_www_authenticate(r.headers.get("WWW-Authenticate", ""))
                had = "Authorization" in h
                self._learn_challenge(ep, r)
                if ep.challenge is not None and (not had or ep.challenge.scheme == "bearer"):
                    if ep.basic and not self._creds(ep):
                        return r
                    # a Bearer challenge may name a different scope (insufficient_scope)
                    for c in chs:
                        if c.scheme == "bearer" and c.get("scope"):
                            scope = c.get("scope")
                    r.close()
                    refreshed = True
                    continue
            return r

    def _note_headers(self, r) -> None:
        rl = r.headers.get("ratelimit-remaining")
        if rl:
            self.ratelimit_remaining = rl.split(";", 1)[0]
        w = r.headers.get("Warning")
        if w and w.startswith("299") and w not in self.warnings:
            self.warnings.add(w)
            self.log(f"registry warning: {w[4:].strip()}")

    def _each_endpoint(self, fn, what: str):
        """fn(ep) on mirrors first, then the origin; a mirror failure falls through to the next."""
        last: Exception | None = None
        for ep in self.endpoints:
            try:
                return fn(ep)
            except (RegistryError, OSError) as e:
                if not ep.mirror:
                    raise
                self.log(f"mirror {ep.host}: {e}; trying the next endpoint")
                last = e
        raise last or RegistryError(what)  # pragma: no cover

    # -- API ------------------------------------------------------------------------------------
    def head_manifest(self, repo: str, ref: str) -> HeadResult:
        def fn(ep: Endpoint) -> HeadResult:
            r = self.request(ep, "HEAD", f"/v2/{repo}/manifests/{ref}", repo=repo, headers={"Accept": ACCEPT})
            with r:
                if r.status_code != 200:
                    self.raise_for(r, ep, repo, ref, what="manifest")
                cl = r.headers.get("Content-Length")
                return HeadResult(r.headers.get("Docker-Content-Digest"), base_type(r.headers.get("Content-Type")),
                                  int(cl) if cl and cl.isdigit() else None)
        res = self._each_endpoint(fn, "manifest")
        if self.ratelimit_remaining:
            self.log(f"Docker Hub rate limit remaining: {self.ratelimit_remaining}")
        return res

    def get_manifest(self, repo: str, ref: str, *, max_size: int = MAX_MANIFEST) -> tuple[bytes, str, str | None]:
        """(raw bytes, content type, Docker-Content-Digest header)."""
        def fn(ep: Endpoint):
            r = self.request(ep, "GET", f"/v2/{repo}/manifests/{ref}", repo=repo, headers={"Accept": ACCEPT},
                             stream=True)
            with r:
                if r.status_code != 200:
                    self.raise_for(r, ep, repo, ref, what="manifest")
                cl = r.headers.get("Content-Length")
                if cl and cl.isdigit() and int(cl) > max_size:
                    raise RegistryError(f"manifest for {ref} is too large ({cl} bytes)")
                body = _read_capped(r, max_size, f"manifest {ref}")
                return body, base_type(r.headers.get("Content-Type")), r.headers.get("Docker-Content-Digest")
        return self._each_endpoint(fn, "manifest")

    def get_blob_bytes(self, repo: str, digest: str, max_size: int) -> bytes:
        def fn(ep: Endpoint):
            r = self.request(ep, "GET", f"/v2/{repo}/blobs/{digest}", repo=repo, stream=True)
            with r:
                if r.status_code != 200:
                    self.raise_for(r, ep, repo, digest, what="blob")
                return _read_capped(r, max_size, f"blob {digest[:19]}")
        return self._each_endpoint(fn, "blob")

    def get_blob(self, repo: str, digest: str, *, offset: int = 0):
        """A streaming response for a blob (200, or 206 when offset > 0 and honoured, or 416)."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"

        def fn(ep: Endpoint):
            r = self.request(ep, "GET", f"/v2/{repo}/blobs/{digest}", repo=repo, headers=headers, stream=True)
            if r.status_code in (200, 206) or (r.status_code == 416 and offset):
                return r
            with r:
                self.raise_for(r, ep, repo, digest, what="blob")
        return self._each_endpoint(fn, "blob")

    # -- errors ---------------------------------------------------------------------------------
    def raise_for(self, r, ep: Endpoint, repo: str, ref: str, *, what: str):
        errs = _registry_errors(r) if r.request.method != "HEAD" else []
        codes = {str(e.get("code", "")).upper() for e in errs}
        text = _err_text(errs)
        name = familiar(f"{self.domain}/{repo}")
        st = r.status_code
        if st == 401 or st == 403 or codes & {"UNAUTHORIZED", "DENIED"}:
            if self._creds(ep):
                raise AuthError(f"pull access denied for {name}: {text or 'unauthorized'} "
                                f"(check the credentials for {ep.host}: `container login {ep.host}`)")
            raise AuthError(f"pull access denied for {name}, repository does not exist or may require "
                            f"'container login': {text or 'denied: requested access to the resource is denied'}")
        if st == 404 or codes & {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"}:
            if "NAME_UNKNOWN" in codes:
                raise ManifestUnknown(f"repository {name} not found: {text}")
            if what == "manifest":
                sep = "@" if ref.startswith("sha256:") else ":"
                raise ManifestUnknown(f"manifest for {name}{sep}{ref} not found: "
                                      f"{text or 'manifest unknown: manifest unknown'}")
            raise ManifestUnknown(f"{what} {ref} not found in {name}: {text or 'blob unknown'}")
        if st == 429 or "TOOMANYREQUESTS" in codes:
            raise RegistryError(f"toomanyrequests: {text or 'too many requests'} ({ep.host}"
                                + (f", retry after {r.headers['Retry-After']}s" if r.headers.get('Retry-After')
                                   else "") + ")")
        if st >= 500:
            raise RegistryUnavailable(f"registry {ep.host} failed: HTTP {st}" + (f": {text}" if text else ""))
        raise RegistryError(f"unexpected response from {ep.host} for {what} {ref}: HTTP {st}"
                            + (f": {text}" if text else ""))

    def close(self) -> None:
        self.session.close()


class _Transient(Exception):
    pass


def _conn_reason(e: Exception) -> str:
    s = str(e)
    for key, text in (("Connection refused", "connection refused"), ("Name or service not known", "no such host"),
                      ("Temporary failure in name resolution", "no such host"),
                      ("Connection reset", "connection reset by peer"), ("timed out", "timed out"),
                      ("Network is unreachable", "network is unreachable"),
                      ("RemoteDisconnected", "connection closed by the server")):
        if key in s:
            return text
    return _short(s)


def _short(s: str) -> str:
    s = s.replace("\n", " ")
    return s if len(s) < 160 else s[:157] + "..."


def _short_url(u: str) -> str:
    p = urlsplit(u)
    return f"{p.netloc}{p.path}"


def _retry_after(v: str | None) -> float | None:
    if not v:
        return None
    v = v.strip()
    if v.isdigit():
        return float(v)
    try:
        from email.utils import parsedate_to_datetime

        import datetime as dt
        when = parsedate_to_datetime(v)
        return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


def _read_capped(r, cap: int, what: str) -> bytes:
    import requests
    import urllib3

    buf = bytearray()
    try:
        while True:
            chunk = r.raw.read(65536, decode_content=True)
            if not chunk:
                break
            buf += chunk
            if len(buf) > cap:
                raise RegistryError(f"{what} is too large (more than {cap} bytes)")
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as e:
        raise RegistryUnavailable(f"reading {what}: {_short(str(e))}") from None
    return bytes(buf)


def normalize_server(server: str | None) -> str:
    """`container login [SERVER]`: docker.io by default; scheme and path dropped."""
    if not server:
        return DOCKER_HUB
    s = _norm_key(server) if "://" in server or server.lower() in (
        "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com") else server.strip().rstrip("/")
    if not s or "/" in s or " " in s:
        from container.engine.errors import InvalidReference
        raise InvalidReference(f"invalid registry address {server!r}")
    return s


def verify_login(host: str, username: str, password: str, *, config=None, log=None) -> None:
    """Check credentials against the registry (Basic on /v2/, or a token from the realm)."""
    client = RegistryClient(host, config=config, log=log)
    try:
        ep = client.endpoints[-1]
        ep.creds, ep.creds_loaded = (username, password), True
        client.ping(ep)
        if ep.challenge is None:
            return
        if ep.basic:
            r = client._retrying(ep, "GET", ep.base + "/v2/", headers=client._auth_header(ep, None))
            with r:
                if r.status_code == 200:
                    return
                raise AuthError(f"login to {host} failed: unauthorized: incorrect username or password")
        try:
            client._token(ep, ep.challenge, None, refresh=True)
        except AuthError:
            raise AuthError(f"login to {host} failed: unauthorized: incorrect username or password") from None
    finally:
        client.close()
