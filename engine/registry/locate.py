"""Where the user's config files are, and the metadata database URL that --db, $CONTAINER_DB or
the config's [store] db names. os only (no pathlib, no dataclasses): run's fast path asks, and
config.py is parsed only when a config file mentions a store.
"""

from __future__ import annotations

import os


def config_files() -> list[str]:
    """$CONTAINER_CONFIG, else (for root) /etc/container/config.toml and then the user's
    $XDG_CONFIG_HOME/container/config.toml, which wins key by key."""
    env = os.environ.get("CONTAINER_CONFIG")
    if env:
        return [env]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths = []
    if os.geteuid() == 0:
        paths.append("/etc/container/config.toml")
    paths.append(os.path.join(base, "container", "config.toml"))
    return paths


def store_db_url(explicit: str | None) -> str | None:
    """The metadata database: --db, else $CONTAINER_DB, else the config file's [store] db, else None
    (SQLite in ROOT)."""
    if explicit:
        return explicit
    env = os.environ.get("CONTAINER_DB")
    if env:
        return env
    for p in config_files():
        try:
            with open(p, "rb") as f:
                if b"store" not in f.read():
                    continue
        except OSError:
            continue
        from container.engine.registry.config import load

        return load().db
    return None
