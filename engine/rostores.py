"""Read-only stores (`--storage ro:DIR`, the config's [storage] readonly): stores an admin
populated (a pull with snapshot_on_pull) that this process reads and never writes, as podman's
additional image stores.

    DIR/metadata.db      opened file:...?mode=ro&immutable=1 (no lock, no -wal/-shm written; plain
                         mode=ro when a -wal was left unmerged, which immutable would not see)
    DIR/blobs/sha256/    configs read from here
    DIR/snapshots/<hex>/ a container's overlay lower, used in place (never copied)

Their images are listed after the user's own (ImageInfo.readonly_store = DIR), found by run,
inspect and save when the user's store has no such image, and refused by rmi; gc, prune and
fsck look only at the user's store, so nothing here is ever deleted. A container run from one
is recorded in the user's store alone: its row (image and snapshot NULL there, the store and
image id in its config JSON) and its own dir (upper, work). A store that is missing, unreadable
or not a container store is a one-line warning (status() says which) and is skipped.

Queries run on the user's models bound to the read-only database for their duration
(peewee's bind_ctx), so the catalog's own lookups (resolve_image, image_info) serve them.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from container.engine.errors import Conflict, ImageNotFound, RunError


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    path: str
    status: str                 # "ok", or why it is skipped ("missing", "unreadable: ...")
    images: int = 0


class ReadOnlyStore:
    """One read-only store: the catalog's store interface (root, blobs, db(), snapshot_path())."""

    def __init__(self, path: str):
        from container.cas.blobs import BlobStore

        self.root = Path(path)
        self.blobs = BlobStore(self.root)          # (reads only; its constructor writes nothing)
        self._db: Any = None

    def open(self) -> str:
        """Open the database immutable; "ok" or why not."""
        import sqlite3
        from urllib.parse import quote

        import peewee

        dbfile = self.root / "metadata.db"
        if not self.root.is_dir():
            return "missing" if not self.root.exists() else "not a directory"
        if not os.access(self.root, os.R_OK | os.X_OK):
            return "unreadable: permission denied"
        if not dbfile.is_file():
            return "not a container store (no metadata.db)"
        # immutable: no locks, no -shm; but it would not see a write-ahead log that was never merged
        # (a writer that did not close): then read-only with SQLite's locks, as the log needs.
        try:
            wal = os.stat(f"{dbfile}-wal").st_size > 0
        except OSError:
            wal = False
        uri = f"file:{quote(str(dbfile))}?mode=ro" + ("" if wal else "&immutable=1")
        db = peewee.SqliteDatabase(uri, uri=True, pragmas={"query_only": 1})
        try:
            db.connect()
            (version,) = db.execute_sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except (peewee.DatabaseError, sqlite3.Error, TypeError) as e:
            db.close()
            if wal:
                return ("unreadable: its metadata.db-wal was never merged and cannot be read here (its "
                        "admin closes every writer, or runs sqlite3 metadata.db 'PRAGMA wal_checkpoint')")
            return f"unreadable: {str(e).strip() or type(e).__name__}"
        from container.schema.base import SCHEMA_VERSION

        if not str(version).isdigit() or int(version) > SCHEMA_VERSION:
            db.close()
            return f"schema version {version} is newer than this container's ({SCHEMA_VERSION})"
        self._db = db
        return "ok"

    def db(self) -> Any:
        return self._db

    def snapshot_path(self, chain_id: str) -> Path:
        from container.cas import Digest

        return self.root / "snapshots" / Digest.parse(chain_id).hex

    @contextmanager
    def bound(self) -> Iterator[None]:
        """The models read this store's database inside the block."""
        from container.schema.models import ALL_MODELS

        with self._db.bind_ctx(ALL_MODELS, bind_refs=False, bind_backrefs=False):
            yield


class ReadOnlyStores:
    """The configured read-only stores of one command, opened on first use; `warn` hears, once,
    about each one that is skipped."""

    def __init__(self, paths: list[str], warn: Callable[[str], None] | None = None):
        self.paths = paths
        self.warn = warn
        self._open: list[ReadOnlyStore] | None = None
        self._status: list[StoreStatus] = []

    def __bool__(self) -> bool:
        return bool(self.paths)

    def stores(self) -> list[ReadOnlyStore]:
        if self._open is None:
            self._open = []
            for p in self.paths:
                ro = ReadOnlyStore(p)
                why = ro.open()
                if why == "ok":
                    self._open.append(ro)
                elif self.warn is not None:
                    self.warn(f"read-only store {p}: {why}; ignored")
                self._status.append(StoreStatus(p, why))
        return self._open

    def status(self) -> list[StoreStatus]:
        """Each configured store: "ok" with its image count, or why it is skipped."""
        from container.schema import Image

        self.stores()
        out = []
        for st in self._status:
            n = 0
            for ro in self._open or []:
                if str(ro.root) == st.path and st.status == "ok":
                    with ro.bound():
                        n = Image.select().count()
            out.append(dataclasses.replace(st, images=n))
        return out

    def images(self) -> list[Any]:
        """Every image of every store, marked with its store (ImageInfo.readonly_store)."""
        from container.schema import Image

        from container.engine.image.catalog import image_info

        out = []
        for ro in self.stores():
            with ro.bound():
                for img in Image.select().order_by(Image.pulled.desc()):
                    out.append(dataclasses.replace(image_info(ro, img), readonly_store=str(ro.root)))
        return out

    def find(self, ref_or_id: Any) -> Any:
        """The first store's image that `ref_or_id` names (ImageInfo marked); ImageNotFound."""
        from container.engine.image.catalog import resolve_image

        for ro in self.stores():
            with ro.bound():
                try:
                    return dataclasses.replace(resolve_image(ro, ref_or_id), readonly_store=str(ro.root))
                except ImageNotFound:
                    continue
        raise ImageNotFound(f"No such image: {ref_or_id}")

    def snapshot(self, image: Any) -> tuple[str, Path]:
        """(chain id, the store's snapshot dir) of a read-only store's image: the overlay lower, in
        place. A store whose image has no snapshot cannot be run from (it is never built here)."""
        from container.schema import Snapshot

        for ro in self.stores():
            if str(ro.root) != image.readonly_store:
                continue
            path = ro.snapshot_path(image.chain_id) if image.chain_id else None
            with ro.bound():
                row = image.chain_id and Snapshot.get_or_none(Snapshot.chain_id == image.chain_id)
            if path is not None and row and path.is_dir():
                return image.chain_id, path
        raise RunError(f"image {image.repo_tags[0] if image.repo_tags else image.short_id} in the read-only "
                       f"store {image.readonly_store} has no snapshot to run from (its admin pulls with "
                       "snapshot_on_pull = true); pull it into your own store to run it")


def refuse_removal(stores: ReadOnlyStores, name: str) -> None:
    """rmi of a name only a read-only store has: Conflict; ImageNotFound when none has it."""
    img = stores.find(name)
    raise Conflict(f"cannot remove {name}: image {img.short_id} is in the read-only store "
                   f"{img.readonly_store}")


def storage_section(store: Any, readonly: ReadOnlyStores | None) -> dict[str, Any]:
    """`container info`'s storage section: this host's id, whether the store is shared (its
    metadata in a server database, per-host state under ROOT/hosts/<id>/), the lease expiry, and
    each read-only store with its status."""
    from container.engine import leases
    from container.engine.locate import host_id

    shared = store.shared
    return {
        "host_id": host_id(),
        "shared": shared,
        "host_dir": str(store.host_dir) if shared else "",
        "locks": "postgresql advisory locks" if shared else f"flock {store.root / 'lock'}",
        "lease_expiry_seconds": leases.expiry_seconds(),
        "readonly_stores": [{"path": s.path, "status": s.status, "images": s.images}
                            for s in (readonly.status() if readonly is not None else [])],
    }
