"""A forward HTTP proxy for tests of HTTP(S)_PROXY (stdlib only): what a corporate proxy does.

    p = ForwardProxy(auth=("u", "pw")).start()     # 407 without that Proxy-Authorization (Basic)
    env = {"HTTP_PROXY": p.url_with("u", "pw"), "HTTPS_PROXY": ...}
    p.log -> [(method, target), ...]               # ("GET", "http://127.0.0.1:5000/v2/"), ("CONNECT", "h:443")
    p.stop()

Plain-HTTP requests come with an absolute URL and are relayed with http.client; CONNECT opens a
TCP tunnel and copies bytes both ways (TLS goes through untouched).
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "proxy-connection"}


class ForwardProxy:
    def __init__(self, auth: tuple[str, str] | None = None):
        self.auth = auth
        self.log: list[tuple[str, str]] = []
        self._srv: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._srv is not None
        return f"http://127.0.0.1:{self._srv.server_address[1]}"

    def url_with(self, user: str, password: str) -> str:
        return self.url.replace("http://", f"http://{user}:{password}@")

    def start(self) -> "ForwardProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _authorized(self) -> bool:
                if proxy.auth is None:
                    return True
                want = "Basic " + base64.b64encode(f"{proxy.auth[0]}:{proxy.auth[1]}".encode()).decode()
                if self.headers.get("Proxy-Authorization") == want:
                    return True
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self):
                proxy.log.append(("CONNECT", self.path))
                if not self._authorized():
                    return
                host, _, port = self.path.rpartition(":")
                try:
                    up = socket.create_connection((host, int(port)), timeout=10)
                except OSError:
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                socks = [self.connection, up]
                try:
                    while True:
                        ready, _, _ = select.select(socks, [], [], 30)
                        if not ready:
                            return
                        for s in ready:
                            data = s.recv(65536)
                            if not data:
                                return
                            (up if s is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    up.close()

            def _relay(self):
                proxy.log.append((self.command, self.path))
                if not self._authorized():
                    return
                p = urlsplit(self.path)
                if p.scheme != "http" or not p.netloc:
                    self.send_error(400, "absolute http URL expected")
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                up = http.client.HTTPConnection(p.netloc, timeout=30)
                try:
                    up.request(self.command, (p.path or "/") + (f"?{p.query}" if p.query else ""), body=body,
                               headers=hdrs)
                    r = up.getresponse()
                    self.send_response(r.status, r.reason)
                    length = r.getheader("Content-Length")
                    for k, v in r.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    if length is None:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if self.command != "HEAD":
                        while chunk := r.read(65536):
                            self.wfile.write(chunk)
                except OSError:
                    self.close_connection = True
                finally:
                    up.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
