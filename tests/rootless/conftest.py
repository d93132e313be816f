"""Fixtures for the rootless tests: real unprivileged users and an interpreter they can run.

Session:
  rootless_venv   a venv of Debian's /usr/bin/python3 (the default interpreter lives under root's home,
                  which other users cannot read) with this worktree pip-installed into it, non-editable,
                  plus pytest (for the hostile unpack suite run as a user). Kept in
                  /var/tmp/container-rootless-<hash of the sources>/ (world-readable) across sessions;
                  rebuilt when the sources change; other hashes' venvs are removed only after a day
                  (other worktrees' sessions may be using theirs).
  users           {"ranges": User, "single": User}: two users made with useradd for this session, one
                  with an /etc/subuid and /etc/subgid range (65536 ids), one without; removed (userdel -r,
                  the range lines dropped) at the end.
User:
  .name .uid .gid .home
  .container(*args, root=None, input=None, timeout=120, check=False) -> CompletedProcess: the venv's
                  `container` as that user (runuser), a clean environment (HOME, PATH, LANG only);
                  root=None: its default store (~/.local/share/container), else --root ROOT
  .python(code, timeout=...) -> CompletedProcess: the venv's python -c CODE as that user
  .store          its default store's path
Function:
  store_of(kind) -> Path: a fresh store dir in users[kind]'s home for one test, removed at the end
Skipped (with the reason) when not root, without useradd/runuser, or when the kernel refuses
unprivileged user namespaces.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYS_PYTHON = "/usr/bin/python3"


def _sources_hash() -> str:
    h = hashlib.sha256()
    for d in ("cas", "schema", "engine", "cli"):
        for p in sorted((REPO / d).rglob("*.py")):
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    h.update((REPO / "pyproject.toml").read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def rootless_venv() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the rootless tests create users: run them as root")
    for tool in ("useradd", "userdel", "runuser"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    if not os.path.exists(SYS_PYTHON):
        pytest.skip(f"{SYS_PYTHON} (Debian's python3) is not installed")
    d = Path(f"/var/tmp/container-rootless-{_sources_hash()}")
    if (d / "ready").exists():
        return d
    import time

    for old in Path("/var/tmp").glob("container-rootless-*"):      # venvs of other sources, a day old
        try:
            if time.time() - old.stat().st_mtime > 86400:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    # (other worktrees' sessions run at the same time, each with its own venv: only stale ones go)
    subprocess.run([SYS_PYTHON, "-m", "venv", str(d)], check=True, capture_output=True)
    build = Path(f"/var/tmp/container-rootless-build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "tests"))
    try:
        r = subprocess.run([str(d / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(build),
                            "pytest"], capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(f"pip install into {d} failed:\n{r.stderr[-2000:]}")
    os.chmod(d, 0o755)
    (d / "ready").write_text("")
    return d


class User:
    def __init__(self, name: str, venv: Path):
        import pwd

        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.venv = venv
        self.store = self.home / ".local/share/container"
        self.env = {"HOME": str(self.home), "PATH": f"{venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8", "USER": name, "LOGNAME": name}

    def _run(self, argv: list[str], *, input: str | None = None, timeout: float = 120,
             env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
        e = dict(self.env, **(env or {}))
        full = ["runuser", "-u", self.name, "--", "env", "-i", *[f"{k}={v}" for k, v in e.items()], *argv]
        r = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout, cwd=str(self.home),
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} as {self.name} exited {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def container(self, *args, root: Path | str | None = None, **kw) -> subprocess.CompletedProcess:
        argv = [str(self.venv / "bin/container")] + (["--root", str(root)] if root else [])
        return self._run(argv + [str(a) for a in args], **kw)

    def python(self, code: str, **kw) -> subprocess.CompletedProcess:
        return self._run([str(self.venv / "bin/python"), "-c", code], **kw)

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return self._run(argv, **kw)


def _free_range(count: int = 65536) -> int:
    used = []
    for f in ("/etc/subuid", "/etc/subgid"):
        try:
            for line in Path(f).read_text().splitlines():
                parts = line.split(":")
                if len(parts) == 3:
                    used.append((int(parts[1]), int(parts[2])))
        except (OSError, ValueError):
            pass
    start = 1_000_000
    while any(s < start + count and start < s + n for s, n in used):
        start += count
    return start


def _remove_lines(path: str, name: str) -> None:
    p = Path(path)
    if p.exists():
        p.write_text("".join(line + "\n" for line in p.read_text().splitlines() if not line.startswith(name + ":")))


@pytest.fixture(scope="session")
def users(rootless_venv):
    tag = os.getpid() % 100000
    names = {"ranges": f"ctrr{tag}", "single": f"ctrs{tag}"}
    made = []
    try:
        for kind, name in names.items():
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0",
                            name], check=True, capture_output=True)
            made.append(name)
            for f in ("/etc/subuid", "/etc/subgid"):
                _remove_lines(f, name)
        start = _free_range()
        for f in ("/etc/subuid", "/etc/subgid"):
            with open(f, "a") as fh:
                fh.write(f"{names['ranges']}:{start}:65536\n")
        out = {kind: User(name, rootless_venv) for kind, name in names.items()}
        probe = out["single"].python("import ctypes,sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000) != 0)")
        if probe.returncode != 0:
            pytest.skip("this kernel refuses unprivileged user namespaces")
        yield out
    finally:
        for name in made:
            shutil.rmtree(f"/tmp/pytest-of-{name}", ignore_errors=True)
            subprocess.run(["userdel", "-r", "-f", name], capture_output=True)
            for f in ("/etc/subuid", "/etc/subgid"):
                _remove_lines(f, name)


@pytest.fixture
def store_of(users, request):
    """A fresh store dir in the user's home, for one test (root=None means the default store)."""
    made = []

    def make(kind: str) -> Path:
        u = users[kind]
        d = u.home / "stores" / f"{request.node.name[:40]}-{len(made)}".replace("[", "-").replace("]", "")
        u.run(["mkdir", "-p", str(d)], check=True)
        made.append(d)
        return d
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)
