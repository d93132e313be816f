"""run's ORM path: the store through engine.store.Store and the peewee models (any --db URL,
pulls, ids and digests, snapshot builds, read-only stores). The interface runtime/fast.py's
FastStore has too; runtime/run.py chooses one of the two once (choose_store).
"""

from __future__ import annotations

from container.engine.errors import RunError
from container.engine.runtime.options import RunOptions


class OrmStore:
    """The store through engine.store.Store and the peewee models (any --db URL); the interface
    runtime/fast.py's FastStore has too. `readonly`: engine/rostores.ReadOnlyStores, where an
    image the store lacks is looked for (and run from in place) before it is pulled."""

    def __init__(self, store, readonly=None):
        self.store = store
        self.readonly = readonly
        self.containers_dir = str(store.containers_dir)
        self.host = store.host_id if store.shared else None     # a shared store: rows name their host

    def keep_alive(self):
        """A shared store: beat this host's heartbeat while the container runs (a daemon thread; the
        Event returned stops it when set), so other hosts' gc keeps its container and snapshot. None otherwise."""
        if self.host is None:
            return None
        import threading

        from container.engine.leases import expiry_seconds

        stop = threading.Event()
        every = max(0.2, expiry_seconds() / 3)

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.store.heartbeat()
                except Exception:           # a lost database: the next beat retries
                    pass
        threading.Thread(target=beat, daemon=True, name="heartbeat").start()
        return stop

    def lock(self):
        return self.store.lock(exclusive=False)

    def where(self) -> tuple[str, str | None]:
        """(ROOT, the DB URL or None): what a supervisor process opens the same store with."""
        return str(self.store.root), self.store.db_url

    def open_db(self) -> None:
        self.store.db()

    def image(self, opts: RunOptions, progress):
        return resolve_or_pull(self.store, opts, progress, self.readonly)

    def snapshot(self, image):
        """The image's snapshot: the cached tree when its row and dir exist (one query, and
        engine.layer.snapshot with the unpacker is not even imported), else ensure_snapshot builds it.
        A read-only store's image: that store's snapshot, in place."""
        from container.schema import Snapshot

        if getattr(image, "readonly_store", ""):
            return self.readonly.snapshot(image)
        chain = image.chain_id
        if chain:
            path = self.store.snapshot_path(chain)
            if Snapshot.select(Snapshot.chain_id).where(Snapshot.chain_id == chain).exists() and path.is_dir():
                return chain, path
        from container.engine.layer.snapshot import ensure_snapshot

        return ensure_snapshot(self.store, list(image.diff_ids))

    @staticmethod
    def now():
        from container.schema.base import utcnow

        return utcnow()

    def name_taken(self, name: str) -> bool:
        from container.schema import Container

        return Container.select().where(Container.name == name).exists()

    def insert(self, row: dict) -> None:
        import peewee

        from container.schema import Container, write_txn

        row = dict(row)
        row["image"] = row.pop("image_id")
        row["snapshot"] = row.pop("chain_id")
        try:
            with write_txn():
                Container.insert(**row).execute()
        except peewee.IntegrityError:
            raise RunError(f'Conflict. The container name "/{row["name"]}" is already in use') from None

    def update(self, cid: str, **fields) -> None:
        from container.schema import Container, write_txn

        with write_txn():
            Container.update(**fields).where(Container.id == cid).execute()

    def delete(self, cid: str, *, failed: bool = False) -> None:
        """The row; then the volumes that go with it (engine/volumes.release: anonymous ones, and
        when a failed create is undone, those made for it)."""
        from container.engine.volumes import release, remove_unused
        from container.schema import Container, write_txn

        gone = release(self.store, cid, failed=failed)
        with write_txn():
            Container.delete().where(Container.id == cid).execute()
        remove_unused(self.store, gone)

    def remove_dir(self, cdir: str) -> None:
        """ROOT/containers/<id>/ through the guarded delete (what is mounted there lives in the
        container's own mount namespace, gone with it)."""
        from container.cas.fsutil import remove_under

        remove_under(self.containers_dir, cdir)


def resolve_or_pull(store, opts: RunOptions, progress=None, readonly=None):
    """The image to run, as --pull says: the stored one (the user's store, else a read-only
    store's), else (missing) pulled; always pulled."""
    from container.engine.errors import ImageNotFound, InvalidReference
    from container.engine.image.catalog import resolve_image
    from container.engine.image.reference import looks_like_id, parse

    try:                # parsed once; an id, or what does not parse, is looked up as typed
        ref = None if opts.pull == "never" or looks_like_id(opts.image) else parse(opts.image)
    except InvalidReference:
        ref = None
    if opts.pull != "always":
        found = None
        try:
            found = resolve_image(store, ref or opts.image)
        except ImageNotFound:
            if readonly:
                try:
                    found = readonly.find(ref or opts.image)
                except ImageNotFound:
                    pass
            if found is None and opts.pull == "never":
                raise
        if found is not None:
            if _platform_fits(found, opts.platform):
                return found
            # --platform names another platform than the stored image's: pulled, as podman does
            # (by id, or with --pull=never, there is nothing to pull: docker's error)
            if opts.pull == "never" or ref is None:
                from container.engine.image.platform import other_platform

                raise other_platform(opts.image, opts.platform or "", found.platform)
        else:
            ref = ref or parse(opts.image)      # an invalid reference is that error alone, as in docker
            if progress is not None:
                progress.image_missing(opts.image)    # the CLI says "Unable to find image ... locally"
    from container.engine.pull import pull

    return pull(store, ref or parse(opts.image), platform=opts.platform, listener=progress)


def _platform_fits(img, platform: str | None) -> bool:
    """Whether the stored image `img` serves `run --platform platform` (no --platform: any does)."""
    if not platform or not img.os or not img.architecture:
        return True                 # (a config without os/architecture: pull took it as wanted)
    from container.engine.image import platform as _platform
    from container.engine.image.manifest import Platform

    want = _platform.parse(platform)
    return _platform.rank(want, Platform(img.os, img.architecture, img.variant or "")) is not None
