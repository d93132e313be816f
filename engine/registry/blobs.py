"""The bytes of one blob on their way from a registry to the layer pipeline.

    src = BlobSource(client, repo, desc, ingest, cancel=event, listener=listener)
    stream = HashingReader(open_layer_stream(src, desc.media_type))   # diff_id of the tar

BlobSource first re-reads what an earlier, interrupted pull left in the ingest (a resume), then
continues from the network with Range, writing every network byte to the Ingest; it reconnects
with Range after resets and truncation (CONTAINER_PULL_RECONNECTS times, backing off like the
client) and copes with a registry that ignores Range. A foreign layer (descriptor urls) is fetched
from its urls only when the config allows it: https only, no registry credentials, and never a
loopback/private address unless foreign_layers_allow_private. Counting reads a blob that is
already stored; both report bytes through the pull's listener and stop when `cancel` is set.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
from urllib.parse import urljoin, urlsplit

from container.engine.errors import RegistryError, RegistryUnavailable, StoreError
from container.engine.image.manifest import Descriptor
from container.engine.progress import PullListener
from container.engine.tunables import env_number

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from container.engine.registry.http import Response

CHUNK = 1 << 20
MAX_RECONNECTS = env_number("CONTAINER_PULL_RECONNECTS", 8, int, minimum=0)


class Cancelled(Exception):
    """Another layer failed or the user interrupted: stop this one."""


class BlobSource(io.RawIOBase):
    """The compressed bytes of one blob for the decompressor: first what a previous run left in
    ingest/<hex>/data, then the network (Range from there), every network byte also written to the
    Ingest. Reconnects with Range on resets/truncation; stops at the descriptor size.
    `foreign`: try the descriptor's urls first (the config allows foreign layers for this registry);
    `foreign_private`: ... even when they point at a private or loopback address."""

    def __init__(self, client, repo: str, desc: Descriptor, ing, *, cancel: threading.Event,
                 listener: PullListener, foreign: bool = False, foreign_private: bool = False):
        super().__init__()
        self.client, self.repo, self.desc, self.ing = client, repo, desc, ing
        self.cancel, self.listener = cancel, listener
        self.foreign, self.foreign_private = foreign, foreign_private
        self.total = desc.size
        self.pos = 0
        self.disk_end = ing.offset
        self.disk = open(ing.data_path, "rb") if ing.offset else None
        self.resp: Response | None = None
        self.error: BaseException | None = None
        self.failures = 0
        self.net_bytes = 0
        if ing.offset:
            listener.info(f"{desc.digest[7:19]}: resuming at {ing.offset} of {self.total} bytes")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, n: int = -1) -> bytes:
        try:
            return self._read(CHUNK if n is None or n < 0 else n)
        except BaseException as e:
            self.error = e
            raise

    def _read(self, n: int) -> bytes:
        if self.cancel.is_set():
            raise Cancelled()
        if self.pos < self.disk_end:
            assert self.disk is not None                # opened in __init__ whenever disk_end > 0
            data = self.disk.read(min(n, self.disk_end - self.pos))
            if not data:
                raise StoreError(f"partial download of {self.desc.digest} shrank while reading it")
            self.pos += len(data)
            self.listener.advance(self.desc.digest, len(data))
            return data
        if self.disk is not None:
            self.disk.close()
            self.disk = None
        if self.pos >= self.total:
            return b""
        while True:
            if self.cancel.is_set():
                raise Cancelled()
            if self.resp is None:
                if not self._open():
                    return b""
                assert self.resp is not None            # _open() set it
            try:
                data = self.resp.read(min(n, CHUNK, self.total - self.pos))
            except OSError as e:
                self._failed(str(e) or type(e).__name__)
                continue
            if not data:
                self._failed("connection closed before the end of the blob")
                continue
            self.ing.write(data)
            self.pos += len(data)
            self.net_bytes += len(data)
            self.failures = 0
            self.listener.advance(self.desc.digest, len(data))
            return data

    def _failed(self, why: str) -> None:
        self._close_resp()
        if self.cancel.is_set():
            raise Cancelled()
        self.failures += 1
        if self.failures > MAX_RECONNECTS:
            raise RegistryUnavailable(f"downloading {self.desc.digest[:19]}: {why} (gave up after "
                                      f"{MAX_RECONNECTS} attempts; run the pull again to resume)")
        self.client.backoff(self.failures, None, f"blob {self.desc.digest[7:19]} at byte {self.pos}: {why}")

    def _open(self) -> bool:
        """A response positioned at self.pos. False when there is nothing left to read."""
        d = self.desc
        resp = None
        if d.urls and self.foreign:
            resp = open_foreign(d.urls, self.pos, allow_private=self.foreign_private, log=self.listener.info)
        if resp is None:
            resp = self.client.get_blob(self.repo, d.digest, offset=self.pos)
        st = resp.status_code
        if st == 416:
            resp.close()
            if self.pos >= self.total:
                return False
            raise RegistryError(f"registry refused the range {self.pos}- of {d.digest[:19]}")
        if st == 206:
            cr = resp.headers.get("Content-Range", "")
            if not cr.startswith(f"bytes {self.pos}-"):
                resp.close()
                raise RegistryError(f"registry sent the wrong range ({cr!r}) for {d.digest[:19]}")
        elif st == 200 and self.pos:
            # Range ignored: skip what we already have (the hash already covers it).
            left = self.pos
            while left:
                chunk = resp.read(min(CHUNK, left))
                if not chunk:
                    resp.close()
                    raise RegistryUnavailable(f"blob {d.digest[:19]} ended early")
                left -= len(chunk)
        self.resp = resp
        return True

    def abort(self) -> None:
        """From another thread: wake a read blocked on the socket (Ctrl-C, another layer failed)."""
        resp = self.resp
        if resp is not None:
            resp.abort()

    def _close_resp(self) -> None:
        if self.resp is not None:
            try:
                self.resp.close()
            except Exception:
                pass
            self.resp = None

    def close(self) -> None:
        self._close_resp()
        if self.disk is not None:
            self.disk.close()
            self.disk = None
        super().close()


class Counting(io.RawIOBase):
    """A stored blob read for unpacking, reporting progress."""

    def __init__(self, f, digest: str, *, cancel: threading.Event, listener: PullListener):
        super().__init__()
        self.f, self.digest = f, digest
        self.cancel, self.listener = cancel, listener
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            self.error = Cancelled()
            raise self.error
        data = self.f.read(CHUNK if n is None or n < 0 else n)
        self.listener.advance(self.digest, len(data))
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def is_private_host(host: str) -> bool:
    """Any address of `host` is loopback, private, link-local, reserved, multicast or unspecified
    (or it does not resolve): a foreign-layer url must not make us fetch from there."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])  # type: ignore[union-attr]  # a host's addresses are inet ones: str
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast \
                or ip.is_unspecified:
            return True
    return False


def open_foreign(urls, offset: int, *, allow_private: bool, log):
    """A response for the first of a foreign layer's `urls` that serves it (from `offset`), or None.
    https only, no registry credentials, redirects followed by hand (5 hops) so every hop is checked,
    no private or loopback targets unless allow_private; each refusal is logged."""
    from container.engine.registry.http import Session

    session = Session()

    for url in urls:
        hops = 0
        while hops < 5:
            p = urlsplit(url)
            if p.scheme != "https":
                log(f"foreign layer url {url!r} refused: https only")
                break
            if is_private_host(p.hostname or "") and not allow_private:
                log(f"foreign layer url {url!r} refused: private or loopback address")
                break
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                r = session.request("GET", url, headers=headers, allow_redirects=False, timeout=(15, 60))
            except OSError as e:
                log(f"foreign layer url {url!r}: {e}")
                break
            if r.is_redirect and r.headers.get("Location"):
                url = urljoin(url, r.headers["Location"])
                r.close()
                hops += 1
                continue
            if r.status_code in (200, 206):
                return r
            r.close()
            break
    return None
