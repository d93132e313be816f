"""A minimal Docker token server (distribution's token auth) for tests: stdlib http.server + `cryptography`.

distribution 2.8 (`registry/auth/token`) accepts a JWT whose header carries an `x5c` chain that verifies
against `rootcertbundle`, signed RS256 (or ES256) by the leaf key, with claims iss == issuer,
aud containing the service, exp/nbf valid (60 s leeway), and `access` listing the granted
[{type, name, actions}]. We make a self-signed RSA cert, put it in the bundle, and sign with its key.

    with TokenServer(users={"alice": "pw"}, anonymous_pull=True) as ts:
        reg = Registry(storage, token=ts.auth()).start()
        ...
        ts.requests  -> list of dicts {path, query, scope: [...], service, user, authorization}

GET /token?service=S&scope=repository:NAME:pull[,push]&scope=...  (Basic auth optional)
-> 200 {"token", "access_token", "expires_in", "issued_at"}; 401 on bad credentials.
Granting: a known user gets every action they ask for on every repository (unless `grants` restricts
it: {user: {repo: [actions]}}); anonymous gets "pull" only when anonymous_pull=True, else 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_cert(common_name: str = "container-test-token-issuer"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


class TokenServer:
    def __init__(self, *, issuer: str = "container-test-issuer", service: str = "container-test-registry",
                 users: dict[str, str] | None = None, anonymous_pull: bool = True,
                 grants: dict[str, dict[str, list[str]]] | None = None, expires_in: int = 300,
                 workdir: str | Path | None = None) -> None:
        self.issuer = issuer
        self.service = service
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.grants = grants
        self.expires_in = expires_in
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tokenserver-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = make_cert()
        self.cert_path = self.workdir / "rootcertbundle.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        self.requests: list[dict] = []
        self.fail_next: list[int] = []  # statuses to answer instead of a token, consumed first-in first-out
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- tokens -------------------------------------------------------------------------------------------
    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def issue(self, user: str | None, scopes: list[str], service: str | None = None) -> str:
        now = int(time.time())
        access = []
        for scope in scopes:
            # repository:NAME:ACTIONS  (NAME may contain ':' only for a registry host; take the last ':')
            typ, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = self._allowed(user, typ, name, wanted)
            if allowed:
                access.append({"type": typ, "name": name, "actions": allowed})
        claims = {"iss": self.issuer, "sub": user or "", "aud": service or self.service, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        return self.sign(claims)

    def _allowed(self, user, typ, name, wanted):
        if user is None:
            return [a for a in wanted if a == "pull"] if self.anonymous_pull else []
        if self.grants is None:
            return wanted
        per_repo = self.grants.get(user, {})
        ok = per_repo.get(name, per_repo.get("*", []))
        return [a for a in wanted if a in ok or "*" in ok]

    # -- HTTP ---------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def auth(self):
        """The TokenAuth for tools.registry.Registry(token=...)."""
        from .registry import TokenAuth  # noqa: WPS433 (tools is a package when imported by tests)
        return TokenAuth(realm=self.realm, issuer=self.issuer, service=self.service, rootcertbundle=self.cert_path)

    def start(self) -> "TokenServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                authz = self.headers.get("Authorization")
                rec = {"path": u.path, "query": u.query, "scope": q.get("scope", []),
                       "service": (q.get("service") or [None])[0], "user": None, "authorization": authz,
                       "status": None}
                status, body, extra = self._answer(u.path, q, authz, rec)
                rec["status"] = status
                with server._lock:
                    server.requests.append(rec)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, path, q, authz, rec):
                if path != "/token":
                    return 404, {"error": "not found"}, {}
                with server._lock:
                    forced = server.fail_next.pop(0) if server.fail_next else None
                if forced:
                    return forced, {"error": f"forced {forced}"}, {}
                user = None
                if authz:
                    scheme, _, cred = authz.partition(" ")
                    if scheme.lower() != "basic":
                        return 401, {"error": "unsupported authorization"}, {}
                    try:
                        u, _, p = base64.b64decode(cred).decode().partition(":")
                    except Exception:
                        return 400, {"error": "bad basic credentials"}, {}
                    if server.users.get(u) != p:
                        return 401, {"error": "invalid credentials"}, {"WWW-Authenticate": 'Basic realm="token"'}
                    user = u
                elif not server.anonymous_pull:
                    return 401, {"error": "authentication required"}, {"WWW-Authenticate": 'Basic realm="token"'}
                rec["user"] = user
                token = server.issue(user, q.get("scope", []), (q.get("service") or [None])[0])
                issued = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                return 200, {"token": token, "access_token": token, "expires_in": server.expires_in,
                             "issued_at": issued}, {}

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="tokenserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
