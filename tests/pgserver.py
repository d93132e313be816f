"""A throwaway PostgreSQL server for the tests: Debian's binaries, initdb into a temp dir, pg_ctl
start on a loopback port and a socket dir, stopped at the end. No system service is used.

initdb refuses to run as root: as root the server runs as the `postgres` user the Debian package
creates (runuser). Clients connect over TCP on 127.0.0.1 with a password (scram-sha-256) as role
`container`, so the URL carries the password like a user's would; `admin` (the socket, trust)
creates a database per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD = "container", "s3cret-pw"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def why_unavailable() -> str | None:
    if binaries() is None:
        return "PostgreSQL binaries not installed (/usr/lib/postgresql/*/bin/initdb; tools/setup.sh installs them)"
    from container.schema.errors import SchemaError
    from container.schema.pg import import_psycopg     # (container.schema hides psycopg from peewee)

    try:
        import_psycopg()
    except SchemaError:
        return "psycopg not installed (pip install -e '.[postgres]'; tools/setup.sh does)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, base: Path | None = None):
        # not under pytest's tmp dirs: those are 0700 root, and the server runs as `postgres`
        self.base = base or Path(tempfile.mkdtemp(prefix="container-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.port = _free_port()
        self.bin = binaries()
        self.counter = 0

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self) -> "PgServer":
        self.base.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            os.chmod(self.base, 0o755)
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "admin", "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"])
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                   "-o", opts, "-w", "-t", "60", "start"])
        self.admin(f"CREATE ROLE {USER} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
        return self

    def _run(self, argv: list[str]) -> None:
        r = subprocess.run(self._as_owner(argv), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")

    def stop(self) -> None:
        subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                       "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.sock), port=self.port, user="admin", dbname="postgres",
                             autocommit=True) as c:
            c.execute(sql)

    def url(self, dbname: str, *, password: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database owned by `container`: its URL (with the password)."""
        self.counter += 1
        name = f"t{os.getpid()}_{self.counter}"
        self.admin(f"CREATE DATABASE {name} OWNER {USER} TEMPLATE template0")
        return self.url(name)

