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
from container.schema.lite import IntegrityError, LiteDB

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _component(c: str) -> bool:
    """A path component: [a-z0-9]+ ((\\.|_|__|-+)[a-z0-9]+)* (the distribution grammar)."""
    n = len(c)
    if not n or c[0] not in _ALNUM:
        return False
    i = 1
    while i < n:
        ch = c[i]
        if ch in _ALNUM:
            i += 1
            continue
        if ch == ".":
            i += 1
        elif ch == "_":
            i += 2 if c[i + 1:i + 2] == "_" else 1
        elif ch == "-":
            while i < n and c[i] == "-":
                i += 1
        else:
            return False
        if i >= n or c[i] not in _ALNUM:
            return False
    return True


def _domain(d: str) -> bool:
    """host[:port], the host dot-separated labels of [a-z0-9-] that start and end alphanumeric."""
    host, colon, port = d.partition(":")
    if colon and not (port and port.isascii() and port.isdigit()):
        return False
    for label in host.split("."):
        if not label or label[0] not in _ALNUM or label[-1] not in _ALNUM or \
                not all(ch in _ALNUM or ch == "-" for ch in label):
            return False
    return True


def _split_tag(s: str) -> tuple[str, str | None] | None:
    """(name, tag or None) of name[:tag] when both are well formed (lowercase names only)."""
    slash = s.rfind("/")
    colon = s.rfind(":")
    tag = None
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
        if not tag or len(tag) > 128 or tag[0] in ".-" or not all(ch in _TAG for ch in tag):
            return None
    parts = s.split("/")
    if not (_component(parts[0]) or (len(parts) > 1 and _domain(parts[0]))):
        return None
    if not all(_component(p) for p in parts[1:]):
        return None
    return s, tag


def fast_reference(s: str) -> tuple[str, str] | None:
    """(repository, tag) as engine.image.reference.parse() normalises a *tag* reference, for the
    common spellings only (lowercase, no digest, no IPv6 host); None for anything else, which
    then takes the full parser. Neither that parser's dataclass nor re is imported: together
    they cost `run` about a sixth of its time. tests/test_run.py checks this against parse()."""
    m = _split_tag(s)
    if not m or (len(s) == 64 and all(c in "0123456789abcdef" for c in s)):
        return None
    name, tag = m[0], m[1] or "latest"
    domain, _, rest = name.partition("/")
    if not rest or not (domain == "localhost" or "." in domain or ":" in domain):
        domain, path = "docker.io", name
    else:
        path = rest
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if len(domain) + 1 + len(path) > 255:
        return None
    return f"{domain}/{path}", tag


def is_sha256(d) -> bool:
    """A well-formed "sha256:<64 hex>" (what may become a path under blobs/ or snapshots/)."""
    return isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") and \
        all(c in "0123456789abcdef" for c in d[7:])


def looks_like_id(s: str) -> bool:
    """An image id or id prefix (engine.image.reference.looks_like_id): the ORM path's to resolve."""
    return 4 <= len(s) <= 64 and all(c in "0123456789abcdef" for c in s)


def _owner_mark(root: str) -> str | None:
    """ROOT/rootless (engine/store.Store.check_owner), None when absent or unreadable."""
    try:
        with open(os.path.join(root, "rootless")) as f:
            return f.read().strip()
    except OSError:
        return None


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
        if opts.pull == "always" or looks_like_id(s):
            return None
        ref = fast_reference(s)
        if ref is None:
            return None
        root = os.path.abspath(root)
        if not os.path.isdir(os.path.join(root, "containers")) or not os.access(root, os.W_OK):
            return None                         # (a read-only store: the ORM path says so)
        from container.engine.locate import store_owner     # (loaded already: the facade's db URL)

        if _owner_mark(root) != store_owner():
            return None                         # root's store as a user or the reverse: the ORM path refuses
        db = LiteDB.open(os.path.join(root, "metadata.db"))
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
