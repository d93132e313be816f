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
from container.engine.runtime.record import REQUIRED, Record

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV_FILE_MAX = 16 << 20
PULL_POLICIES = ("missing", "always", "never")


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
    env = _merge_env(env, list(cfg.get("Env") or []))
    env = _merge_env(env, extra)
    if not any(kv.startswith("HOME=") for kv in env):
        env.append(f"HOME={home}")
    return env
