"""Run a real `docker-registry` (CNCF distribution 2.8, Debian package) on loopback for tests and the demo.

    with Registry(storage_dir) as reg:          # free port on 127.0.0.1, filesystem storage, delete enabled
        reg.host      -> "127.0.0.1:PORT"
        reg.url       -> "http://127.0.0.1:PORT"
        reg.requests() -> [AccessEntry(method, path, status, query, size, user_agent), ...]
        reg.blob_gets("sha256:...") -> int

Auth variants (usually a second registry over the same storage dir as an open one that images were
pushed to, so both serve the same content):

    Registry(d, htpasswd={"alice": "secret"})                       # basic auth (bcrypt via htpasswd -B)
    Registry(d, token=TokenAuth(realm=ts.realm, issuer=ts.issuer,    # Bearer tokens from tools/tokenserver.py
                                service=ts.service, rootcertbundle=ts.cert_path))

The access log is distribution's Apache "combined" log on the registry's stdout (every request, also
the ones rejected by auth); the application log (logrus, JSON) is on stderr. Both are captured to
files in `workdir` (default: a fresh dir next to the storage dir).  A request shows up in the access
log only after the registry has finished answering it, so `requests()` first makes a marker request,
waits until it appears and the log stops growing for `settle` seconds (`sync()`); marker requests are
filtered out.

CLI (demo):  python tools/registry.py start --dir D [--port P] [--daemon --pidfile F]
             python tools/registry.py stop --pidfile F
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = os.environ.get("DOCKER_REGISTRY_BIN") or shutil.which("docker-registry") or "/usr/bin/docker-registry"

# 127.0.0.1 - - [28/Nov/2026:18:40:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "python-requests/2.32"
_COMBINED = re.compile(
    r'^(?P<addr>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-)(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[A-Za-z0-9_+.-]+:[0-9a-fA-F]+)$")
_MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_SYNC_KEY = "__infra_sync"


@dataclass(frozen=True)
class AccessEntry:
    method: str
    path: str          # without the query string
    status: int
    query: str = ""
    size: int = 0
    user: str = "-"    # the combined log's user field (distribution leaves it "-")
    user_agent: str = ""

    # Tuple-like use: `for method, path, status in reg.requests()` and `(m, p, s) in reg.requests()`.
    def __iter__(self):
        return iter((self.method, self.path, self.status))

    def __eq__(self, other):
        if isinstance(other, tuple):
            return (self.method, self.path, self.status) == other
        return NotImplemented if not isinstance(other, AccessEntry) else (
            (self.method, self.path, self.status, self.query) == (other.method, other.path, other.status, other.query))

    def __hash__(self):
        return hash((self.method, self.path, self.status))


@dataclass
class TokenAuth:
    """distribution's `auth.token` section: the registry verifies JWTs signed by a cert in rootcertbundle."""
    realm: str
    issuer: str
    service: str
    rootcertbundle: str | Path


def _die_with_parent() -> None:
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (`htpasswd -Bbn`); distribution only accepts bcrypt."""
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _yaml_str(s: str | Path) -> str:
    return json.dumps(str(s))  # a JSON string is a valid YAML scalar


class RegistryError(RuntimeError):
    pass


class Registry:
    """A docker-registry process on 127.0.0.1 with filesystem storage in `storage_dir`."""

    def __init__(self, storage_dir: str | Path, *, port: int | None = None, workdir: str | Path | None = None,
                 htpasswd: dict[str, str] | None = None, token: TokenAuth | None = None,
                 start_timeout: float = 15.0, die_with_parent: bool = True) -> None:
        if htpasswd and token:
            raise ValueError("choose htpasswd or token auth, not both")
        self.storage_dir = Path(storage_dir).resolve()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="registry-run-",
                                                                            dir=self.storage_dir.parent))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.requested_port = port
        self.port: int | None = None
        self.htpasswd = dict(htpasswd or {})
        self.token = token
        self.start_timeout = start_timeout
        # Linux: the registry gets SIGTERM when the thread that started it dies (pytest killed -9 leaves
        # no orphan registry). Start it from a long-lived thread (the main one), or pass False.
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.config_path = self.workdir / "config.yml"
        self.access_log_path = self.workdir / "access.log"   # stdout: combined log, one line per request
        self.log_path = self.workdir / "registry.log"         # stderr: application log (JSON)
        self.proc: subprocess.Popen | None = None
        self._sync_counter = itertools.count(1)
        self.settle = 0.05  # seconds the access log must stay unchanged for sync() to return

    # -- properties ---------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        if self.port is None:
            raise RegistryError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _write_config(self, port: int) -> None:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: json",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {_yaml_str(self.storage_dir)}",
            "  delete:",
            "    enabled: true",
            "  redirect:",
            "    disable: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{port}",
            "  secret: infra-test-secret",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.htpasswd:
            pw = self.workdir / "htpasswd"
            pw.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in self.htpasswd.items()))
            lines += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {_yaml_str(pw)}"]
        elif self.token:
            t = self.token
            lines += ["auth:", "  token:", f"    realm: {_yaml_str(t.realm)}", f"    service: {_yaml_str(t.service)}",
                      f"    issuer: {_yaml_str(t.issuer)}", f"    rootcertbundle: {_yaml_str(t.rootcertbundle)}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> "Registry":
        if self.proc is not None:
            return self
        attempts = 1 if self.requested_port else 5
        last = ""
        for _ in range(attempts):
            port = self.requested_port or free_port()
            self._write_config(port)
            out = open(self.access_log_path, "ab")
            err = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config_path)], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=err, start_new_session=True,
                                             preexec_fn=_die_with_parent if self.die_with_parent else None)
            finally:
                out.close()
                err.close()
            self.port = port
            if self._wait_ready():
                return self
            last = self._tail(self.log_path)
            self._kill()
        self.port = None
        raise RegistryError(f"docker-registry did not start: {last}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/v2/?" + _SYNC_KEY + "=0", timeout=1):
                    return True
            except urllib.error.HTTPError as e:
                if e.code == 401:  # auth configured: it answers, so it is up
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self._kill()

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _tail(path: Path, n: int = 2000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- access log ----------------------------------------------------------------------------------------
    def sync(self, timeout: float = 5.0) -> None:
        """Make a marker request and wait until it is in the access log (so earlier requests are, too)."""
        if self.proc is None:
            return
        key = f"{_SYNC_KEY}={next(self._sync_counter)}-{time.monotonic_ns()}"
        try:
            urllib.request.urlopen(f"{self.url}/v2/?{key}", timeout=timeout).close()
        except urllib.error.HTTPError:
            pass
        except OSError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if key in self._tail(self.access_log_path, 1 << 16):
                break
            time.sleep(0.01)
        # The access log line of a big blob GET can be written just after the client has its last byte
        # (the body goes straight to the socket; the line follows when the handler returns), so it can
        # land after the marker on a busy machine: wait until the log stops growing.
        size = -1
        while time.monotonic() < deadline:
            cur = self.access_log_path.stat().st_size
            if cur == size:
                return
            size = cur
            time.sleep(self.settle)

    def _all_entries(self) -> list[AccessEntry]:
        out: list[AccessEntry] = []
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            m = _COMBINED.match(line)
            if not m:
                continue
            uri = m["uri"]
            path, _, query = uri.partition("?")
            out.append(AccessEntry(method=m["method"], path=path, status=int(m["status"]), query=query,
                                   size=0 if m["size"] == "-" else int(m["size"]), user=m["user"],
                                   user_agent=m["agent"] or ""))
        return out

    def mark(self) -> int:
        """A position in the access log; pass it as `since=` to see only later requests."""
        self.sync()
        return len(self._all_entries())

    def requests(self, since: int = 0, *, sync: bool = True) -> list[AccessEntry]:
        """All requests the registry answered (marker requests excluded), oldest first.

        Entries unpack as (method, path, status); also .query, .size, .user, .user_agent."""
        if sync:
            self.sync()
        return [e for e in self._all_entries()[since:] if _SYNC_KEY not in e.query]

    def blob_gets(self, digest: str | None = None, *, since: int = 0, repo: str | None = None,
                  status: int | None = None) -> int:
        """How many GET /v2/<repo>/blobs/<digest> requests (any status unless `status=` is given)."""
        n = 0
        for e in self.requests(since):
            m = _BLOB_PATH.match(e.path)
            if (e.method == "GET" and m and (digest is None or m["digest"] == digest)
                    and (repo is None or m["repo"] == repo) and (status is None or e.status == status)):
                n += 1
        return n

    def manifest_gets(self, ref: str | None = None, *, since: int = 0, repo: str | None = None) -> int:
        n = 0
        for e in self.requests(since):
            m = _MANIFEST_PATH.match(e.path)
            if e.method == "GET" and m and (ref is None or m["ref"] == ref) and (repo is None or m["repo"] == repo):
                n += 1
        return n


# -- CLI (for the demo) ------------------------------------------------------------------------------------
def _cmd_start(args) -> int:
    reg = Registry(args.dir, port=args.port, workdir=args.workdir or Path(args.dir).resolve().parent / "registry-run",
                   die_with_parent=not args.daemon)
    reg.start()
    if args.daemon:
        # The registry runs in its own session; we leave it running and record its pid.
        if args.pidfile:
            Path(args.pidfile).write_text(f"{reg.proc.pid}\n")
        print(reg.host, flush=True)
        reg.proc = None  # do not kill on exit
        return 0
    print(reg.host, flush=True)
    print(f"registry: serving {reg.storage_dir} on {reg.url}; access log {reg.access_log_path}; Ctrl-C stops it",
          file=sys.stderr, flush=True)
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    stop = {"now": False}

    def _handler(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    try:
        while not stop["now"] and reg.proc.poll() is None:
            time.sleep(0.2)
    finally:
        reg.stop()
    return 0


def _cmd_stop(args) -> int:
    try:
        pid = int(Path(args.pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"registry: no pid in {args.pidfile}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    Path(args.pidfile).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run docker-registry on 127.0.0.1 (tests, demo).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a registry; prints HOST:PORT")
    s.add_argument("--dir", required=True, help="storage directory")
    s.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    s.add_argument("--workdir", default=None, help="where config and logs go (default: DIR/../registry-run)")
    s.add_argument("--daemon", action="store_true", help="leave it running in the background and return")
    s.add_argument("--pidfile", default=None)
    t = sub.add_parser("stop", help="stop the registry recorded in a pidfile")
    t.add_argument("--pidfile", required=True)
    args = p.parse_args(argv)
    return _cmd_start(args) if args.cmd == "start" else _cmd_stop(args)


if __name__ == "__main__":
    sys.exit(main())
