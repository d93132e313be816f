"""Registry authentication: the Authorization header for a request to an endpoint.

A 401 carries WWW-Authenticate (registry/challenge.py). Bearer -> a token from the realm (Basic
credentials to the realm when we have them; an identity token is an OAuth2 refresh-token POST),
cached per (realm, service, scope) until it expires; Basic -> credentials on every request.
Credentials come from registry/credentials.py, looked up once per endpoint.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Callable
from urllib.parse import urlencode, urlsplit

from container.engine.errors import AuthError, RegistryError
from container.engine.image.reference import DOCKER_HUB, familiar
from container.engine.registry.challenge import Challenge, parse_www_authenticate
from container.engine.registry.credentials import get_credentials
from container.engine.registry.endpoints import DOCKER_HUB_API, Endpoint, is_loopback_host


def basic_header(creds: tuple[str, str]) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()}


class Authenticator:
    """One per RegistryClient: learns each endpoint's challenge, loads its credentials, and keeps
    the token cache. `send(ep, method, url, **kw)` is the client's retrying request (token
    requests get the same retries as registry requests)."""

    def __init__(self, domain: str, send: Callable, log: Callable[[str], None]):
        self.domain = domain
        self.send = send
        self.log = log
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def learn(self, ep: Endpoint, r) -> None:
        """Remember the endpoint's challenge from a 401 (Bearer with a realm preferred over Basic)."""
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

    def creds(self, ep: Endpoint) -> tuple[str, str] | None:
        """(username, secret) for the endpoint, or None; looked up once (the origin of Docker Hub as docker.io)."""
        if not ep.creds_loaded:
            key = DOCKER_HUB if (ep.host == DOCKER_HUB_API and not ep.mirror) else ep.host
            ep.creds = get_credentials(key)
            ep.creds_loaded = True
        return ep.creds

    def header(self, ep: Endpoint, scope: str | None, *, refresh: bool = False) -> dict:
        """The Authorization header for a request in `scope` ({} when the endpoint asked for none)."""
        c = ep.challenge
        if c is None:
            return {}
        if ep.basic:
            creds = self.creds(ep)
            if not creds:
                return {}
            return basic_header(creds)
        token = self.token(ep, c, scope, refresh=refresh)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def token(self, ep: Endpoint, c: Challenge, scope: str | None, *, refresh: bool) -> str | None:
        """A Bearer token for `scope` from the challenge's realm: the cached one unless refresh."""
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
        if realm is None or parts.scheme not in ("https", "http") or not parts.netloc:
            raise AuthError(f"registry {ep.host} sent an invalid token realm {realm!r}")
        if parts.scheme == "http" and not (ep.insecure or is_loopback_host(parts.netloc)):
            raise AuthError(f"registry {ep.host} sent a plain-http token realm {realm!r}: refused "
                            "(mark the registry insecure in the config to allow it)")
        params = [("service", service)] if service else []
        params += [("scope", s) for s in scopes]
        creds = self.creds(ep)
        headers = basic_header(creds) if creds and creds[0] != "<token>" else {}
        url = realm + ("&" if "?" in realm else "?") + urlencode(params)
        if creds and creds[0] == "<token>":
            # identity token: OAuth2 refresh-token grant (POST)
            r = self.send(ep, "POST", realm, data={"grant_type": "refresh_token", "refresh_token": creds[1],
                                                        "service": service, "scope": " ".join(scopes),
                                                        "client_id": "container"})
        else:
            r = self.send(ep, "GET", url, headers=headers,
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

