"""Shared pytest fixtures (the single place for them). Owner: infra; others add small, named fixtures.

Layout: unit/ (one module in-process: no registry, no CLI process), integration/ (the installed
`container` against a real registry on loopback, real mounts and namespaces), hostile/ (malicious
images, layers, archives, registries and stores; fuzzing). Helpers beside this file, importable from
every test: tarmaker (raw tar/OCI layouts by hand, add_layer into a store), gc_synth (synthetic
stores without a registry).

Session:
  registry        tools.registry.Registry, a real docker-registry on 127.0.0.1 (open, no auth):
                  .host "127.0.0.1:PORT", .url, .storage_dir, .requests(since=), .blob_gets(digest, since=),
                  .manifest_gets(ref, since=), .mark() -> position for since=, .access_log_path, .log_path
  built_images    {name: tools.images.BuiltImage}: the fast images as OCI layouts (see tools/images.py)
  pushed          {name: tools.images.PushedImage} pushed to `registry`:
                    busybox, layered, shared-a, shared-b, zstd, multiarch  -> test/<name>:latest (OCI)
                    multiarch-docker -> test/multiarch-docker:latest (Docker manifest list, schema 2)
                    "library/busybox" -> library/busybox:latest (same digest as busybox)
                    "busybox-v2s2"    -> test/busybox-v2s2:latest (Docker schema 2 media types)
                  each: .ref "127.0.0.1:PORT/test/busybox:latest", .by_digest, .host, .repo, .tag,
                  .manifest_digest, .media_type, .manifest (dict), .config_digest, .config (dict),
                  .layers [LayerInfo(digest, diff_id, size, media_type, uncompressed_size)], .diff_ids,
                  .layer_digests, .platforms (multiarch: {"linux/arm64/v8": BuiltImage, ...}), .built
  debian_image    PushedImage of the debootstrap minbase stand-in, library/debian:bookworm (slow on the
                  first run: ~45 s, then cached in $CONTAINER_TEST_CACHE or ~/.cache/container-tests)
Function:
  root            a fresh, empty store dir under tmp_path
  cli(*args, input=None, timeout=120, env=None, root=None, check=False) -> CompletedProcess (text)
                  runs the installed `container` entry point with `--root <root>`, no proxy variables,
                  CONTAINER_CONFIG = an empty per-test file (cli.config_path; write TOML there to set
                  mirrors/insecure), DOCKER_CONFIG = an empty per-test dir (cli.docker_config).
  run_container_cli(args, input=None, timeout=120, env=None, root=None, check=False): the same, args a list.
  make_registry(htpasswd=None, token=None, storage_dir=None) -> a started extra Registry, by default over the
                  session registry's storage (so it serves every pushed image), stopped at teardown.
  make_token_server(users=None, anonymous_pull=True, grants=None) -> started tools.tokenserver.TokenServer
                  (.realm, .auth() for make_registry(token=...), .requests, .fail_next).
  proxy(target=None, **kw) -> started tools.proxy.FaultProxy in front of `registry` (or target HOST:PORT).
  podman(*args) -> CompletedProcess: podman (root) on throwaway vfs storage under tmp_path, reset at teardown.

PostgreSQL (tests/pgserver.py; skipped with the reason where the binaries or psycopg are missing):
  pg              session: a real server (initdb in a temp dir, pg_ctl on 127.0.0.1 + a socket dir, run as
                  the `postgres` user when root), stopped at the end. .new_database() -> URL with password,
                  .url(name, password=False), .admin(sql)
  pg_url          a fresh empty database's URL (postgresql://container:PW@127.0.0.1:PORT/tN)
  backend         parametrized "sqlite" | "postgres": None or a fresh database's URL
  db_cli          `cli` on that backend (CONTAINER_DB set for postgres); .db_url is None or the URL

The session registry is shared by every test: never delete or overwrite what `pushed` put there. For
destructive tests, make_registry(storage_dir=tmp_path / "s") and tools.images.push() into it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO, HERE):            # tools.* (image builder, registry launcher), and the helpers here
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from tools import images as test_images  # noqa: E402
from tools.registry import Registry  # noqa: E402

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def container_entry_point() -> Path:
    p = Path(sys.executable).parent / "container"
    if not p.exists():
        p = REPO / ".venv" / "bin" / "container"
    return p


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS and k != "CONTAINER_ROOT"}
    if extra:
        env.update(extra)
    return env


# -------------------------------------------------------------------------------------------- registry
@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("registry")
    reg = Registry(base / "storage", workdir=base / "run")
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def built_images(tmp_path_factory):
    return test_images.build_all(tmp_path_factory.mktemp("images"))


PUSH_PLAN = [  # (key, image name, repo, tag, fmt)
    ("busybox", "busybox", "test/busybox", "latest", "oci"),
    ("layered", "layered", "test/layered", "latest", "oci"),
    ("shared-a", "shared-a", "test/shared-a", "latest", "oci"),
    ("shared-b", "shared-b", "test/shared-b", "latest", "oci"),
    ("zstd", "zstd", "test/zstd", "latest", "oci"),
    ("multiarch", "multiarch", "test/multiarch", "latest", "oci"),
    ("multiarch-docker", "multiarch-docker", "test/multiarch-docker", "latest", "oci"),
    ("library/busybox", "busybox", "library/busybox", "latest", "oci"),
    ("busybox-v2s2", "busybox", "test/busybox-v2s2", "latest", "v2s2"),
]


@pytest.fixture(scope="session")
def pushed(registry, built_images):
    t0 = time.monotonic()

    def one(item):
        key, name, repo, tag, fmt = item
        return key, test_images.push(built_images[name], registry.host, repo, tag, fmt)

    # busybox first so that the others mount its base layer instead of uploading it again
    out = dict([one(PUSH_PLAN[0])])
    with ThreadPoolExecutor(3) as ex:
        out.update(ex.map(one, PUSH_PLAN[1:]))
    pushed_seconds = time.monotonic() - t0
    for p in out.values():
        p.push_seconds = pushed_seconds
    return out


@pytest.fixture(scope="session")
def debian_image(registry, tmp_path_factory):
    cache = test_images.cache_dir()
    d = cache / f"debian-{test_images.DEBIAN_SUITE}-minbase"
    have_cache = (d / "rootfs.complete").exists() or (d / f"oci-v{test_images.DEBIAN_BUILDER_VERSION}.json").exists()
    if not have_cache and not test_images.debian_mirror_reachable():
        pytest.skip(f"debian image: no cached build in {d} and the Debian mirror "
                    f"{test_images.DEBIAN_MIRROR} cannot be reached for debootstrap")
    built = test_images.build_debian(cache)
    return test_images.push(built, registry.host, "library/debian", "bookworm", "oci")


# -------------------------------------------------------------------------------------------- store + CLI
@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    return r


class ContainerCli:
    """Runs the installed `container` entry point; see the module docstring."""

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.exe = container_entry_point()
        self.config_path = workdir / "container-config.toml"
        self.config_path.write_text("")
        self.docker_config = workdir / "docker-config"
        self.docker_config.mkdir(exist_ok=True)
        self.env = clean_env({"CONTAINER_CONFIG": str(self.config_path), "DOCKER_CONFIG": str(self.docker_config)})

    def run(self, args, *, input: str | None = None, timeout: float = 120, env: dict | None = None,
            root: Path | str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        argv = [str(self.exe), "--root", str(root or self.root), *[str(a) for a in args]]
        e = dict(self.env)
        if env:
            e.update(env)
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=e,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def __call__(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run(args, **kw)

    def write_config(self, text: str) -> Path:
        self.config_path.write_text(text)
        return self.config_path


@pytest.fixture
def cli(root, tmp_path):
    return ContainerCli(root, tmp_path)


@pytest.fixture
def run_container_cli(cli):
    return cli.run


# -------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="session")
def pg():
    import pgserver

    why = pgserver.why_unavailable()
    if why:
        pytest.skip(why)
    srv = pgserver.PgServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg):
    return pg.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


@pytest.fixture
def db_cli(cli, backend):
    cli.db_url = backend
    if backend:
        cli.env["CONTAINER_DB"] = backend
    return cli


# -------------------------------------------------------------------------------------------- extra servers
@pytest.fixture
def make_token_server(tmp_path):
    from tools.tokenserver import TokenServer
    started = []

    def make(**kw):
        kw.setdefault("workdir", tmp_path / f"tokenserver{len(started)}")
        ts = TokenServer(**kw).start()
        started.append(ts)
        return ts
    yield make
    for ts in started:
        ts.stop()


@pytest.fixture
def make_registry(registry, tmp_path):
    started = []

    def make(*, htpasswd=None, token=None, storage_dir=None):
        reg = Registry(storage_dir or registry.storage_dir, workdir=tmp_path / f"registry{len(started)}",
                       htpasswd=htpasswd, token=token)
        reg.start()
        started.append(reg)
        return reg
    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def proxy(registry):
    from tools.proxy import FaultProxy
    started = []

    def make(target: str | None = None, **kw):
        p = FaultProxy(target or registry.host, **kw).start()
        started.append(p)
        return p
    yield make
    for p in started:
        p.stop()


@pytest.fixture
def podman(tmp_path):
    """podman on its own throwaway storage (its runroot path must stay under 50 characters)."""
    import shutil
    import tempfile

    run = tempfile.mkdtemp(prefix="pm-", dir="/tmp")

    def call(*args):
        return subprocess.run(["podman", "--root", str(tmp_path / "podman"), "--runroot", run,
                               "--storage-driver", "vfs", *args], capture_output=True, text=True, timeout=300)
    yield call
    call("system", "reset", "--force")
    shutil.rmtree(run, ignore_errors=True)
