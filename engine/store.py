"""The store: ROOT's folders, the blob store and the metadata database, opened once per command.

    ROOT/metadata.db  blobs/sha256/  ingest/  layers/<diffid hex>/  snapshots/<chainid hex>/
    containers/<id>/  volumes/<name>/_data  lock  rootless

ROOT/rootless marks a user's store ("<id mode> <host uid>", engine/locate.store_owner): root never
uses one, a user never uses root's or another user's, and a store made with subordinate ranges is
not used with a single id or the reverse (its files' owners would not match); check_owner() says
so in one line before anything is read or written.

A shared store (its metadata in a server database: PostgreSQL) keeps what belongs to one host
under ROOT/hosts/<host id>/ (containers/<id>/), and its store lock is a PostgreSQL advisory
lock instead of flock(ROOT/lock), which a shared filesystem may not honour across hosts
(docs/shared-store.md). A single-host SQLite store is laid out as above, unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from container.engine.errors import StoreError

# The shared store lock's PostgreSQL advisory lock key ('cntr' 'stor' as a 64-bit int)
STORE_LOCK = 0x636E747273746F72

TYPE_CHECKING = False        # (typing's own costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Iterator


def default_root() -> Path:
    """The store root when --root is not given (engine/locate.default_root)."""
    from container.engine.locate import default_root as where

    return Path(where())


def _nearly_full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20) or bool(st.f_files and st.f_favail == 0)


def _whose(path: Path) -> str:
    """ " (it belongs to uid N)" when the nearest existing dir of path is not ours, else ""."""
    p = path
    while True:
        try:
            uid = p.stat().st_uid
            break
        except FileNotFoundError:
            if p == p.parent:
                return ""
            p = p.parent
        except OSError:
            return " (it belongs to another user)"
    return "" if uid == os.geteuid() else " (it belongs to another user)"


class Store:
    def __init__(self, root: Path | str | None = None, db_url: str | None = None):
        self.root = Path(root) if root else default_root()
        self.root = Path(os.path.abspath(self.root))
        self.db_url = db_url
        from container.cas.blobs import BlobStore    # (here: default_root() alone, run's fast path, needs no hashlib)

        self.blobs = BlobStore(self.root)
        self._db = None
        self._host: str | None = None

    # -- hosts (a shared store) ---------------------------------------------------------------
    @property
    def shared(self) -> bool:
        """Metadata in a server database (PostgreSQL): other hosts may use this ROOT too."""
        url = (self.db_url or "").lower()
        return url.startswith(("postgresql://", "postgres://"))

    @property
    def host_id(self) -> str:
        """This machine's id (engine/locate.host_id: $CONTAINER_HOST_ID, /etc/machine-id)."""
        if self._host is None:
            from container.engine.locate import host_id

            self._host = host_id()
        return self._host

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @property
    def host_dir(self) -> Path:
        """This host's own state: ROOT/hosts/<host id>/ on a shared store, ROOT itself otherwise."""
        return self.hosts_dir / self.host_id if self.shared else self.root

    # -- paths -------------------------------------------------------------
    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def objects_dir(self) -> Path:
        """File-level dedupe's objects (engine/layer/dedupe.py): one link of each shared file."""
        return self.root / "objects"

    @property
    def containers_dir(self) -> Path:
        """This host's containers (ROOT/hosts/<host id>/containers on a shared store)."""
        return self.host_dir / "containers"

    def host_containers_dir(self, host: str | None) -> Path:
        """Another host's containers dir (None: this host's)."""
        if host is None or not self.shared or host == self.host_id:
            return self.containers_dir
        return self.hosts_dir / host / "containers"

    @property
    def volumes_dir(self) -> Path:
        """ROOT/volumes/: one <name>/ per volume, its content in <name>/_data (docker's layout)."""
        return self.root / "volumes"

    def volume_path(self, name: str) -> Path:
        """ROOT/volumes/<name>/ of a valid volume name (engine/volumes.valid_volume_name)."""
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise StoreError(f"invalid volume name {name!r}")
        return self.volumes_dir / name

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def db_path(self) -> Path:
        return self.root / "metadata.db"

    def layer_path(self, diff_id: str) -> Path:
        from container.cas import Digest

        return self.layers_dir / Digest.parse(diff_id).hex

    def snapshot_path(self, chain_id: str) -> Path:
        from container.cas import Digest

        return self.snapshots_dir / Digest.parse(chain_id).hex

    # -- opening -------------------------------------------------------------
    def check_owner(self) -> None:
        """Refuse a store of another kind or user (module docstring); mark a new rootless one."""
        from container.engine.locate import store_owner

        want = store_owner()
        marker = self.root / "rootless"
        try:
            have: str | None = marker.read_text().strip()
        except FileNotFoundError:
            have = None
        except OSError as e:
            raise StoreError(f"cannot use store root {self.root}: {e.strerror or e}{_whose(self.root)}") from None
        if have == want:
            return
        if have is None:
            if want is None:
                return
            if self.db_path.exists() or any(p.is_dir() and any(p.iterdir()) for p in
                                            (self.layers_dir, self.snapshots_dir) if p.exists()):
                raise StoreError(f"store {self.root} was created by root: a rootless user cannot use it "
                                 f"(use your own store, by default ~/.local/share/container, or --root DIR)")
            if self.root.is_dir():
                try:
                    marker.write_text(want + "\n")
                except OSError as e:
                    raise StoreError(f"cannot use store root {self.root}: {e.strerror or e}") from None
            return
        hmode, _, huid = have.partition(" ")
        if want is None:
            raise StoreError(f"store {self.root} is the rootless store of uid {huid}: root does not use it "
                             f"(run as that user, or give root a store of its own with --root)")
        wmode, _, wuid = want.partition(" ")
        if huid != wuid:
            raise StoreError(f"store {self.root} belongs to uid {huid}, not to uid {wuid}: use your own store "
                             f"(by default ~/.local/share/container) or --root DIR")
        raise StoreError(f"store {self.root} was made in {hmode} id mode, but this user now runs in {wmode} id "
                         f"mode (subordinate ranges in /etc/subuid, /etc/subgid changed): its owners would not "
                         f"match; use another --root, or restore the ranges")

    def ensure(self) -> None:
        self.check_owner()
        try:
            for d in (self.root, self.blobs.dir, self.ingest_dir, self.layers_dir, self.snapshots_dir,
                      self.host_dir, self.containers_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot use store root {self.root}: {e.strerror or e}{_whose(self.root)}") from None
        self.check_owner()
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"cannot use store root {self.root}: not writable{_whose(self.root)}")

    def db(self, *, readonly: bool = False):
        """Open (create, migrate) the metadata database on first use."""
        if self._db is None:
            from container.schema import DatabaseCorrupt, SchemaTooNew, open_database

            if not readonly:
                self.ensure()
            else:
                self.check_owner()
            url = self.db_url or str(self.db_path)
            try:
                self._db = open_database(url, readonly=readonly)
            except SchemaTooNew as e:
                raise StoreError(str(e)) from None
            except DatabaseCorrupt as e:
                if _nearly_full(self.root):     # sqlite says "disk I/O error" when -shm cannot grow
                    raise StoreError(f"no space left on device under {self.root}: cannot open the metadata "
                                     f"database ({e.__cause__ or e})") from None
                raise StoreError(str(e)) from None
            if self.shared and not readonly:
                self.heartbeat()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def lock(self, *, exclusive: bool, timeout: float | None = None) -> Iterator[None]:
        """Adders (pull, run) shared; sweepers (gc, prune) exclusive (design.md invariant 7)."""
        from container.cas.lock import store_lock

        self.ensure()
        if self.shared:
            with self._advisory_lock(exclusive=exclusive, timeout=timeout):
                yield
            return
        with store_lock(self.root, exclusive=exclusive, timeout=timeout):
            yield

    @contextmanager
    def _advisory_lock(self, *, exclusive: bool, timeout: float | None) -> Iterator[None]:
        """The store lock of a shared store: a session-level PostgreSQL advisory lock (shared for
        adders, exclusive for sweepers), released when this process's connection ends, a crash too."""
        import time

        db = self.db()
        kind = "" if exclusive else "_shared"
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while not db.execute_sql(f"SELECT pg_try_advisory_lock{kind}(%s)", (STORE_LOCK,)).fetchone()[0]:
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreError(f"the store {self.root} is busy (another host's "
                                 f"{'pull or run' if exclusive else 'gc or prune'} holds its lock)")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            db.execute_sql(f"SELECT pg_advisory_unlock{kind}(%s)", (STORE_LOCK,))

    @contextmanager
    def host_lock(self, name: str) -> Iterator[None]:
        """A lock that holds across the hosts of a shared store (a session-level PostgreSQL advisory
        lock keyed by `name`'s hash; released by a crash too); a no-op on a single-host store, where
        the flocks under ROOT are enough."""
        if not self.shared:
            yield
            return
        import hashlib

        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        db = self.db()
        db.execute_sql("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (key,))

    def heartbeat(self) -> None:
        """A shared store: record that this host is alive now (its host row; engine/leases.HostView reads it)."""
        if not self.shared:
            return
        from container.schema import Host, write_txn
        from container.schema.base import utcnow

        self.db()
        now = utcnow()
        with write_txn():
            Host.insert(id=self.host_id, heartbeat=now, pid=os.getpid()).on_conflict(
                conflict_target=[Host.id], update={Host.heartbeat: now, Host.pid: os.getpid()}).execute()
