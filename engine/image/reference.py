"""Image references: the distribution/reference grammar and Docker Hub normalisation.

    parse("busybox")            -> docker.io/library/busybox:latest
    parse("127.0.0.1:5000/x@sha256:...")
    parse("busybox:1.36@sha256:...")   tag kept as a local name, pull by digest
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from container.engine.errors import InvalidReference

ALNUM = r"[a-z0-9]+"
SEP = r"(?:[._]|__|[-]+)"
PATH_COMP = ALNUM + r"(?:" + SEP + ALNUM + r")*"
REMOTE = PATH_COMP + r"(?:/" + PATH_COMP + r")*"
DOM_COMP = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
HOST = r"(?:" + DOM_COMP + r"(?:\." + DOM_COMP + r")*|\[(?:[a-fA-F0-9:]+)\])"
DOMAIN = HOST + r"(?::[0-9]+)?"
TAG = r"[\w][\w.-]{0,127}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REF_RE = re.compile(r"^((?:" + DOMAIN + r"/)?" + REMOTE + r")(?::(" + TAG + r"))?(?:@(" + DIGEST + r"))?$", re.ASCII)
ANCHORED_ID = re.compile(r"^[a-f0-9]{64}$")
SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")

DOCKER_HUB = "docker.io"
NAME_TOTAL_MAX = 255


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """Full name without tag/digest: docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """What docker prints: busybox, user/app, host:5000/app."""
        return familiar(self.repository)

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def familiar(repository: str) -> str:
    """docker's short name for a normalised repository: docker.io/library/busybox -> busybox,
    docker.io/user/app -> user/app, host:5000/app unchanged. "library/" goes only when one
    component follows it: docker.io/library/library/a stays library/library/a (stripping would
    name docker.io/library/a, another image)."""
    if repository.startswith(DOCKER_HUB + "/"):
        path = repository[len(DOCKER_HUB) + 1:]
        rest = path[len("library/"):]
        return rest if path.startswith("library/") and "/" not in rest else path
    return repository


def _invalid(s: str, why: str = "") -> InvalidReference:
    msg = f'invalid reference format: "{s}"'
    if why:
        msg += f" ({why})"
    return InvalidReference(msg)


def parse(s: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse and normalise like docker (ParseNormalizedNamed + TagNameOnly)."""
    if not isinstance(s, str) or not s or s != s.strip():
        raise _invalid(s or "")
    if ANCHORED_ID.match(s):
        raise _invalid(s, "cannot specify 64-byte hexadecimal strings")
    m = REF_RE.match(s)
    if not m:
        if REF_RE.match(s.lower()):
            raise _invalid(s, "repository name must be lowercase")
        raise _invalid(s)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if digest is not None and not SHA256.match(digest):
        raise _invalid(s, "unsupported digest algorithm or length")
    domain, _, rest = name.partition("/")
    if not rest:
        domain, path = DOCKER_HUB, name
    elif domain == "localhost" or "." in domain or ":" in domain or domain != domain.lower():
        path = rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if path != path.lower():
        raise _invalid(s, "repository name must be lowercase")
    if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
        raise _invalid(s, "repository name must not be more than 255 characters")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def looks_like_id(s: str) -> bool:
    """A (short) image or container id: 4..64 lowercase hex, optionally sha256:-prefixed."""
    s = s.removeprefix("sha256:")
    return 4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s)
