"""Registry v2 / OCI distribution client on one http Session (registry/http.py).

    client = RegistryClient("docker.io", config=cfg, log=print)
    head = client.head_manifest("library/busybox", "latest")        # HEAD: free on Docker Hub
    raw, ctype, digest = client.get_manifest("library/busybox", head.digest)
    with client.get_blob("library/busybox", digest, offset=n) as resp: ...

Transport: https, or plain http for loopback registries and registries configured insecure
(https is tried first, as docker does). Mirrors from the config are tried first, then the origin
(registry/endpoints.py). Redirects are followed by the Session, which drops Authorization when
the host, scheme or port changes. Retries with exponential backoff and jitter on 408/429/5xx and connection
resets, honouring Retry-After; never on 401/403/404. Auth (tokens, Basic) is registry/auth.py;
registry error bodies become the engine's errors in raise_for().
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from container.engine.errors import AuthError, ManifestUnknown, RegistryError, RegistryUnavailable
from container.engine.image.manifest import ACCEPT, MAX_MANIFEST, base_type
from container.engine.image.reference import familiar
from container.engine.registry.auth import Authenticator
from container.engine.registry.challenge import parse_www_authenticate
from container.engine.registry.endpoints import Endpoint, endpoints_for, is_loopback_host
from container.engine.tunables import env_number

USER_AGENT = "container/0.1"


RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 522})
ATTEMPTS = env_number("CONTAINER_REGISTRY_ATTEMPTS", 5, int, minimum=1)
BACKOFF = env_number("CONTAINER_REGISTRY_BACKOFF", 0.25, minimum=0)
MAX_RETRY_AFTER = 60.0
CONNECT_TIMEOUT = 15.0
# seconds without a byte before a request (or a blob body, which is then resumed with Range) is
# given up; a stalled registry costs at most ATTEMPTS (manifests) or CONTAINER_PULL_RECONNECTS
# (blobs) times this
READ_TIMEOUT = env_number("CONTAINER_REGISTRY_READ_TIMEOUT", 60.0, minimum=0.001)


@dataclass
class HeadResult:
    """What HEAD on a manifest told: Docker-Content-Digest, Content-Type, Content-Length."""

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
    """One registry (`domain`): its endpoints, one Session, the auth state, the v2 API calls."""

    def __init__(self, domain: str, *, config=None, log: Callable[[str], None] | None = None,
                 session=None):
        from container.engine.registry import config as _config
        from container.engine.registry.http import Session

        self.domain = domain
        self.config = config if config is not None else _config.load()
        self.log = log or (lambda msg: None)
        self.session = session or Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.auth = Authenticator(domain, self.retrying, self.log)
        self.ratelimit_remaining: str | None = None
        self.warnings: set[str] = set()
        self.endpoints: list[Endpoint] = endpoints_for(domain, self.config)

    # -- transport ----------------------------------------------------------------------------
    def _send(self, ep: Endpoint, method: str, url: str, **kw):
        from container.engine.registry import http

        kw.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        kw.setdefault("verify", not ep.insecure)
        try:
            return self.session.request(method, url, **kw)
        except http.TLSError:
            raise
        except (http.ConnectFailed, http.Timeout) as e:
            raise _Transient(str(e)) from None
        except http.ProxyRefused as e:
            raise RegistryError(f"registry {ep.host}: {e}") from None
        except http.TooManyRedirects:
            raise RegistryError(f"registry {ep.host}: too many redirects for {_short_url(url)}") from None
        except (http.BadRequest, ValueError) as e:
            # an invalid URL or header: a registry (or its realm, its redirect) sent junk
            raise RegistryError(f"registry {ep.host}: bad request to {_short(url)}: {_short(str(e))}") from None

    def ping(self, ep: Endpoint) -> None:
        """GET /v2/: pick the scheme, learn the auth challenge."""
        from container.engine.registry.http import TLSError

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
                r = self.retrying(ep, "GET", url, allow_redirects=True,
                                   attempts=1 if scheme != schemes[-1] else None)
            except TLSError as e:
                last = e
                continue
            except RegistryUnavailable as e:
                last = e
                if scheme != schemes[-1] and "refused" not in str(e):
                    continue
                raise
            with r:
                if r.status_code == 407:
                    raise _proxy_auth_required(ep)
                if scheme == "http" and len(schemes) > 1 and schemes[0] == "http" and r.status_code not in (200, 401) \
                        and not r.headers.get("Docker-Distribution-API-Version"):
                    last = RegistryUnavailable(f"{ep.host} does not speak plain HTTP (HTTP {r.status_code})")
                    continue
                if r.status_code == 401:
                    self.auth.learn(ep, r)
                elif r.status_code >= 400 and r.status_code != 404:
                    # Some registries answer /v2/ oddly; only a 5xx after retries is fatal.
                    if r.status_code >= 500:
                        raise RegistryUnavailable(f"registry {ep.host} is unavailable: HTTP {r.status_code}")
                ep.scheme = scheme
                ep.pinged = True
                self.log(f"{ep.host}: registry v2 API over {scheme}")
                return
        if isinstance(last, TLSError):
            raise RegistryUnavailable(f"cannot reach registry {ep.host}: TLS error: "
                                      f"{_short(str(last))} (add it as insecure in the config?)")
        raise RegistryUnavailable(f"cannot reach registry {ep.host}: {last}")

    def retrying(self, ep: Endpoint, method: str, url: str, *, attempts: int | None = None, **kw):
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
                self.backoff(attempt, None, f"{method} {_short_url(url)}: {e}")
                continue
            if r.status_code in RETRY_STATUS and attempt < attempts:
                ra = parse_retry_after(r.headers.get("Retry-After"))
                if ra is not None and ra > MAX_RETRY_AFTER:
                    return r
                r.close()
                self.backoff(attempt, ra, f"{method} {_short_url(url)}: HTTP {r.status_code}")
                continue
            return r

    def backoff(self, attempt: int, retry_after: float | None, why: str) -> None:
        """Sleep before retry number `attempt`: Retry-After when the registry sent one, else exponential
        (CONTAINER_REGISTRY_BACKOFF doubled per attempt), with up to 25% jitter; logged with `why`."""
        delay = retry_after if retry_after is not None else BACKOFF * (2 ** (attempt - 1))
        delay = delay * (1 + random.uniform(0, 0.25))
        self.log(f"retrying in {delay:.1f}s ({why})")
        time.sleep(delay)

    # -- requests with auth, per endpoint --------------------------------------------------------
    def request(self, ep: Endpoint, method: str, path: str, *, repo: str, headers: dict | None = None,
                stream: bool = False, scope: str | None = None, **kw):
        """Send with auth; handles one 401 round (new token / insufficient_scope). Returns the response.
        `path` is below the endpoint's base, or an absolute URL (an upload's Location); `scope` is the
        token scope (default: pull on `repo`); other keywords (data, params) go to Session.request."""
        self.ping(ep)
        scope = scope or f"repository:{repo}:pull"
        url = path if path.startswith(("http://", "https://")) else ep.base + path
        hdrs = dict(headers or {})
        refreshed = False
        while True:
            h = dict(hdrs)
            h.update(self.auth.header(ep, scope, refresh=refreshed))
            r = self.retrying(ep, method, url, headers=h, stream=stream, **kw)
            self._note_headers(r)
            if r.status_code == 401 and not refreshed:
                chs = parse_www_authenticate(r.headers.get("WWW-Authenticate", ""))
                had = "Authorization" in h
                self.auth.learn(ep, r)
                if ep.challenge is not None and (not had or ep.challenge.scheme == "bearer"):
                    if ep.basic and not self.auth.creds(ep):
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
        errs = _registry_errors(r) if r.method != "HEAD" else []
        codes = {str(e.get("code", "")).upper() for e in errs}
        text = _err_text(errs)
        name = familiar(f"{self.domain}/{repo}")
        st = r.status_code
        if st == 401 or st == 403 or codes & {"UNAUTHORIZED", "DENIED"}:
            if self.auth.creds(ep):
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
        if st == 407:
            raise _proxy_auth_required(ep)
        if st >= 500:
            raise RegistryUnavailable(f"registry {ep.host} failed: HTTP {st}" + (f": {text}" if text else ""))
        raise RegistryError(f"unexpected response from {ep.host} for {what} {ref}: HTTP {st}"
                            + (f": {text}" if text else ""))

    def check_login(self, username: str, password: str) -> None:
        """`login`: try these credentials on the origin (Basic on /v2/, or a fresh token from the realm)."""
        ep = self.endpoints[-1]
        ep.creds, ep.creds_loaded = (username, password), True
        self.ping(ep)
        if ep.challenge is None:
            return
        if ep.basic:
            r = self.retrying(ep, "GET", ep.base + "/v2/", headers=self.auth.header(ep, None))
            with r:
                if r.status_code == 200:
                    return
                raise AuthError(f"login to {self.domain} failed: unauthorized: incorrect username or password")
        try:
            self.auth.token(ep, ep.challenge, None, refresh=True)
        except AuthError:
            raise AuthError(f"login to {self.domain} failed: unauthorized: incorrect username or password") \
                from None

    def close(self) -> None:
        self.session.close()


class _Transient(Exception):
    pass


def _proxy_auth_required(ep: Endpoint) -> RegistryError:
    return RegistryError(f"the proxy for {ep.host} answered HTTP 407 Proxy Authentication Required "
                         "(check the user:password in HTTP_PROXY / HTTPS_PROXY)")


def _short(s: str) -> str:
    s = s.replace("\n", " ")
    return s if len(s) < 160 else s[:157] + "..."


def _short_url(u: str) -> str:
    p = urlsplit(u)
    return f"{p.netloc}{p.path}"


def parse_retry_after(v: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None when absent or unreadable."""
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
    buf = bytearray()
    try:
        while True:
            chunk = r.read(65536, decode=True)
            if not chunk:
                break
            buf += chunk
            if len(buf) > cap:
                raise RegistryError(f"{what} is too large (more than {cap} bytes)")
    except OSError as e:
        raise RegistryUnavailable(f"reading {what}: {_short(str(e))}") from None
    return bytes(buf)


def verify_login(host: str, username: str, password: str, *, config=None, log=None) -> None:
    """Check credentials against the registry (Basic on /v2/, or a token from the realm)."""
    client = RegistryClient(host, config=config, log=log)
    try:
        client.check_login(username, password)
    finally:
        client.close()
