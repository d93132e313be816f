"""docker run's options and the process they describe: RunOptions, their checks, and how argv and
the environment are computed from the image's config (moby daemon/create + runc).

- argv = Entrypoint + (user args, or Cmd when there are none). `--entrypoint X` replaces the
  Entrypoint and clears the image's Cmd; `--entrypoint ""` clears the Entrypoint only.
- Env = PATH (default when the image sets none), HOSTNAME, TERM=xterm with -t, the image's Env,
  then --env-file and -e (later wins, in place); HOME from /etc/passwd (else /) when unset.
- WorkingDir: -w, else the image's, else /; must be absolute; created when missing.
- User: -u, else the image's; resolved in the image's /etc/passwd and /etc/group (runtime/users.py).

Portable and cheap to import (os only): it is on `run`'s hot path.
"""

from __future__ import annotations

import os

from container.engine.errors import RunError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_FILE_MAX = 16 << 20
PULL_POLICIES = ("missing", "always", "never")


# -- Record: keyword-initialised value classes for the run hot path --------------------------------
# `dataclasses` imports `inspect` (with ast, dis, tokenize): about a tenth of `container run`'s CPU
# time, for a handful of option bags. Subclasses list their fields with defaults in FIELDS; a
# default that is a type (list, tuple, dict) is called for a fresh value.

class Record:
    FIELDS: dict = {}
    __slots__ = ()

    def __init__(self, **kw):
        for k, v in self.FIELDS.items():
            if k in kw:
                v = kw.pop(k)
            elif v is _REQUIRED:
                raise TypeError(f"{type(self).__name__}: missing {k}")
            elif isinstance(v, type):
                v = v()
            object.__setattr__(self, k, v)
        if kw:
            raise TypeError(f"{type(self).__name__}: unexpected {', '.join(kw)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS) + ")"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose: mutable, compared by value


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


_REQUIRED = REQUIRED = _Required()


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
        detach=False,               # -d: a supervisor process holds the container (runtime/supervisor.py)
        restart="no",               # no | on-failure[:N] | always | unless-stopped
        init=False,                 # --init: a reaper as the container's pid 1
        log_opts=list,              # --log-opt max-size=10m / max-file=3
        volumes=list,               # -v SPEC (runtime/mounts.py)
        mounts=list,                # --mount SPEC
        tmpfs=list,                 # --tmpfs DST[:OPTS]
    )
    __slots__ = tuple(FIELDS)
    image: str
    command: list[str]
    name: str | None
    rm: bool
    hostname: str | None
    env: list[str]
    env_files: list[str]
    workdir: str | None
    user: str | None
    entrypoint: str | None
    interactive: bool
    tty: bool
    read_only: bool
    pull: str
    isolation: str
    network: str
    platform: str | None
    detach: bool
    restart: str
    init: bool
    log_opts: list[str]
    volumes: list[str]
    mounts: list[str]
    tmpfs: list[str]


def restart_policy(spec: str) -> tuple[str, int]:
    """--restart's (policy, retry limit; 0 = unlimited): no, always, unless-stopped,
    on-failure[:N] (docker's spellings); RunError for anything else."""
    name, _, count = spec.partition(":")
    if name in ("no", "always", "unless-stopped") and not count:
        return name, 0
    if name == "on-failure" and (not count or count.isdigit()):
        return name, int(count or 0)
    raise RunError(f"invalid restart policy {spec!r}: want no, always, unless-stopped or on-failure[:max-retries]")


def parse_size(s: str) -> int:
    """docker's sizes (--log-opt max-size): 100, 10k, 20m, 1g (1024-based, a trailing b allowed)."""
    t = s.strip().lower().removesuffix("b")
    mult = 1
    if t[-1:] in ("k", "m", "g"):
        mult = 1 << (10 * ("kmg".index(t[-1]) + 1))
        t = t[:-1]
    if not t.isdigit() or int(t) <= 0:
        raise RunError(f"invalid size {s!r}: want a positive number of bytes, or with k, m or g")
    return int(t) * mult


def log_options(items: list[str], base: dict | None = None) -> dict:
    """--log-opt max-size=..,max-file=.. over `base` (the config file's [log] table, runtime/logs.py):
    {"max_size": bytes, "max_file": count}."""
    out = {"max_size": 20 << 20, "max_file": 5}
    out.update(base or {})
    for item in items:
        for kv in item.split(","):
            k, eq, v = kv.partition("=")
            if k == "max-size" and eq:
                out["max_size"] = parse_size(v)
            elif k == "max-file" and eq and v.isdigit() and int(v) >= 1:
                out["max_file"] = int(v)
            else:
                raise RunError(f"invalid --log-opt {kv!r}: want max-size=SIZE or max-file=N (N >= 1)")
    return out


def valid_name(name: str) -> bool:
    """A container name docker accepts: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters."""
    import re

    return re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) is not None and len(name) <= 128


def check_options(opts: RunOptions) -> None:
    """The checks that read nothing: RunError for a value docker run would refuse."""
    if opts.network not in ("host", "none"):
        raise RunError(f"invalid --network {opts.network!r}: want host or none")
    if opts.name is not None and not valid_name(opts.name):
        raise RunError(f"Invalid container name ({opts.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if opts.workdir is not None and not opts.workdir.startswith("/"):
        raise RunError(f"the working directory '{opts.workdir}' is invalid, it needs to be an absolute path")
    if opts.pull not in PULL_POLICIES:
        raise RunError(f"invalid --pull {opts.pull!r}: want missing, always or never")
    if opts.restart != "no":
        restart_policy(opts.restart)
        if opts.rm:
            raise RunError("Conflicting options: --restart and --rm")
    if opts.log_opts:
        log_options(opts.log_opts)
    if opts.volumes or opts.mounts or opts.tmpfs:
        from container.engine.runtime.mounts import parse_all

        parse_all(opts)


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
    """--env-file then -e, as K=V items. Reads the env files: call it once per run (a file may be
    /dev/stdin)."""
    out: list[str] = []
    for p in opts.env_files:
        out += parse_env_file(p)
    for e in opts.env:
        item = _env_item(e, "-e")
        if item is not None:
            out.append(item)
    return out


def merge_env(base: list[str], extra: list[str]) -> list[str]:
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


def image_config(config: dict | None) -> dict:
    """The process part of an image config (its "config" object; a bare one is taken as is)."""
    cfg = config or {}
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else None
    return inner if inner is not None else ({} if "rootfs" in cfg else cfg)


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
    env = merge_env(env, list(cfg.get("Env") or []))
    env = merge_env(env, extra)
    if not any(kv.startswith("HOME=") for kv in env):
        env.append(f"HOME={home}")
    return env


# -- random container names, docker's style (adjective_scientist; moby pkg/namesgenerator) --------

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
