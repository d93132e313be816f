"""Where a registry is reached: its endpoints (the config's mirrors first, then the origin), which
of them may use plain http and unverified TLS (loopback, or marked insecure), and what each
endpoint taught us (scheme, auth challenge, credentials)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from container.engine.image.reference import DOCKER_HUB
from container.engine.registry.challenge import Challenge

DOCKER_HUB_API = "registry-1.docker.io"


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
    """One host serving the registry (a mirror or the origin) and what ping and 401s taught us."""

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


def endpoints_for(domain: str, config) -> list[Endpoint]:
    """The mirrors configured for `domain` (each with its own scheme and insecure flag), then the origin."""
    out: list[Endpoint] = []
    rc = config.registry(domain)
    for m in rc.mirrors:
        forced = None
        host = m
        if "://" in m:
            forced, host = m.split("://", 1)
            host = host.split("/", 1)[0]
        out.append(Endpoint(host, mirror=True, forced_scheme=forced,
                            insecure=is_loopback_host(host) or config.is_insecure(host) or forced == "http"))
    origin = DOCKER_HUB_API if domain == DOCKER_HUB else domain
    out.append(Endpoint(origin, insecure=is_loopback_host(origin) or rc.insecure))
    return out
