"""`run`'s fast path: the store without peewee or hashlib, for the common case only.

FastStore.open() says, before anything is read from the user or written to the store, whether it
can serve a run: the default SQLite database (no --db URL) of this schema version, an image named
by a tag reference (fast_reference), found once, whose snapshot is built. Anything else (a pull,
--pull always, an image id or digest, a snapshot to build) is the ORM path's (runtime/run.py's
OrmStore, runtime/ormstore.py): the choice is made once. The queries are schema/lite.py's; the lock, the guarded
delete and the clock are the ones the rest of the store uses (cas.lock, cas.fsutil, schema.clock).
"""

from __future__ import annotations

import os

from container.engine.errors import RunError
from container.engine.runtime.fastjson import loads
from container.schema.base import utcnow_text
from container.engine.image.quickref import fast_reference, is_sha256, looks_like_id
from container.engine.locate import lite_db
from container.schema.lite import IntegrityError

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from container.schema.lite import LiteDB

__all__ = ["FastStore", "FastImage", "fast_reference"]   # (fast_reference: tests/test_run.py checks it here)

class FastImage:
    """The image a fast run uses: the fields run() reads of an ImageInfo."""
    __slots__ = ("id", "config", "chain_id", "diff_ids")

    def __init__(self, id: str, config: dict, chain_id: str):
        self.id, self.config, self.chain_id, self.diff_ids = id, config, chain_id, ()


class FastStore:
    """The store as the fast path sees it: the interface of runtime/ormstore.py's OrmStore (lock, image,
    snapshot, name_taken, insert, update, delete, remove_dir), over schema/lite.py."""

    def __init__(self, root: str, db: LiteDB, image: FastImage, snapshot: str):
        self.root = root
        self.containers_dir = os.path.join(root, "containers")
        self.db = db
        self._image = image
        self._snapshot = snapshot

    @classmethod
    def open(cls, root: str, opts) -> FastStore | None:
        """A FastStore when this run is the fast path's, else None. Reads the database and the
        image's config blob, nothing else: no input is consumed and nothing is written."""
        s = opts.image
        if opts.pull == "always" or opts.platform or looks_like_id(s):
            return None                         # (--platform: the ORM path checks the image's)
        ref = fast_reference(s)
        if ref is None:
            return None
        root = os.path.abspath(root)
        if not os.path.isdir(os.path.join(root, "containers")) or not os.access(root, os.W_OK):
            return None                         # (a read-only store: the ORM path says so)
        db = lite_db(root)
        if db is None:
            return None
        found = cls._find(root, db, ref)
        if found is None:
            db.close()
            return None
        return cls(root, db, *found)

    @staticmethod
    def _find(root: str, db: LiteDB, ref: tuple[str, str]) -> tuple[FastImage, str] | None:
        rows = db.images_by_tag(*ref)
        if len(rows) != 1 or not is_sha256(rows[0][1]) or not is_sha256(rows[0][2]):
            return None                         # (the ORM path validates digests before they become paths)
        image_id, config_digest, chain_id = rows[0]
        try:
            with open(os.path.join(root, "blobs", "sha256", config_digest[7:]), "rb") as f:
                config = loads(f.read())
        except (OSError, ValueError):
            return None
        snap = os.path.join(root, "snapshots", chain_id[7:])
        if not db.has_snapshot(chain_id) or not os.path.isdir(snap):
            return None
        return FastImage(image_id, config, chain_id), snap

    def where(self) -> tuple[str, None]:
        """(ROOT, None: its SQLite DB): what a supervisor process opens the same store with."""
        return self.root, None

    def lock(self):
        from container.cas.lock import store_lock

        return store_lock(self.root, exclusive=False)

    def open_db(self) -> None:
        """(Opened by open().)"""

    def image(self, opts, progress) -> FastImage:
        return self._image

    def snapshot(self, image: FastImage) -> tuple[str, str]:
        """The snapshot open() found; under the store lock, checked again (only an rmi and a gc
        between the two could have removed it)."""
        if not self.db.has_snapshot(image.chain_id) or not os.path.isdir(self._snapshot):
            raise RunError(f"image {image.id} was removed while the container was being created")
        return image.chain_id, self._snapshot

    def name_taken(self, name: str) -> bool:
        return self.db.name_taken(name)

    @staticmethod
    def now() -> str:
        """The clock for started/finished, as the row stores it (text: no datetime import)."""
        return utcnow_text()

    def insert(self, row: dict) -> None:
        try:
            self.db.insert_container(row)
        except IntegrityError:
            raise RunError(f'Conflict. The container name "/{row["name"]}" is already in use') from None

    def update(self, cid: str, **fields) -> None:
        self.db.update_container(cid, **fields)

    def delete(self, cid: str, *, failed: bool = False) -> None:
        self.db.delete_container(cid)            # (no volumes: runs with mounts take the ORM path)

    def remove_dir(self, cdir: str) -> None:
        """ROOT/containers/<id>/ through the guarded delete (what is mounted there lives in the
        container's own mount namespace, gone with it)."""
        from container.cas.fsutil import remove_under

        remove_under(self.containers_dir, cdir)
