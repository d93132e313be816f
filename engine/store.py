"""The store: ROOT's folders, the blob store and the metadata database, opened once per command.

    ROOT/metadata.db  blobs/sha256/  ingest/  layers/<diffid hex>/  snapshots/<chainid hex>/
    containers/<id>/  volumes/<name>/_data  lock  rootless

ROOT/rootless marks a user's store ("<id mode> <host uid>", engine/locate.store_owner): root never
uses one, a user never uses root's or another user's, and a store made with subordinate ranges is
not used with a single id or the reverse (its files' owners would not match); check_owner() says
so in one line before anything is read or written.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from container.engine.errors import StoreError

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

    # -- paths -------------------------------------------------------------
    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

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
                      self.containers_dir):
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
        with store_lock(self.root, exclusive=exclusive, timeout=timeout):
            yield
