"""Where things are: the store root (--root, $CONTAINER_ROOT, the default), the runtime dir, the
user's config files, the metadata database URL that --db, $CONTAINER_DB or the config's [store] db
names, the read-only stores (--storage ro:DIR, the config's [storage] readonly) and this machine's
host id.
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


def lite_db(root: str):
    """ROOT's metadata.db through schema/lite.py (no peewee) when the ORM path would open it as it
    is: ROOT/rootless names this user's store (engine/store.Store.check_owner) and the schema version
    is current; else None (a store of root's as a user or the reverse, no DB, a migration due)."""
    try:
        with open(os.path.join(root, "rootless")) as f:
            mark: str | None = f.read().strip()
    except OSError:
        mark = None
    if mark != store_owner():
        return None
    from container.schema.lite import LiteDB

    return LiteDB.open(os.path.join(root, "metadata.db"))


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
    for p, raw in _configs(b"store"):        # later files win, as in registry/config.load
        found = _store_db(p, raw) or found
    return found


def dedupe_enabled() -> bool:
    """File-level dedupe at unpack (docs/contents.md): $CONTAINER_DEDUPE, else the config's
    [store] dedupe (a boolean), else on."""
    env = os.environ.get("CONTAINER_DEDUPE")
    if env is not None and env.strip():
        return env.strip().lower() not in ("0", "no", "false", "off")
    found = True
    for p, raw in _configs(b"dedupe"):        # later files win
        st = _toml(p, raw).get("store", {})
        if isinstance(st, dict) and "dedupe" in st:
            if not isinstance(st["dedupe"], bool):
                from container.engine.errors import StoreError

                raise StoreError(f"{p}: store.dedupe must be true or false")
            found = st["dedupe"]
    return found


def _configs(word: bytes) -> list[tuple[str, bytes]]:
    """(path, bytes) of the config files that mention `word` (the others are not parsed)."""
    out = []
    for p in config_files():
        try:
            with open(p, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if word in raw:
            out.append((p, raw))
    return out


def config_tables(word: bytes) -> list[tuple[str, dict]]:
    """(path, parsed TOML) of the config files that mention `word`, in order (later files win);
    a file that does not parse is a StoreError naming it."""
    return [(p, _toml(p, raw)) for p, raw in _configs(word)]


def _toml(path: str, raw: bytes) -> dict:
    import tomllib

    from container.engine.errors import StoreError

    try:
        return tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise StoreError(f"invalid config file {path}: {e}") from None


def readonly_stores(explicit: list[str] | None) -> list[str]:
    """The read-only stores' directories: every --storage ro:DIR, else the config's
    [storage] readonly = ["DIR", ...] (the last file that sets it wins). Bad specs: StoreError."""
    from container.engine.errors import StoreError

    if explicit:
        out = []
        for spec in explicit:
            kind, sep, path = spec.partition(":")
            if not sep or kind != "ro" or not path.strip():
                raise StoreError(f"--storage expects ro:DIR (a read-only store), got {spec!r}")
            out.append(os.path.abspath(path.strip()))
        return out
    found: list[str] = []
    for p, raw in _configs(b"storage"):
        st = _toml(p, raw).get("storage", {})
        if not isinstance(st, dict):
            raise StoreError(f"{p}: [storage] must be a table")
        if "readonly" in st:
            ro = st["readonly"]
            if not isinstance(ro, list) or not all(isinstance(x, str) and x.strip() for x in ro):
                raise StoreError(f"{p}: storage.readonly must be a list of directories (strings)")
            found = [os.path.abspath(os.path.expanduser(x.strip())) for x in ro]
    return found


DEFAULT_LEASE_EXPIRY = 900.0


def lease_expiry() -> float:
    """Seconds after its last heartbeat that another host's leases and containers expire (a shared
    store): $CONTAINER_LEASE_EXPIRY, else the config's [storage] lease_expiry, else 900."""
    from container.engine.errors import StoreError

    raw: object = os.environ.get("CONTAINER_LEASE_EXPIRY", "").strip() or None
    where = "CONTAINER_LEASE_EXPIRY"
    if raw is None:
        for p, text in _configs(b"lease_expiry"):
            st = _toml(p, text).get("storage", {})
            if isinstance(st, dict) and "lease_expiry" in st:
                raw, where = st["lease_expiry"], f"{p}: storage.lease_expiry"
    if raw is None:
        return DEFAULT_LEASE_EXPIRY
    try:
        v = float(raw)       # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = -1.0
    if isinstance(raw, bool) or not 0 < v < 1e9:
        raise StoreError(f"{where}: lease expiry must be a positive number of seconds, got {raw!r}")
    return v


def host_id() -> str:
    """This machine's id: $CONTAINER_HOST_ID, else /etc/machine-id (systemd's, stable across
    reboots), else /var/lib/dbus/machine-id, else the hostname. Letters, digits, '-', '_', '.'."""
    hid = os.environ.get("CONTAINER_HOST_ID", "").strip()
    if not hid:
        for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                with open(p) as f:
                    hid = f.read().strip()
            except OSError:
                continue
            if hid:
                break
    if not hid:
        hid = os.uname().nodename
    if not hid or hid in (".", "..") or not all(c.isalnum() or c in "-_." for c in hid) or len(hid) > 64:
        from container.engine.errors import StoreError

        raise StoreError(f"invalid host id {hid!r} (CONTAINER_HOST_ID): letters, digits, '-', '_', '.'; "
                         "at most 64")
    return hid


def _store_db(path: str, raw: bytes) -> str | None:
    """The [store] db of one config file (TOML), checked."""
    from container.engine.errors import StoreError

    data = _toml(path, raw)
    st = data.get("store", {})
    if not isinstance(st, dict):
        raise StoreError(f"{path}: [store] must be a table")
    if "db" not in st:
        return None
    if not isinstance(st["db"], str) or not st["db"].strip():
        raise StoreError(f"{path}: store.db must be a database URL or path (a string)")
    return st["db"].strip()
