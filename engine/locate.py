"""Where things are: the store root (--root, $CONTAINER_ROOT, the default), the runtime dir, the
user's config files, and the metadata database URL that --db, $CONTAINER_DB or the config's [store] db names.
os only (no pathlib, no dataclasses): run's fast path asks, and config.py is parsed only when a
config file mentions a store.
"""

from __future__ import annotations

import os

# Set by engine/runtime/userns.enter() in a rootless process (and inherited by its children):
# "<id mode> <host uid>". Inside that namespace the process is uid 0, yet it is not root.
USERNS_ENV = "_CONTAINER_USERNS"


def rootless() -> bool:
    """True for an ordinary user, in or out of its user namespace."""
    return os.geteuid() != 0 or bool(os.environ.get(USERNS_ENV))


def store_owner() -> str | None:
    """Who a store made now belongs to: None for root, else "<id mode> <host uid>" (the content of
    ROOT/rootless; a user outside its namespace counts as single id)."""
    if os.geteuid() != 0:
        return f"single {os.geteuid()}"
    return os.environ.get(USERNS_ENV) or None


def default_root() -> str:
    """$CONTAINER_ROOT, else /var/lib/container for root, else the XDG data dir
    ($XDG_DATA_HOME/container, by default ~/.local/share/container)."""
    env = os.environ.get("CONTAINER_ROOT")
    if env:
        return env
    if not rootless():
        return "/var/lib/container"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "container")


def runtime_dir(root: str) -> str:
    """Where a store's runtime state goes (what does not outlive a reboot): for a user
    $XDG_RUNTIME_DIR/container when that dir is the user's, else ROOT/run; for root /run/container.
    (The store lock stays in ROOT: every process using the store must see the same one, whatever
    session it comes from.)"""
    if not rootless():
        return "/run/container"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and os.access(xdg, os.W_OK) and st.st_mode & 0o077 == 0:
            return os.path.join(xdg, "container")
    return os.path.join(root, "run")


def config_files() -> list[str]:
    """$CONTAINER_CONFIG, else (for root) /etc/container/config.toml and then the user's
    $XDG_CONFIG_HOME/container/config.toml, which wins key by key."""
    env = os.environ.get("CONTAINER_CONFIG")
    if env:
        return [env]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths = []
    if not rootless():
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
    found = None
    for p in config_files():                 # later files win, as in registry/config.load
        try:
            with open(p, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if b"store" in raw:
            found = _store_db(p, raw) or found
    return found


def _store_db(path: str, raw: bytes) -> str | None:
    """The [store] db of one config file (TOML), checked."""
    import tomllib

    from container.engine.errors import StoreError

    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise StoreError(f"invalid config file {path}: {e}") from None
    st = data.get("store", {})
    if not isinstance(st, dict):
        raise StoreError(f"{path}: [store] must be a table")
    if "db" not in st:
        return None
    if not isinstance(st["db"], str) or not st["db"].strip():
        raise StoreError(f"{path}: store.db must be a database URL or path (a string)")
    return st["db"].strip()
