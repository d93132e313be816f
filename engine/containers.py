"""Containers: create, run, list, resolve, remove (the run half of design.md's data flow).

    image -> snapshot (engine.layer.snapshot.ensure_snapshot, under the shared store lock)
          -> Container row (status created) -> rootfs (overlay, or a private copy)
          -> process spec (entrypoint/cmd/env/workdir/user as docker) -> isolation backend
          -> status running (pid) -> exit code -> status exited, or row + dir removed (--rm)

Two ways to the same rows: _OrmDB (engine.store + peewee, any --db URL, pulls, snapshot
builds) and _LiteDB, `run`'s hot path on the default SQLite store with the stdlib alone (sqlite3,
fcntl), used when the image is found by a tag and its snapshot is cached; it gives up with
_NotFast before any side effect otherwise. Importing peewee, container.cas (hashlib) and
dataclasses was about 60% of `container run --rm busybox true`; CONTAINER_TRACE=1 prints where
the rest goes.

No DB transaction is held while the container runs; the supervisor holds
flock(ROOT/containers/<id>/lock) instead, so gc/prune/rm can tell a live container from a
stale row (a supervisor killed with SIGKILL leaves "running" with no lock holder: shown as
exited, exit code unknown).

Process semantics follow docker (moby daemon/create + runc):
- argv = Entrypoint + (user args, or Cmd when there are none). `--entrypoint X` replaces the
  Entrypoint and clears the image's Cmd; `--entrypoint ""` clears the Entrypoint only.
- Env = PATH (default when the image sets none), HOSTNAME, TERM=xterm with -t, the image's Env,
  then --env-file and -e (later wins, in place); HOME from /etc/passwd (else /) when unset.
- WorkingDir: -w, else the image's, else /; must be absolute; created when missing.
- User: -u, else the image's; resolved in the image's /etc/passwd and /etc/group (engine.users).
"""

from __future__ import annotations

import json
import os
import sys
import time

from container.engine.errors import Conflict, ContainerNotFound, RunError
from container.engine.runtime.record import REQUIRED, Record
from container.schema.clock import utcnow

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunOptions(Record):
    """docker run's options (cli/containers.py fills it from typer or from its own fast parser)."""
    FIELDS = dict(
        image=REQUIRED,
        command=list,
        name=None,
        rm=False,
        hostname=None,
        env=list,                   # -e K=V / -e K, in order
        env_files=list,
        workdir=None,
        user=None,
        entrypoint=None,
        interactive=False,
        tty=False,
        read_only=False,
        pull="missing",             # missing | always | never
        isolation="auto",           # auto | namespaces | chroot
        network="host",             # host | none
        platform=None,
    )
    __slots__ = tuple(FIELDS)


_info_cls = None


def __getattr__(name: str):
    """ContainerInfo is a dataclass (callers may use dataclasses.asdict), built on first use so
    that `run` never imports dataclasses."""
    if name == "ContainerInfo":
        return _container_info_cls()
    raise AttributeError(name)


def _container_info_cls():
    global _info_cls
    if _info_cls is not None:
        return _info_cls
    from dataclasses import dataclass

    @dataclass
    class ContainerInfo:
        id: str
        name: str
        image: str                      # what the user typed
        image_id: str | None            # manifest digest
        command: list[str]
        config: dict
        isolation: str
        rootfs_mode: str
        status: str                     # created | running | exited
        exit_code: int | None
        pid: int | None
        created: object
        started: object
        finished: object
        chain_id: str | None = None
        path: str = ""                  # ROOT/containers/<id>

        @property
        def short_id(self) -> str:
            return self.id[:12]

        def to_json(self) -> dict:
            """A docker-inspect-like dict."""
            c = self.config
            argv = self.command
            d = self.path
            graph = {"Name": self.rootfs_mode, "Data": {}}
            if self.rootfs_mode == "overlay":
                graph["Data"] = {"LowerDir": c.get("lower", ""), "UpperDir": f"{d}/upper",
                                 "WorkDir": f"{d}/work", "MergedDir": f"{d}/rootfs"}
            elif self.rootfs_mode == "copy":
                graph["Data"] = {"RootDir": f"{d}/rootfs"}
            return {
                "Id": self.id,
                "Created": _iso(self.created),
                "Path": argv[0] if argv else "",
                "Args": argv[1:],
                "State": {
                    "Status": self.status,
                    "Running": self.status == "running",
                    "Pid": self.pid or 0,
                    "ExitCode": self.exit_code if self.exit_code is not None else 0,
                    "StartedAt": _iso(self.started),
                    "FinishedAt": _iso(self.finished),
                },
                "Image": self.image_id or "",
                "Name": "/" + self.name,
                "Config": {
                    "Hostname": c.get("hostname", ""),
                    "User": c.get("user", ""),
                    "Env": c.get("env", []),
                    "Cmd": c.get("cmd"),
                    "Entrypoint": c.get("entrypoint"),
                    "Image": self.image,
                    "WorkingDir": c.get("workdir", "/"),
                    "Tty": bool(c.get("tty")),
                    "OpenStdin": bool(c.get("interactive")),
                },
                "HostConfig": {
                    "AutoRemove": bool(c.get("rm")),
                    "ReadonlyRootfs": bool(c.get("read_only")),
                    "NetworkMode": c.get("network", "host"),
                    "Isolation": self.isolation,
                },
                "GraphDriver": graph,
                "SnapshotChainId": self.chain_id or "",
            }

    _info_cls = ContainerInfo
    return ContainerInfo


def _iso(t) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"
    if hasattr(t, "isoformat"):
        return t.isoformat() + "Z"
    return str(t)


# -- names ---------------------------------------------------------------------------------

_ADJ = ("admiring adoring affectionate agitated amazing angry awesome blissful bold boring brave busy "
        "charming clever cool compassionate competent condescending confident cranky crazy dazzling "
        "determined distracted dreamy eager ecstatic elastic elated elegant eloquent epic fervent "
        "festive flamboyant focused friendly frosty gallant gifted goofy gracious happy hardcore "
        "heuristic hopeful hungry infallible inspiring jolly jovial keen kind laughing loving lucid "
        "magical modest musing mystifying naughty nervous nice nifty nostalgic objective optimistic "
        "peaceful pedantic pensive practical priceless quirky quizzical relaxed reverent romantic sad "
        "serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting "
        "upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen").split()
_NAMES = ("agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach "
          "bardeen bartik bassi bell benz bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta "
          "brattain brown carson cerf chandrasekhar chatelet chaum clarke colden cori cray curie darwin "
          "davinci dijkstra dubinsky easley edison einstein elion engelbart euclid euler fermat fermi "
          "feynman franklin galileo gates goldberg goldstine golick goodall hamilton hawking heisenberg "
          "hermann hodgkin hoover hopper hugle hypatia jackson jang jennings jepsen johnson joliot "
          "jones kalam kare keller kepler khorana kilby kirch knuth kowalevski lalande lamarr leakey "
          "leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira margulis "
          "matsumoto maxwell mayer mccarthy mcclintock mclean mcnulty meitner mendel mestorf mirzakhani "
          "morse moser murdock napier nash neumann newton nightingale nobel noether northcutt noyce "
          "panini pare pascal pasteur payne perlman pike poincare poitras ptolemy raman ramanujan "
          "ride ritchie robinson roentgen rosalind rubin saha sammet sanderson shamir shannon shaw "
          "shirley shockley sinoussi snyder spence stonebraker sutherland swanson swartz swirles "
          "taussig tesla tharp thompson torvalds turing varahamihira villani visvesvaraya volhard "
          "wescoff wiles williams wilson wing wozniak wright wu yalow yonath zhukovsky").split()


def random_name() -> str:
    a, b = int.from_bytes(os.urandom(4), "big"), int.from_bytes(os.urandom(4), "big")
    return f"{_ADJ[a % len(_ADJ)]}_{_NAMES[b % len(_NAMES)]}"


_TRACE = os.environ.get("CONTAINER_TRACE")
_T0 = float(os.environ.get("CONTAINER_TRACE_T0") or time.perf_counter())


def _trace(what: str) -> None:
    """CONTAINER_TRACE=1: where the milliseconds of `run` go (stderr; t=0 is main()'s start)."""
    if _TRACE:
        sys.stderr.write(f"trace {(time.perf_counter() - _T0) * 1000:7.2f} ms  "
                         f"(cpu {time.process_time() * 1000:6.1f})  {what}\n")


def _valid_name(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None and len(name) <= 128


# -- env -----------------------------------------------------------------------------------

def _env_item(item: str, where: str) -> str | None:
    if item.startswith("="):
        raise RunError(f"invalid environment variable: {item}")
    k, eq, v = item.partition("=")
    if any(c.isspace() for c in k):
        raise RunError(f"{where}: variable '{k}' contains whitespaces")
    if eq:
        return item
    if k in os.environ:
        return f"{k}={os.environ[k]}"
    return None


ENV_FILE_MAX = 16 << 20


def parse_env_file(path: str) -> list[str]:
    """docker's --env-file: K=V lines, `K` alone takes the caller's value, '#' comments."""
    try:
        with open(path, "rb") as f:
            raw = f.read(ENV_FILE_MAX + 1)      # bounded: --env-file /dev/zero must not hang
    except OSError as e:
        raise RunError(f"open {path}: {(e.strerror or str(e)).lower()}") from None
    if len(raw) > ENV_FILE_MAX:
        raise RunError(f"env file {path} is larger than {ENV_FILE_MAX >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RunError(f"env file {path} contains invalid utf8 bytes") from None
    out = []
    for line in text.splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        item = _env_item(line, f"env file {path}")
        if item is not None:
            out.append(item)
    return out


def user_env(opts: RunOptions) -> list[str]:
    out: list[str] = []
    for p in opts.env_files:
        out += parse_env_file(p)
    for e in opts.env:
        item = _env_item(e, "-e")
        if item is not None:
            out.append(item)
    return out


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Replace-or-append by key, keeping first-seen order (moby ReplaceOrAppendEnvValues)."""
    out = list(base)
    idx = {kv.partition("=")[0]: i for i, kv in enumerate(out)}
    for kv in extra:
        k = kv.partition("=")[0]
        if k in idx:
            out[idx[k]] = kv
        else:
            idx[k] = len(out)
            out.append(kv)
    return out


def process_args(cfg: dict, opts: RunOptions) -> tuple[list[str], list[str] | None, list[str]]:
    """(argv, entrypoint, cmd) as docker computes them."""
    if opts.entrypoint is not None:
        entrypoint = [opts.entrypoint] if opts.entrypoint else []
        cmd = list(opts.command)
        if not entrypoint and not cmd:
            cmd = list(cfg.get("Cmd") or [])
    else:
        entrypoint = list(cfg.get("Entrypoint") or [])
        cmd = list(opts.command) if opts.command else list(cfg.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise RunError("no command specified")
    return argv, entrypoint, cmd


def container_env(cfg: dict, extra: list[str], hostname: str, tty: bool, home: str) -> list[str]:
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if tty:
        env.append("TERM=xterm")
    env = _merge_env(env, list(cfg.get("Env") or []))
    env = _merge_env(env, extra)
    if not any(kv.startswith("HOME=") for kv in env):
        env.append(f"HOME={home}")
    return env


# -- queries -------------------------------------------------------------------------------

def _container_lock_free(cdir) -> bool:
    """True when no supervisor holds containers/<id>/lock (the container is not running)."""
    from container.cas.lock import is_held

    return not is_held(os.path.join(cdir, "lock"))


def _info(store, row):
    cdir = store.containers_dir / row.id
    status, code = row.status, row.exit_code
    if status == "running" and _container_lock_free(cdir):
        status = "exited"          # its supervisor died (kill -9, reboot): stale row
    try:
        cfg = json.loads(row.config or "{}")
    except ValueError:
        cfg = {}
    try:
        cmd = json.loads(row.command or "[]")
    except ValueError:
        cmd = []
    return _container_info_cls()(
        id=row.id, name=row.name, image=row.image_ref, image_id=row.__data__.get("image"), command=cmd, config=cfg,
        isolation=row.isolation, rootfs_mode=row.rootfs_mode, status=status, exit_code=code,
        pid=row.pid, created=row.created, started=row.started, finished=row.finished,
        chain_id=row.__data__.get("snapshot"), path=str(cdir))


def list_containers(store, all: bool = False) -> list:
    from container.schema import Container

    store.db()
    rows = Container.select().order_by(Container.created.desc())
    out = [_info(store, r) for r in rows]
    return out if all else [c for c in out if c.status == "running"]


def _find_row(store, name_or_id: str):
    from container.schema import Container

    store.db()
    key = name_or_id.lstrip("/")
    row = Container.get_or_none(Container.id == key) or Container.get_or_none(Container.name == key)
    if row is not None:
        return row
    if key and all(c in "0123456789abcdef" for c in key):
        rows = list(Container.select().where(Container.id.startswith(key)).limit(2))
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise ContainerNotFound(f"multiple containers match {name_or_id!r}: use a longer id")
    raise ContainerNotFound(f"No such container: {name_or_id}")


def resolve_container(store, name_or_id: str):
    return _info(store, _find_row(store, name_or_id))


def remove_container(store, name_or_id: str, force: bool = False):
    """docker rm: refuses a running container unless force (then SIGKILL, wait, remove)."""
    import signal

    from container.schema import Container, write_txn

    row = _find_row(store, name_or_id)
    info = _info(store, row)
    cdir = store.containers_dir / row.id
    if info.status == "running":
        if not force:
            raise Conflict(f"cannot remove container {name_or_id}: container is running: "
                           f"stop the container before removing or force remove (rm -f)")
        if row.pid:
            try:
                os.kill(row.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while not _container_lock_free(cdir) and time.monotonic() < deadline:
            time.sleep(0.02)
    with write_txn():
        Container.delete().where(Container.id == row.id).execute()
    _remove_dir(store, cdir)
    return info


def _remove_dir(store, cdir) -> None:
    from pathlib import Path

    from container.cas import remove_under

    if os.path.lexists(cdir):
        remove_under(store.containers_dir, Path(cdir))


# -- run -----------------------------------------------------------------------------------

def _resolve_image(store, opts: RunOptions, progress=None):
    from container.engine.errors import ImageNotFound, InvalidReference
    from container.engine.image.catalog import resolve_image
    from container.engine.image.reference import looks_like_id, parse

    if opts.pull not in ("missing", "always", "never"):
        raise RunError(f"invalid --pull {opts.pull!r}: want missing, always or never")
    try:                # parsed once; an id, or what does not parse, is looked up as typed
        ref = None if opts.pull == "never" or looks_like_id(opts.image) else parse(opts.image)
    except InvalidReference:
        ref = None
    if opts.pull != "always":
        try:
            return resolve_image(store, ref or opts.image)
        except ImageNotFound:
            if opts.pull == "never":
                raise
            ref = ref or parse(opts.image)      # an invalid reference is that error alone, as in docker
            sys.stderr.write(f"Unable to find image '{opts.image}' locally\n")
            sys.stderr.flush()
    from container.engine.pull import pull

    return pull(store, ref or parse(opts.image), platform=opts.platform, listener=progress)


def _image_config(image) -> dict:
    cfg = image.config or {}
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else None
    return inner if inner is not None else ({} if "rootfs" in cfg else cfg)


class _NotFast(Exception):
    """The sqlite3 fast path cannot serve this run (raised before any side effect)."""


class _OrmDB:
    """The store through engine.store.Store and the peewee models (any --db URL)."""

    def __init__(self, store):
        self.store = store
        self.containers_dir = str(store.containers_dir)

    def lock(self):
        return self.store.lock(exclusive=False)

    def open(self) -> None:
        self.store.db()

    def image(self, opts, progress):
        return _resolve_image(self.store, opts, progress)

    def snapshot(self, image):
        return _snapshot(self.store, image)

    def name_taken(self, name: str) -> bool:
        from container.schema import Container

        return Container.select().where(Container.name == name).exists()

    def insert(self, row: dict) -> None:
        import peewee

        from container.schema import Container, write_txn

        row = dict(row)
        row["image"] = row.pop("image_id")
        row["snapshot"] = row.pop("chain_id")
        try:
            with write_txn():
                Container.insert(**row).execute()
        except peewee.IntegrityError:
            raise RunError(f'Conflict. The container name "/{row["name"]}" is already in use') from None

    def update(self, cid: str, **fields) -> None:
        from container.schema import Container, write_txn

        with write_txn():
            Container.update(**fields).where(Container.id == cid).execute()

    def delete(self, cid: str) -> None:
        from container.schema import Container, write_txn

        with write_txn():
            Container.delete().where(Container.id == cid).execute()

    def remove_dir(self, cdir: str) -> None:
        _remove_dir(self.store, cdir)


_FAST_REF = None


def fast_reference(s: str) -> tuple[str, str] | None:
    """(repository, tag) as engine.reference.parse() normalises a *tag* reference, for the
    common spellings only (lowercase, no digest, no IPv6 host); None for anything else, which
    then takes the full parser. engine.reference builds a dataclass, and importing dataclasses
    costs `run` about 10% of its time. tests/test_run.py checks this against parse()."""
    global _FAST_REF
    if _FAST_REF is None:
        import re

        comp = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
        dom = r"(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])"
        _FAST_REF = re.compile(r"^((?:" + dom + r"(?:\." + dom + r")*(?::[0-9]+)?/)?" + comp + r"(?:/" + comp
                               + r")*)(?::([\w][\w.-]{0,127}))?$", re.ASCII)
    m = _FAST_REF.match(s)
    if not m or (len(s) == 64 and all(c in "0123456789abcdef" for c in s)):
        return None
    name, tag = m.group(1), m.group(2) or "latest"
    domain, _, rest = name.partition("/")
    if not rest or not (domain == "localhost" or "." in domain or ":" in domain):
        domain, path = "docker.io", name
    else:
        path = rest
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > 255:
        return None
    return f"{domain}/{path}", tag


def _is_sha256(d) -> bool:
    return isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") and \
        all(c in "0123456789abcdef" for c in d[7:])


class _LiteImage:
    def __init__(self, id: str, config: dict, chain_id: str):
        self.id, self.config, self.chain_id, self.diff_ids = id, config, chain_id, ()


_LITE_SCHEMA = "1"      # schema.SCHEMA_VERSION this SQL was written for (tests/test_run.py checks)
_LITE_COLUMNS = {"id", "name", "image_id", "image_ref", "chain_id", "command", "config", "isolation",
                 "rootfs_mode", "status", "exit_code", "pid", "created", "started", "finished"}


class _LiteDB:
    """`run`'s hot path on the default SQLite store with the stdlib only: sqlite3 instead of peewee,
    fcntl instead of container.cas. Importing peewee (with uuid, platform, logging, socket,
    decimal...) and cas (hashlib/OpenSSL) is about half of `container run`'s CPU time.

    It serves only the common case: an image found by a tag reference whose snapshot is cached,
    in a database with the schema version and container columns this SQL was written for.
    Anything else (a pull, --pull always, ids and digests, a snapshot to build, another --db)
    raises _NotFast before any side effect, and run() starts over on _OrmDB. The rows it writes
    are the ones _OrmDB writes (same columns, same datetime text)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.containers_dir = os.path.join(self.root, "containers")
        self.conn = None

    def lock(self):
        from contextlib import contextmanager

        @contextmanager
        def cm():                                   # = cas.lock.store_lock(root, exclusive=False)
            import fcntl

            fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                yield
            finally:
                os.close(fd)
        return cm()

    def open(self) -> None:
        import sqlite3

        db = os.path.join(self.root, "metadata.db")
        if not os.path.isfile(db) or not os.path.isdir(self.containers_dir):
            raise _NotFast
        try:
            c = sqlite3.connect(db, timeout=30, isolation_level=None)
            c.execute("PRAGMA foreign_keys = 1")
            c.execute("PRAGMA busy_timeout = 30000")
            c.execute("PRAGMA synchronous = normal")
            # We leave with os._exit() and never close (closing the last connection checkpoints:
            # ~10-30 ms). The next opener then rebuilds the WAL index by reading the whole WAL
            # (2 MB: ~7 ms), so keep the WAL short: checkpoint after 64 pages (every ~20 runs).
            c.execute("PRAGMA wal_autocheckpoint = 64")
            v = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            cols = {r[1] for r in c.execute("PRAGMA table_info(container)")}
        except sqlite3.Error:
            raise _NotFast from None
        if not v or v[0] != _LITE_SCHEMA or not _LITE_COLUMNS <= cols:
            raise _NotFast
        self.conn = c

    def image(self, opts, progress):
        s = opts.image
        if opts.pull == "always" or (4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s)):
            raise _NotFast                      # pull, or an image id (reference.looks_like_id)
        ref = fast_reference(s)
        if ref is None:
            raise _NotFast
        rows = self.conn.execute(
            "SELECT i.id, i.config_digest, i.chain_id FROM tag t JOIN image i ON i.id = t.image_id "
            "WHERE t.repository = ? AND t.tag = ? LIMIT 2", ref).fetchall()
        if len(rows) != 1 or not _is_sha256(rows[0][1]) or not _is_sha256(rows[0][2]):
            raise _NotFast                      # (the ORM path validates digests before they become paths)
        try:
            with open(os.path.join(self.root, "blobs", "sha256", rows[0][1][7:]), "rb") as f:
                config = json.loads(f.read())
        except (OSError, ValueError):
            raise _NotFast from None
        return _LiteImage(rows[0][0], config, rows[0][2])

    def snapshot(self, image):
        path = os.path.join(self.root, "snapshots", image.chain_id.split(":", 1)[-1])
        if not self.conn.execute("SELECT 1 FROM snapshot WHERE chain_id = ?", (image.chain_id,)).fetchone() \
                or not os.path.isdir(path):
            raise _NotFast
        return image.chain_id, path

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM container WHERE name = ?", (name,)).fetchone() is not None

    def _write(self, sql: str, args) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(sql, args)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def insert(self, row: dict) -> None:
        import sqlite3

        row = dict(row, exit_code=None, pid=None, created=str(utcnow()), started=None, finished=None)
        keys = list(row)
        try:
            self._write(f"INSERT INTO container ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                        [row[k] for k in keys])
        except sqlite3.IntegrityError:
            raise RunError(f'Conflict. The container name "/{row["name"]}" is already in use') from None

    def update(self, cid: str, **fields) -> None:
        keys = list(fields)
        vals = [str(v) if hasattr(v, "isoformat") else v for v in fields.values()]
        self._write(f"UPDATE container SET {', '.join(k + ' = ?' for k in keys)} WHERE id = ?", vals + [cid])

    def delete(self, cid: str) -> None:
        self._write("DELETE FROM container WHERE id = ?", (cid,))

    def remove_dir(self, cdir: str) -> None:
        if os.path.dirname(cdir) == self.containers_dir and len(os.path.basename(cdir)) == 64:
            _rmtree(cdir)                       # our own 64-hex id under ROOT/containers: no input


def _rmtree(path: str) -> None:
    """rm -rf of a container dir without following symlinks; upper dirs can hold mode-000 dirs
    owned by anyone (we are root, but a 000 dir still needs +x to be listed)."""
    try:
        it = os.scandir(path)
    except PermissionError:
        os.chmod(path, 0o700)
        it = os.scandir(path)
    except FileNotFoundError:
        return
    with it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                _rmtree(e.path)
            else:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass
    os.rmdir(path)


def run_auto(opts: RunOptions, *, store=None, root=None, db_url=None, progress=None) -> int:
    """run() on the sqlite3 fast path when it applies (default SQLite DB), else on the ORM."""
    if db_url is None and (store is None or store.db_url is None):
        if store is not None:
            lroot = store.root
        else:
            lroot = root or _default_root()
        try:
            return run(None, opts, progress=progress, _db=_LiteDB(lroot))
        except _NotFast:
            pass
    if store is None:
        from container.engine.store import Store

        store = Store(root, db_url)
    return run(store, opts, progress=progress)


def _default_root() -> str:
    """= engine.store.default_root(), without importing container.cas (tests check they agree)."""
    env = os.environ.get("CONTAINER_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/container"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "container")


def run(store, opts: RunOptions, *, progress=None, _db=None) -> int:
    """Create and run a container in the foreground; returns docker's exit status.

    Raises RunError (125), CommandNotExecutable (126), CommandNotFound (127) or another
    ContainerError before the command starts; nothing is left behind in that case."""
    if not sys.platform.startswith("linux"):
        raise RunError(f"container run needs Linux (namespaces, overlayfs, chroot); this host is "
                       f"{sys.platform}")
    from container.engine.runtime import isolate
    from container.engine.runtime.users import resolve_user

    isolation = isolate.choose_isolation(opts.isolation)
    reason = isolate.unavailable_reason(isolation)
    if reason:
        raise RunError(reason)
    if opts.network not in ("host", "none"):
        raise RunError(f"invalid --network {opts.network!r}: want host or none")
    if opts.name is not None and not _valid_name(opts.name):
        raise RunError(f"Invalid container name ({opts.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if opts.workdir is not None and not opts.workdir.startswith("/"):
        raise RunError(f"the working directory '{opts.workdir}' is invalid, it needs to be an absolute path")
    extra_env = user_env(opts)
    db = _db or _OrmDB(store)
    _trace("imports done, options checked")
    db.open()
    _trace("database open")
    image = db.image(opts, progress)
    _trace("image resolved")

    import fcntl

    cid = os.urandom(32).hex()
    cdir = os.path.join(db.containers_dir, cid)
    lock_fd = None
    row_made = False
    running = None
    try:
        with db.lock():
            chain_id, snap = db.snapshot(image)
            _trace("snapshot ready")
            cfg = _image_config(image)
            argv, entrypoint, cmd = process_args(cfg, opts)
            user_spec = opts.user if opts.user is not None else (cfg.get("User") or "")
            user = resolve_user(snap, user_spec)
            workdir = opts.workdir or cfg.get("WorkingDir") or "/"
            if not workdir.startswith("/"):
                workdir = "/" + workdir
            hostname = opts.hostname or cid[:12]
            env = container_env(cfg, extra_env, hostname, opts.tty, user.home)
            name = opts.name
            if name is None:
                for _ in range(20):
                    name = random_name()
                    if not db.name_taken(name):
                        break
                else:
                    name = f"{random_name()}_{cid[:6]}"
            elif db.name_taken(name):
                raise RunError(f'Conflict. The container name "/{name}" is already in use')
            os.mkdir(cdir, 0o700)
            lock_fd = os.open(os.path.join(cdir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            # CONTAINER_ROOTFS=copy forces the private copy (what we fall back to when the
            # kernel refuses the overlay mount): for tests and for filesystems overlay dislikes.
            if isolation == "namespaces" and os.environ.get("CONTAINER_ROOTFS") != "copy":
                mode = "overlay"
                from container.engine.runtime.rootfs import overlay_dirs

                dirs = overlay_dirs(cdir)
                rootfs = isolate.RootfsSpec(mode="overlay", path=dirs["path"], lower=str(snap),
                                            upper=dirs["upper"], work=dirs["work"])
            else:
                mode = "copy"
                rootfs = None
            config = {"env": env, "workdir": workdir, "user": user_spec, "hostname": hostname,
                      "entrypoint": entrypoint, "cmd": cmd, "tty": opts.tty,
                      "interactive": opts.interactive, "read_only": opts.read_only,
                      "network": opts.network, "rm": opts.rm, "lower": str(snap)}
            db.insert({"id": cid, "name": name, "image_id": image.id, "image_ref": opts.image,
                       "chain_id": chain_id, "command": json.dumps(argv), "config": json.dumps(config),
                       "isolation": isolation, "rootfs_mode": mode, "status": "created"})
            row_made = True
            _trace("container row created, rootfs prepared")
            if rootfs is None:
                from container.engine.runtime.rootfs import make_copy

                rootfs = isolate.RootfsSpec(mode="copy", path=make_copy(snap, cdir))
        spec = isolate.ProcessSpec(argv=argv, env=env, cwd=workdir, uid=user.uid, gid=user.gid,
                                   sgids=user.sgids, hostname=hostname, tty=opts.tty,
                                   interactive=opts.interactive, read_only=opts.read_only,
                                   network=opts.network)
        try:
            running = isolate.spawn(isolation, rootfs, spec)
        except (isolate.OverlayFailed, isolate.NamespacesUnavailable) as e:
            from container.engine.runtime.rootfs import make_copy

            if isinstance(e, isolate.NamespacesUnavailable):
                if opts.isolation != "auto":
                    raise
                isolation = "chroot"            # auto: where namespaces are refused, chroot
            if os.environ.get("CONTAINER_DEBUG"):
                sys.stderr.write(f"{e}; using {isolation} with a private copy\n")
            with db.lock():
                if rootfs.mode != "copy":
                    rootfs = isolate.RootfsSpec(mode="copy", path=make_copy(snap, cdir))
                db.update(cid, rootfs_mode="copy", isolation=isolation)
            running = isolate.spawn(isolation, rootfs, spec)
        _trace("container process exec'd")
        db.update(cid, status="running", pid=running.container_pid, started=utcnow())
        _trace("status running recorded")
    except BaseException:
        if running is not None:               # started, but we cannot record it: stop it
            import signal

            try:
                os.kill(running.container_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            running.wait()
        if row_made:
            try:
                db.delete(cid)
            except Exception:
                pass
        if lock_fd is not None:
            db.remove_dir(cdir)
            os.close(lock_fd)
        raise
    code = 125
    try:
        code = running.wait()
        _trace("container exited")
    finally:
        if opts.rm:
            db.delete(cid)                      # DB first, files second (design.md invariant 4)
            _trace("row deleted")
            db.remove_dir(cdir)
        else:
            db.update(cid, status="exited", exit_code=code, finished=utcnow())
        os.close(lock_fd)
        _trace("recorded / removed")
    return code


def _snapshot(store, image):
    """The image's snapshot: the cached tree when its row and dir exist (one query, and
    engine.layer.snapshot with the unpacker is not even imported), else ensure_snapshot builds it."""
    from container.schema import Snapshot

    chain = image.chain_id
    if chain:
        path = store.snapshot_path(chain)
        if Snapshot.select(Snapshot.chain_id).where(Snapshot.chain_id == chain).exists() and path.is_dir():
            return chain, path
    from container.engine.layer.snapshot import ensure_snapshot

    return ensure_snapshot(store, list(image.diff_ids))
