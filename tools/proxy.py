"""A fault-injecting, request-recording HTTP proxy for registry tests (stdlib only).

It listens on 127.0.0.1:<free port> and forwards every request to `target` (HOST:PORT, usually the test
registry), keeping the Host header the client sent. Faults are keyed by a regex searched in the request
path (the query string excluded) and apply to the first `count` matching requests (count=None: all),
then requests pass through again:

    p = FaultProxy(registry.host).start()          # or the `proxy` fixture: proxy() / proxy(target)
    p.fail(r"/blobs/", status=503, count=2)        # status N with a JSON error body (not forwarded)
    p.fail(r"/manifests/", status=429, retry_after=1)
    p.reset(r"/blobs/sha256:ab", after=1000)       # send 1000 body bytes, then TCP RST
    p.truncate(r"/blobs/", after=1000)             # send 1000 body bytes, then a clean close (FIN);
                                                   #   consistent_length=True: Content-Length 1000 instead
    p.corrupt(r"/blobs/", offset=None, nbytes=1)   # flip byte(s) (default: the middle), same length
    p.stall(r"/blobs/", seconds=5, after=0)        # sleep before the headers (after=None) or after N body bytes
    p.throttle(r"/blobs/", rate=200_000)           # bodies at ~200 kB/s (count=None: every request)
    p.redirect(r"/blobs/", to=other.host, status=307)   # Location: http://<to><path>?<query>
    p.content_type(r"/manifests/", "text/html")    # replace the Content-Type header
    p.huge(r"/manifests/", size=64 << 20)          # 200 with `size` junk bytes (Content-Length unless
                                                   #   declare_length=False: then close-delimited)
    p.replace(r"/manifests/", status=200, body=b"...", headers={...})   # any canned answer
    p.clear()                                      # remove all faults

Body faults (reset, truncate, corrupt, huge, throttle, stall with after=) match GET only unless `methods=` says
otherwise; the others match every method. Every call returns the Fault (fault.hits counts uses).

Recording: p.log -> [Record(method, path, query, headers (lower-case keys), status, fault, sent)],
p.count(pattern=None, method=None) -> int, p.headers(pattern) -> [headers dict, ...], p.paths() -> Counter.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "proxy-connection"}
CHUNK = 64 * 1024


@dataclass
class Fault:
    pattern: str
    kind: str
    count: int | None = 1
    methods: tuple[str, ...] | None = None
    params: dict = field(default_factory=dict)
    hits: int = 0

    def __post_init__(self):
        self.regex = re.compile(self.pattern)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return bool(self.regex.search(path))


@dataclass
class Record:
    method: str
    path: str
    query: str
    headers: dict            # lower-case header name -> value (last one wins)
    status: int | None = None
    fault: str | None = None
    sent: int = 0            # body bytes sent to the client
    time: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # clients hang up on purpose in these tests
        pass


class FaultProxy:
    def __init__(self, target: str, *, name: str = "proxy", timeout: float = 60.0):
        self.target = target
        self.name = name
        self.timeout = timeout
        self.faults: list[Fault] = []
        self.log: list[Record] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            pass
        Handler.proxy = proxy
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------------------
    def add(self, pattern: str, kind: str, *, count: int | None = 1, methods=None, **params) -> Fault:
        f = Fault(pattern, kind, count, tuple(m.upper() for m in methods) if methods else None, params)
        with self._lock:
            self.faults.append(f)
        return f

    def fail(self, pattern, status=500, *, retry_after=None, body=None, count=1, methods=None) -> Fault:
        return self.add(pattern, "status", count=count, methods=methods, status=status, retry_after=retry_after,
                        body=body)

    def reset(self, pattern, after=0, *, count=1, methods=("GET",)) -> Fault:
        return self.add(pattern, "reset", count=count, methods=methods, after=after)

    def truncate(self, pattern, after=0, *, consistent_length=False, count=1, methods=("GET",)) -> Fault:
        return self.add(pattern, "truncate", count=count, methods=methods, after=after,
                        consistent_length=consistent_length)

    def corrupt(self, pattern, offset=None, nbytes=1, *, count=1, methods=("GET",)) -> Fault:
        return self.add(pattern, "corrupt", count=count, methods=methods, offset=offset, nbytes=nbytes)

    def stall(self, pattern, seconds, *, after=None, count=1, methods=None) -> Fault:
        if after is not None and methods is None:
            methods = ("GET",)
        return self.add(pattern, "stall", count=count, methods=methods, seconds=seconds, after=after)

    def throttle(self, pattern, rate, *, count=None, methods=("GET",)) -> Fault:
        """Send bodies at about `rate` bytes/s (default: every matching request), e.g. to kill a pull midway."""
        return self.add(pattern, "throttle", count=count, methods=methods, rate=rate)

    def redirect(self, pattern, to, *, status=307, count=1, methods=None) -> Fault:
        return self.add(pattern, "redirect", count=count, methods=methods, to=to, status=status)

    def content_type(self, pattern, ctype, *, count=1, methods=None) -> Fault:
        return self.add(pattern, "content_type", count=count, methods=methods, ctype=ctype)

    def huge(self, pattern, size=64 << 20, *, content_type=None, declare_length=True, count=1,
             methods=("GET",)) -> Fault:
        return self.add(pattern, "huge", count=count, methods=methods, size=size, ctype=content_type,
                        declare_length=declare_length)

    def replace(self, pattern, *, status=200, body=b"", headers=None, count=1, methods=None) -> Fault:
        return self.add(pattern, "replace", count=count, methods=methods, status=status,
                        body=body.encode() if isinstance(body, str) else body, headers=dict(headers or {}))

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, path):
                    f.hits += 1
                    return f
        return None

    # -- recording --------------------------------------------------------------------------------------
    def count(self, pattern: str | None = None, method: str | None = None) -> int:
        rx = re.compile(pattern) if pattern else None
        with self._lock:
            return sum(1 for r in self.log if (rx is None or rx.search(r.path)) and
                       (method is None or r.method == method.upper()))

    def headers(self, pattern: str | None = None) -> list[dict]:
        rx = re.compile(pattern) if pattern else None
        with self._lock:
            return [r.headers for r in self.log if rx is None or rx.search(r.path)]

    def paths(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(f"{r.method} {r.path}" for r in self.log)

    def records(self, pattern: str | None = None) -> list[Record]:
        rx = re.compile(pattern) if pattern else None
        with self._lock:
            return [r for r in self.log if rx is None or rx.search(r.path)]

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass made in start()

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- helpers ----------------------------------------------------------------------------------------
    def _read_request_body(self) -> bytes | None:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = self.headers.get("Content-Length")
        if n is not None:
            return self.rfile.read(int(n))
        return None

    def _send_head(self, status: int, headers: list[tuple[str, str]], rec: Record) -> None:
        rec.status = status
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _write(self, data: bytes, rec: Record) -> None:
        if data:
            self.wfile.write(data)
            rec.sent += len(data)

    def _abort_rst(self) -> None:
        """Close the client connection with a TCP reset."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        sock.close()
        try:
            self.rfile.close()
        except OSError:
            pass

    def _sleep(self, seconds: float) -> None:
        self.proxy._stopping.wait(seconds)

    def _simple(self, status: int, body: bytes, headers: list[tuple[str, str]], rec: Record) -> None:
        headers = [h for h in headers if h[0].lower() != "content-length"] + [("Content-Length", str(len(body)))]
        self._send_head(status, headers, rec)
        if self.command != "HEAD":
            self._write(body, rec)

    # -- the request --------------------------------------------------------------------------------------
    def _handle(self) -> None:
        p = self.proxy
        path, _, query = self.path.partition("?")
        rec = Record(self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, time=time.time())
        with p._lock:
            p.log.append(rec)
        body = self._read_request_body()
        fault = p._take_fault(self.command, path)
        if fault:
            rec.fault = fault.kind
        k = fault.kind if fault else None
        fp = fault.params if fault else {}
        try:
            if k == "status":
                st = fp["status"]
                b = fp.get("body")
                if b is None:
                    code = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN"}.get(
                        st, "UNKNOWN")
                    b = json.dumps({"errors": [{"code": code, "message": f"injected {st}"}]}).encode()
                elif isinstance(b, str):
                    b = b.encode()
                hdrs = [("Content-Type", "application/json")]
                if fp.get("retry_after") is not None:
                    hdrs.append(("Retry-After", str(fp["retry_after"])))
                self._simple(st, b, hdrs, rec)
                return
            if k == "redirect":
                loc = f"http://{fp['to']}{path}" + (f"?{query}" if query else "")
                self._simple(fp["status"], b"", [("Location", loc)], rec)
                return
            if k == "replace":
                self._simple(fp["status"], fp["body"], list(fp["headers"].items()), rec)
                return
            if k == "huge":
                self._huge(fp, rec)
                return
            if k == "stall" and fp.get("after") is None:
                self._sleep(fp["seconds"])
            self._forward(body, rec, k, fp)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _huge(self, fp: dict, rec: Record) -> None:
        size = fp["size"]
        hdrs = [("Content-Type", fp.get("ctype") or "application/vnd.oci.image.manifest.v1+json")]
        if fp.get("declare_length", True):
            hdrs.append(("Content-Length", str(size)))
        else:
            hdrs.append(("Connection", "close"))
            self.close_connection = True
        self._send_head(200, hdrs, rec)
        if self.command == "HEAD":
            return
        chunk = (b'{"junk":"' + b"A" * (CHUNK - 20) + b'"},\n')[:CHUNK]
        left = size
        while left > 0 and not self.proxy._stopping.is_set():
            part = chunk[:min(left, CHUNK)]
            self._write(part, rec)
            left -= len(part)

    def _forward(self, body: bytes | None, rec: Record, kind: str | None, fp: dict) -> None:
        p = self.proxy
        try:
            conn = http.client.HTTPConnection(p.target, timeout=p.timeout)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for hk, hv in self.headers.items():
                if hk.lower() in HOP_BY_HOP or hk.lower() == "content-length":
                    continue
                conn.putheader(hk, hv)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
        except OSError as e:
            self._simple(502, json.dumps({"errors": [{"code": "UNKNOWN", "message": f"proxy: upstream {e}"}]})
                         .encode(), [("Content-Type", "application/json")], rec)
            return
        try:
            headers = [(hk, hv) for hk, hv in resp.getheaders() if hk.lower() not in HOP_BY_HOP]
            length = resp.getheader("Content-Length")
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            if length is None and not no_body:
                data = resp.read()
                length = str(len(data))
                headers = [h for h in headers if h[0].lower() != "content-length"] + [("Content-Length", length)]
                src = _BytesSource(data)
            else:
                src = resp
            total = int(length) if length is not None else 0
            if kind == "content_type":
                headers = [h for h in headers if h[0].lower() != "content-type"] + [("Content-Type", fp["ctype"])]
            if kind == "truncate" and fp.get("consistent_length"):
                headers = [h for h in headers if h[0].lower() != "content-length"] + [
                    ("Content-Length", str(min(fp["after"], total)))]
            self._send_head(resp.status, headers, rec)
            if no_body:
                return
            self._pump(src, total, rec, kind, fp)
        finally:
            conn.close()

    def _pump(self, src, total: int, rec: Record, kind: str | None, fp: dict) -> None:
        """Copy the upstream body to the client, applying a body fault."""
        limit = fp.get("after") if kind in ("reset", "truncate") else None
        stall_at = fp.get("after") if kind == "stall" else None
        corrupt_at = None
        if kind == "corrupt":
            corrupt_at = fp.get("offset")
            if corrupt_at is None:
                corrupt_at = total // 2
        pos = 0
        rate = fp.get("rate") if kind == "throttle" else None
        step = max(1024, min(CHUNK, int(rate / 20))) if rate else CHUNK
        while True:
            want = step
            if limit is not None:
                want = min(want, limit - pos)
            if stall_at is not None and pos < stall_at:
                want = min(want, stall_at - pos)
            if want <= 0 and limit is not None:
                break
            if stall_at is not None and pos == stall_at:
                self.wfile.flush()
                self._sleep(fp["seconds"])
                stall_at = None
                continue
            data = src.read(want)
            if not data:
                break
            if corrupt_at is not None and pos <= corrupt_at < pos + len(data):
                buf = bytearray(data)
                for i in range(corrupt_at - pos, min(len(buf), corrupt_at - pos + fp.get("nbytes", 1))):
                    buf[i] ^= 0xFF
                data = bytes(buf)
                # a corruption that straddles a chunk boundary continues in the next chunk
                extra = corrupt_at + fp.get("nbytes", 1) - (pos + len(data))
                if extra > 0:
                    fp = dict(fp, nbytes=extra)
                    corrupt_at = pos + len(data)
                else:
                    corrupt_at = None
            self._write(data, rec)
            pos += len(data)
            if rate:
                self.wfile.flush()
                self._sleep(len(data) / rate)
        if kind == "reset":
            self._abort_rst()
        elif kind == "truncate" and not fp.get("consistent_length"):
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BytesSource:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Forwarding proxy with injectable faults (for manual experiments).")
    ap.add_argument("target", help="HOST:PORT to forward to")
    args = ap.parse_args(argv)
    with FaultProxy(args.target) as p:
        print(p.host, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
