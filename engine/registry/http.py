"""HTTP/1.1 for the registry client, on the standard library's http.client.

    session = Session()
    with session.request("GET", url, headers={...}, timeout=(15, 60)) as r:
        r.status_code, r.headers.get("Docker-Content-Digest"), r.read(65536), r.json()

What the registry client needs and no more (requests did the same for ~50 ms of import per
command): keep-alive connections pooled per (scheme, host, port, proxy) and shared by threads;
a connect timeout and a read timeout (seconds without a byte); redirects (30 at most; 303, and
301/302 of a POST, become GET; Authorization and Proxy-Authorization are dropped when the host,
scheme or port changes, as requests does for a blob redirected to a CDN); TLS verified against
the system's CA store (SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE honoured),
or not verified at all for an insecure endpoint; the HTTP(S)_PROXY / ALL_PROXY / NO_PROXY
environment (https through CONNECT). Bodies are asked for with Accept-Encoding: identity; a gzip
or deflate body is decoded by read(decode=True). Failures are the exceptions below, all of them
OSError: ConnectFailed (before a response: refused, reset, no such host, a broken status line),
Timeout, TLSError, TooManyRedirects, ProxyRefused (CONNECT refused), BadRequest (a URL or header
we cannot send).
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

MAX_REDIRECTS = 30
MAX_IDLE = 16                 # idle connections kept per pool key
MAX_JSON = 4 << 20            # json() reads at most this much (a registry's error body, a token)
DRAIN, DRAIN_WAIT = 65536, 0.5   # close() reads an unread body this small, waiting this long at most
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HTTPError(OSError):
    """A request that did not get a usable response."""


class ConnectFailed(HTTPError):
    """No response: connection refused or reset, no such host, the server closed or sent junk."""


class Timeout(HTTPError):
    pass


class TLSError(HTTPError):
    pass


class TooManyRedirects(HTTPError):
    pass


class ProxyRefused(HTTPError):
    """The proxy would not open a tunnel (CONNECT answered 407, 403, 502...)."""


class BadRequest(HTTPError):
    """A URL, header or proxy setting we cannot send (often from a hostile registry's redirect or realm)."""


class Headers(dict):
    """Response headers: case-insensitive get/[]/in; repeated headers joined with ', ' (as requests)."""

    def __init__(self, items):
        super().__init__()
        for k, v in items:
            k = k.lower()
            dict.__setitem__(self, k, f"{dict.__getitem__(self, k)}, {v}" if k in self else v)

    def __getitem__(self, k):
        return dict.__getitem__(self, k.lower())

    def __contains__(self, k):
        return isinstance(k, str) and dict.__contains__(self, k.lower())

    def get(self, k, default=None):
        return dict.get(self, k.lower(), default)


class Response:
    """One response. read(n) streams the body; close() (or the with-block) hands the connection
    back to its pool when the body was read to the end, else closes it."""

    def __init__(self, pool: _Pool, key: tuple, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, method: str, url: str):
        self._pool, self._key, self._conn = pool, key, conn
        self._resp: http.client.HTTPResponse | None = resp
        self.method, self.url = method, url
        self.status_code = resp.status
        self.headers = Headers(resp.getheaders())
        self._decoder: Any = None

    @property
    def is_redirect(self) -> bool:
        return self.status_code in REDIRECTS and "location" in self.headers

    def read(self, n: int = -1, *, decode: bool = False) -> bytes:
        """Up to n bytes of the body (b"" at its end). decode: undo a gzip/deflate Content-Encoding
        (the caller caps what it keeps)."""
        if self._resp is None:
            return b""
        try:
            data = self._resp.read(n if n >= 0 else None)
        except socket.timeout:
            raise Timeout("timed out reading the response") from None
        except http.client.HTTPException as e:
            raise ConnectFailed(f"reading the response: {type(e).__name__}: {e}") from None
        if decode and data:
            enc = self.headers.get("content-encoding", "").strip().lower()
            if enc in ("gzip", "x-gzip", "deflate"):
                if self._decoder is None:
                    import zlib
                    self._decoder = zlib.decompressobj(47 if enc != "deflate" else 15)
                try:
                    data = self._decoder.decompress(data, 1 << 20) + self._decoder.unconsumed_tail
                except Exception as e:       # zlib.error
                    raise ConnectFailed(f"bad {enc} body: {e}") from None
        return data

    def json(self):
        """The body as JSON; ValueError when it is not JSON or larger than MAX_JSON."""
        import json

        buf = bytearray()
        while len(buf) <= MAX_JSON:
            chunk = self.read(65536, decode=True)
            if not chunk:
                return json.loads(bytes(buf))
            buf += chunk
        raise ValueError("response body too large for JSON")

    def abort(self) -> None:
        """From another thread: wake a read blocked on the socket."""
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        done = resp.isclosed()
        if not done and resp.length is not None and resp.length <= DRAIN:
            # a small unread body (a 401, a redirect): read it and keep the connection, but never
            # wait long for a body the server announced and does not send
            try:
                if resp.length and self._conn.sock is not None:
                    self._conn.sock.settimeout(DRAIN_WAIT)
                resp.read()
                done = True
            except (OSError, http.client.HTTPException):
                pass
        if done and not resp.will_close:
            self._pool.put(self._key, self._conn)
        else:
            resp.close()
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Pool:
    def __init__(self):
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> http.client.HTTPConnection | None:
        with self._lock:
            conns = self._idle.get(key)
            while conns:
                conn = conns.pop()
                if not _dropped(conn):
                    return conn
                conn.close()
        return None

    def put(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < MAX_IDLE:
                conns.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server has closed (readable means EOF or junk)."""
    import select

    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


_contexts: dict[bool, object] = {}


def _tls_context(verify: bool):
    import ssl

    ctx = _contexts.get(verify)
    if ctx is None:
        if verify:
            ctx = ssl.create_default_context()
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                ctx.load_verify_locations(cafile=bundle)
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        _contexts[verify] = ctx
    return ctx


def _proxy_for(scheme: str, host: str, port: int) -> str | None:
    """The proxy URL the environment gives for this target, or None (NO_PROXY, or none set)."""
    env = os.environ
    url = (env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
           or env.get("all_proxy") or env.get("ALL_PROXY"))
    if not url:
        return None
    no = env.get("no_proxy") or env.get("NO_PROXY") or ""
    h = host.lower().strip("[]")
    for item in (x.strip().lower() for x in no.split(",")):
        if not item:
            continue
        if item == "*":
            return None
        name, _, iport = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if iport and iport != str(port):
            continue
        name = name.lstrip(".").strip("[]")
        if h == name or h.endswith("." + name) or _in_cidr(h, name):
            return None
    return url if "://" in url else "http://" + url


def _in_cidr(host: str, spec: str) -> bool:
    if "/" not in spec:
        return False
    import ipaddress
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(spec, strict=False)
    except ValueError:
        return False


class Session:
    """Pooled connections and default headers; request() is the one call."""

    def __init__(self):
        self.headers: dict[str, str] = {}
        self._pool = _Pool()

    def close(self) -> None:
        self._pool.close()

    def request(self, method: str, url: str, *, headers: dict | None = None, data=None, params=None,
                stream: bool = True, allow_redirects: bool = True, timeout=(15.0, 60.0),
                verify: bool = True) -> Response:
        """Send; follow redirects (unless allow_redirects is false). `data`: bytes, or a dict sent
        form-encoded. `stream` is accepted for the callers' sake: a body is always read on demand."""
        del stream
        if params:
            url = url + ("&" if "?" in url else "?") + urlencode(params)
        hdrs = {**self.headers, "Accept-Encoding": "identity", **(headers or {})}
        if isinstance(data, dict):
            data = urlencode(data).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        for _ in range(MAX_REDIRECTS + 1):
            r = self._send(method, url, hdrs, data, timeout, verify)
            if not (allow_redirects and r.is_redirect):
                return r
            r.close()
            new = urljoin(url, r.headers["location"]).split("#", 1)[0]
            if r.status_code == 303 and method != "HEAD" or r.status_code in (301, 302) and method == "POST":
                method, data = "GET", None
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in ("content-type", "content-length")}
            if _origin(new) != _origin(url):
                hdrs = {k: v for k, v in hdrs.items() if k.lower() not in ("authorization", "proxy-authorization")}
            url = new
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def _send(self, method: str, url: str, hdrs: dict, data, timeout, verify: bool) -> Response:
        try:
            p = urlsplit(url)
            port = p.port
        except ValueError as e:
            raise BadRequest(f"invalid URL {url[:100]!r}: {e}") from None
        scheme, host = p.scheme.lower(), p.hostname
        if scheme not in ("http", "https") or not host:
            raise BadRequest(f"invalid URL {url[:100]!r}")
        port = port or (443 if scheme == "https" else 80)
        proxy = _proxy_for(scheme, host, port)
        key = (scheme, host, port, proxy, verify)
        target = p.path or "/"
        if p.query:
            target += "?" + p.query
        if proxy and scheme == "http":
            target = f"http://{p.netloc.rpartition('@')[2]}{target}"
            hdrs = {**hdrs, **_proxy_auth(proxy)}
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        for fresh in (False, True):
            conn = None if fresh else self._pool.get(key)
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect(scheme, host, port, proxy, verify, connect)
                conn.sock.settimeout(read)
                conn.request(method, target, body=data, headers=hdrs)
                resp = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as e:
                if conn is not None:
                    conn.close()
                if reused and method in ("GET", "HEAD", "PUT", "DELETE"):
                    continue            # a pooled connection the server closed meanwhile: once more, anew
                raise ConnectFailed(_reason(e)) from None
            except (socket.timeout, TimeoutError):
                if conn is not None:
                    conn.close()
                raise Timeout("timed out") from None
            except HTTPError:
                raise
            except OSError as e:
                if conn is not None:
                    conn.close()
                if _is_tls(e):
                    raise TLSError(str(e)) from None
                if proxy and str(e).startswith("Tunnel connection failed"):
                    raise ProxyRefused(f"proxy {_no_password(proxy)}: {str(e)[26:].strip()}") from None
                raise ConnectFailed(_reason(e)) from None
            except http.client.HTTPException as e:     # LineTooLong, too many headers, ...
                if conn is not None:
                    conn.close()
                raise ConnectFailed(f"bad response: {type(e).__name__}: {str(e)[:100]}") from None
            except (ValueError, UnicodeError) as e:      # InvalidURL, a header with a newline, ...
                if conn is not None:
                    conn.close()
                raise BadRequest(str(e)[:160]) from None
            return Response(self._pool, key, conn, resp, method, url)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _connect(scheme: str, host: str, port: int, proxy: str | None, verify: bool,
                 timeout: float) -> http.client.HTTPConnection:
        thost, tport = _proxy_address(proxy) if proxy else (host, port)
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                thost, tport, timeout=timeout, context=_tls_context(verify))
            if proxy:
                conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
        else:
            conn = http.client.HTTPConnection(thost, tport, timeout=timeout)
        conn.connect()
        return conn


def _proxy_address(proxy: str) -> tuple[str, int]:
    try:
        pp = urlsplit(proxy)
        if pp.scheme == "http" and pp.hostname:
            return pp.hostname, pp.port or 80
    except ValueError:
        pass
    raise BadRequest(f"unsupported proxy {_no_password(proxy)!r} (http:// proxies only)")


def _proxy_auth(proxy: str) -> dict:
    """Proxy-Authorization (Basic) from the proxy URL's user:password, or nothing."""
    pp = urlsplit(proxy)
    if pp.username is None:
        return {}
    import base64
    from urllib.parse import unquote
    cred = f"{unquote(pp.username)}:{unquote(pp.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(cred).decode()}


def _no_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split(':', 2)[0]}:{head.split(':', 2)[1]}:***@{tail}" if at and head.count(":") >= 2 else url


def _origin(url: str) -> tuple:
    try:
        p = urlsplit(url)
        return p.scheme.lower(), (p.hostname or "").lower(), p.port or (443 if p.scheme.lower() == "https" else 80)
    except ValueError:
        return (url,)


def _is_tls(e: OSError) -> bool:
    import ssl
    return isinstance(e, ssl.SSLError) or isinstance(e, ssl.CertificateError)


def _reason(e: BaseException) -> str:
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(e, http.client.BadStatusLine):
        return "the server sent a bad status line"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(e, socket.gaierror):
        return "no such host"
    s = str(e)
    for key, text in (("Network is unreachable", "network is unreachable"), ("timed out", "timed out"),
                      ("No route to host", "no route to host")):
        if key in s:
            return text
    return s[:160] or type(e).__name__
