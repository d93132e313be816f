"""Pushing to a registry (distribution-spec "Pushing"): blob existence, cross-repository mount,
uploads (monolithic or chunked), the manifest. On a RegistryClient's origin endpoint, with a token
scoped `repository:<repo>:pull,push` (plus `repository:<from>:pull` for a mount).

    up = Uploader(client, "test/app")
    up.exists(digest)                                   # HEAD /v2/<repo>/blobs/<digest>: 200
    up.mount(digest, "test/base")                       # POST ?mount=&from=: 201 True; 202 -> upload URL
    up.upload(digest, size, f, location)                # POST (unless given), then PUT ?digest= (small)
                                                        # or PATCH chunks + PUT ?digest= (large)
    up.put_manifest("latest", raw, media_type)          # PUT /v2/<repo>/manifests/<ref>: the digest

A chunked upload that fails mid-way asks the registry how much it has (GET on the upload URL:
Range 0-N) and goes on from there, once per chunk.
"""

from __future__ import annotations

from urllib.parse import quote, urljoin

from container.engine.errors import AuthError, RegistryError
from container.engine.image.reference import familiar
from container.engine.tunables import env_number

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any

    from container.engine.registry.client import RegistryClient

# blobs up to this size go in one PUT; larger ones in PATCH chunks of this size
CHUNK = env_number("CONTAINER_PUSH_CHUNK", 8 << 20, int, minimum=1024)


class Uploader:
    def __init__(self, client: RegistryClient, repo: str):
        self.client, self.repo = client, repo
        self.ep = client.endpoints[-1]          # the origin: never push to a mirror
        self.scope = f"repository:{repo}:pull,push"

    def _req(self, method: str, path: str, *, scope: str | None = None, what: str, ref: str, ok: tuple[int, ...],
             **kw: Any) -> Any:
        r = self.client.request(self.ep, method, path, repo=self.repo, scope=scope or self.scope, **kw)
        if r.status_code in ok:
            return r
        with r:
            if r.status_code in (401, 403):
                raise AuthError(f"push access denied for {familiar(self.client.domain + '/' + self.repo)}: "
                                "denied: requested access to the resource is denied (`container login "
                                f"{self.ep.host}`?)")
            self.client.raise_for(r, self.ep, self.repo, ref, what=what)
            raise RegistryError(f"{method} {what} {ref}: HTTP {r.status_code}")   # pragma: no cover

    def _location(self, r: Any) -> str:
        loc = r.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry {self.ep.host} started an upload without a Location")
        return urljoin(self.ep.base + "/", loc)

    def exists(self, digest: str) -> bool:
        r = self._req("HEAD", f"/v2/{self.repo}/blobs/{digest}", what="blob", ref=digest, ok=(200, 404))
        with r:
            return r.status_code == 200

    def start(self) -> str:
        r = self._req("POST", f"/v2/{self.repo}/blobs/uploads/", what="upload", ref="", ok=(202,),
                      headers={"Content-Length": "0"})
        with r:
            return self._location(r)

    def mount(self, digest: str, source_repo: str) -> bool | str:
        """True when mounted; else the upload URL the registry opened instead."""
        scope = f"{self.scope} repository:{source_repo}:pull"
        r = self._req("POST", f"/v2/{self.repo}/blobs/uploads/", scope=scope, what="blob", ref=digest,
                      ok=(201, 202), params={"mount": digest, "from": source_repo}, headers={"Content-Length": "0"})
        with r:
            if r.status_code == 201:
                return True
            return self._location(r)

    @staticmethod
    def _with_digest(url: str, digest: str) -> str:
        return url + ("&" if "?" in url else "?") + "digest=" + quote(digest, safe="")

    def upload(self, digest: str, size: int, f: Any, location: str | None = None) -> None:
        url = location or self.start()
        if size <= CHUNK:
            data = f.read()
            if len(data) != size:
                raise RegistryError(f"blob {digest[:19]}: read {len(data)} bytes, expected {size}")
            r = self._req("PUT", self._with_digest(url, digest), what="blob", ref=digest, ok=(201, 204),
                          data=data, headers={"Content-Type": "application/octet-stream"})
            r.close()
            return
        offset = 0
        while offset < size:
            chunk = f.read(min(CHUNK, size - offset))
            if not chunk:
                raise RegistryError(f"blob {digest[:19]}: the stored file ended at {offset} of {size} bytes")
            url, offset = self._patch(url, chunk, offset, f)
        r = self._req("PUT", self._with_digest(url, digest), what="blob", ref=digest, ok=(201, 204),
                      headers={"Content-Length": "0"})
        r.close()

    def _patch(self, url: str, chunk: bytes, offset: int, f: Any) -> tuple[str, int]:
        """PATCH one chunk at `offset`; (next upload URL, next offset). One resume on failure."""
        for attempt in (1, 2):
            end = offset + len(chunk) - 1
            try:
                r = self._req("PATCH", url, what="upload", ref="", ok=(202,), data=chunk,
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))})
            except (RegistryError, OSError):
                if attempt == 2:
                    raise
                have = self._status(url)
                if have is None or have > end + 1 or have < offset:
                    raise
                # the registry has `have` bytes: send the rest of this chunk from there
                chunk, offset = chunk[have - offset:], have
                if not chunk:
                    return url, offset
                continue
            with r:
                return self._location(r), end + 1
        raise AssertionError("unreachable")     # pragma: no cover

    def _status(self, url: str) -> int | None:
        """How many bytes an upload holds (GET on its URL: Range 0-N), or None."""
        try:
            r = self._req("GET", url, what="upload", ref="", ok=(204, 200))
        except (RegistryError, OSError):
            return None
        with r:
            rng = r.headers.get("Range", "")
            if "-" in rng:
                try:
                    return int(rng.rsplit("-", 1)[1]) + 1
                except ValueError:
                    return None
        return None

    def put_manifest(self, ref: str, raw: bytes, media_type: str) -> str | None:
        r = self._req("PUT", f"/v2/{self.repo}/manifests/{ref}", what="manifest", ref=ref, ok=(200, 201),
                      data=raw, headers={"Content-Type": media_type})
        with r:
            return r.headers.get("Docker-Content-Digest")
