"""User configuration: registries (mirrors, insecure), foreign-layer policy, the metadata database.
TOML, stdlib tomllib.

Looked up at $CONTAINER_CONFIG, else ~/.config/container/config.toml (XDG_CONFIG_HOME), and for
root also /etc/container/config.toml (the user file wins, key by key per registry):

    allow_foreign_layers = false          # fetch layers from descriptor urls (https only)
    foreign_layers_allow_private = false  # ... even when they point at loopback/private addresses

    [registries."docker.io"]
    mirrors = ["127.0.0.1:5000", "https://mirror.example.com"]
    [registries."registry.lan:5000"]
    insecure = true                       # plain HTTP / no TLS verification allowed
    allow_foreign_layers = true

    [store]
    db = "postgresql://user@dbhost/container"   # the metadata database (default: SQLite in ROOT)

The database URL: --db, else $CONTAINER_DB, else [store] db (engine/locate.store_db_url()).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from container.engine.errors import ContainerError


class ConfigError(ContainerError):
    pass


@dataclass(frozen=True)
class RegistryConfig:
    mirrors: tuple[str, ...] = ()
    insecure: bool = False
    allow_foreign_layers: bool | None = None


@dataclass(frozen=True)
class Config:
    registries: dict = field(default_factory=dict)      # host -> RegistryConfig
    allow_foreign_layers: bool = False
    foreign_layers_allow_private: bool = False
    snapshot_on_pull: bool = True          # pull builds the merged rootfs (ready to run)
    source: tuple[str, ...] = ()

    def registry(self, host: str) -> RegistryConfig:
        host = host.lower()
        if host in ("index.docker.io", "registry-1.docker.io"):
            host = "docker.io"
        return self.registries.get(host, RegistryConfig())

    def is_insecure(self, host: str) -> bool:
        return self.registry(host).insecure or any(
            _strip_scheme(m) == host.lower() and self.registry(r).insecure for r in self.registries
            for m in self.registry(r).mirrors)

    def foreign_allowed(self, host: str) -> bool:
        r = self.registry(host).allow_foreign_layers
        return self.allow_foreign_layers if r is None else r


def _strip_scheme(s: str) -> str:
    s = s.strip().lower()
    for p in ("https://", "http://"):
        if s.startswith(p):
            s = s[len(p):]
    return s.rstrip("/")


def config_paths() -> list[Path]:
    from container.engine.locate import config_files

    return [Path(p) for p in config_files()]


def _bool(v, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: expected true or false, got {v!r}")
    return v


def load(paths: list[Path] | None = None) -> Config:
    paths = config_paths() if paths is None else paths
    regs: dict[str, dict] = {}
    top: dict = {}
    used = []
    for p in paths:
        try:
            text = p.read_text()
        except FileNotFoundError:
            if os.environ.get("CONTAINER_CONFIG") and str(p) == os.environ["CONTAINER_CONFIG"]:
                raise ConfigError(f"config file {p} (CONTAINER_CONFIG) does not exist") from None
            continue
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {p}: {e}") from None
        import tomllib      # (only once a file exists: ~5 ms of every pull's start otherwise)

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid config file {p}: {e}") from None
        used.append(str(p))
        for k in ("allow_foreign_layers", "foreign_layers_allow_private", "snapshot_on_pull"):
            if k in data:
                top[k] = _bool(data[k], f"{p}: {k}")
        rs = data.get("registries", {})
        if not isinstance(rs, dict):
            raise ConfigError(f"{p}: [registries] must be a table")
        for host, r in rs.items():
            if not isinstance(r, dict):
                raise ConfigError(f'{p}: [registries."{host}"] must be a table')
            cur = regs.setdefault(_strip_scheme(host), {})
            if "mirrors" in r:
                m = r["mirrors"]
                if not isinstance(m, list) or not all(isinstance(x, str) and x for x in m):
                    raise ConfigError(f'{p}: registries."{host}".mirrors must be a list of hosts')
                cur["mirrors"] = tuple(x.strip().rstrip("/") for x in m)
            for k in ("insecure", "allow_foreign_layers"):
                if k in r:
                    cur[k] = _bool(r[k], f'{p}: registries."{host}".{k}')
    host_map = {}
    for h, d in regs.items():
        if h in ("index.docker.io", "registry-1.docker.io"):
            h = "docker.io"
        host_map[h] = RegistryConfig(**d)
    return Config(host_map, top.get("allow_foreign_layers", False), top.get("foreign_layers_allow_private", False),
                  top.get("snapshot_on_pull", True), tuple(used))

