"""The engine's facade: everything cli/ calls, and the only engine module cli/ imports.

    engine = Engine(root, db, storage=["ro:DIR"], warn=print)  # cheap: the store opens on first use
    ref = Engine.parse_reference("busybox")
    info = engine.pull(ref, listener=...) # ImageInfo; progress through engine/progress.PullListener
    engine.images(filters=) / image(name) / remove_image(name) / tag(source, target)
    engine.run(RunOptions(...), listener=...) -> exit status     (docker's 125/126/127 on failure)
    engine.create(RunOptions(...), listener=...) -> container id (made, not started)
    engine.containers(all=, filters=) / container(name) / remove_container(name, volumes=)
    engine.run_detached(opts) / start / stop / kill / wait / logs / systemd_unit (detached containers)
    engine.exec(engine.exec_options(container=, command=, ...)) -> exit status (docker exec's codes)
    engine.create_volume(name, labels=) / volumes() / volume(name) / remove_volume(name) / prune_volumes()
    engine.files(name, path) -> (diff_ids, nodes) / image_diff(a, b) / history(name) / packages(name)   (the contents index)
    engine.gc() / prune(...) / disk_usage() / fsck() / sql(query) / sql_schema() / storage_info()
    Engine.login(...) / Engine.logout(...)

The containers' half (run, create, containers, volumes, detached containers, exec) lives in
engine/service_containers.py, which Engine inherits: one facade, two modules.

What it returns is data: frozen *Info dataclasses and plain reports, never peewee models.
Every method is an error boundary (engine/errors.entry, boundary): what leaves is a ContainerError
subclass, with the exit code the CLI gives it. The engine's error and listener types are
re-exported here, so cli/ needs nothing else.

Imports are lazy, method by method: `container run` imports only what a run needs.
"""

from __future__ import annotations

from container.engine.errors import (  # noqa: F401  (re-exported for cli/)
    CommandNotExecutable, CommandNotFound, Conflict, ContainerError, ContainerNotFound, ImageNotFound,
    InvalidReference, RunError, StoreError, VolumeNotFound, boundary, entry, translate)
from container.engine.progress import NULL, PullListener, RunListener  # noqa: F401  (re-exported)
from container.engine.service_containers import ContainerVerbs

TYPE_CHECKING = False        # (typing's own import costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    import datetime as _dt
    from typing import Any, Callable

    from container.engine.image.catalog import ImageInfo, RemoveResult
    from container.engine.image.contents import Changes, Node
    from container.engine.image.history import HistoryRow
    from container.engine.image.reference import Reference
    from container.engine.maint.fsck import Report
    from container.engine.maint.gc import Plan
    from container.engine.maint.sql import TableDoc
    from container.engine.rostores import ReadOnlyStores
    from container.engine.store import Store
    from container.engine.transfer.load import Loaded
    from container.engine.transfer.push import Pushed


class Engine(ContainerVerbs):
    """One store (ROOT and its metadata database) and the operations on it (its containers'
    half: engine/service_containers.py)."""

    def __init__(self, root: Any = None, db: str | None = None, *, storage: list[str] | None = None,
                 warn: Callable[[str], None] | None = None):
        """storage: --storage specs (ro:DIR), else the config's [storage] readonly; warn hears about
        a read-only store that is skipped (missing, unreadable)."""
        self.root, self.db = root, db
        self.storage, self.warn = storage, warn
        self._store: Store | None = None
        self._readonly: ReadOnlyStores | None | bool = False      # False: not looked up yet

    def close(self) -> None:
        """Close the metadata database if it was opened (its WAL checkpointed); never raises."""
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                pass

    @property
    def store(self) -> Store:
        if self._store is None:
            from container.engine.store import Store

            self._store = Store(self.root, self.db_url())
        return self._store

    @property
    def store_if_open(self) -> Store | None:
        """The store if a method opened it already (run's fast path takes None and opens nothing)."""
        return self._store

    def db_url(self) -> str | None:
        """--db, else $CONTAINER_DB, else the config's [store] db (engine/locate); None: SQLite in ROOT."""
        if self._store is not None:
            return self._store.db_url
        from container.engine.locate import store_db_url

        return store_db_url(self.db)

    @property
    def readonly(self) -> ReadOnlyStores | None:
        """The read-only stores (engine/rostores; opened on first use), None when there are none
        (then engine/rostores is not even imported: run's fast path)."""
        if self._readonly is False:
            from container.engine.locate import readonly_stores

            paths = readonly_stores(self.storage)
            self._readonly = None
            if paths:
                from container.engine.rostores import ReadOnlyStores

                self._readonly = ReadOnlyStores(paths, self.warn)
        return self._readonly  # type: ignore[return-value]

    # -- references -------------------------------------------------------------------------------
    @staticmethod
    @entry
    def parse_reference(s: str) -> Reference:
        """docker's grammar and normalisation; InvalidReference ("invalid reference format: ...")."""
        from container.engine.image.reference import parse

        return parse(s)

    # -- images -------------------------------------------------------------------------------------
    @entry
    def pull(self, ref: Reference, *, platform: str | None = None, listener: PullListener | None = None,
             snapshot: bool | None = None) -> ImageInfo:
        """snapshot: build the merged rootfs as the last step (None: the config's snapshot_on_pull)."""
        from container.engine.pull import pull

        return pull(self.store, ref, platform=platform, listener=listener, snapshot=snapshot)

    @entry
    def images(self, *, filters: list[str] | None = None) -> list[ImageInfo]:
        """docker images [--filter KEY=VALUE...] (engine/filters.py: InvalidFilter for a bad one)."""
        from container.engine.filters import filter_images
        from container.engine.image.catalog import list_images

        imgs = list_images(self.store)
        ro = self.readonly
        if ro is not None:                  # then the read-only stores' (readonly_store set), not shadowed
            mine = {i.id for i in imgs}
            imgs += [i for i in ro.images() if i.id not in mine]
        return filter_images(imgs, filters, self._resolve)

    def _resolve(self, name: str) -> ImageInfo:
        from container.engine.image.catalog import resolve_image

        try:
            return resolve_image(self.store, name)
        except ImageNotFound:
            ro = self.readonly
            if ro is None:
                raise
            return ro.find(name)

    @entry
    def image(self, name: str) -> ImageInfo:
        """By reference or (short) image id, in the user's store, else a read-only store's; ImageNotFound."""
        return self._resolve(name)

    @entry
    def remove_image(self, name: str, *, force: bool = False) -> RemoveResult:
        """rmi in the user's store; a read-only store's image is a Conflict, never removed."""
        from container.engine.image.catalog import remove_image
        from container.engine.rostores import refuse_removal

        try:
            return remove_image(self.store, name, force=force)
        except ImageNotFound:
            ro = self.readonly
            if ro is not None:
                refuse_removal(ro, name)
            raise

    @entry
    def tag(self, source: str, target: str) -> str:
        from container.engine.image.catalog import tag_image

        return tag_image(self.store, source, target)

    # -- contents (the index: engine/image/contents.py; layers indexed late by engine/maint/reindex.py)
    def _indexed_image(self, name: str) -> ImageInfo:
        from container.engine.image.catalog import resolve_image
        from container.engine.image.contents import unindexed

        info = resolve_image(self.store, name)
        if unindexed(info.diff_ids):            # a layer unpacked before the index: walk its tree
            from container.engine.maint.reindex import ensure_indexed

            ensure_indexed(self.store, info.diff_ids)
        return info

    @entry
    def files(self, name: str, path: str | None = None, *,
              detail: bool = True) -> tuple[tuple[str, ...], list[Node]]:
        """(the image's diff_ids, its merged tree or the subtree at `path`, sorted by path);
        ImageNotFound, and ContainerError when `path` is not in it. detail=False: only path, type,
        link, layer. The common case reads through engine/image/quickfiles.py (no peewee)."""
        if self._store is None and self.db_url() is None:
            from container.engine.image.quickfiles import quick_files
            from container.engine.locate import default_root

            got = quick_files(str(self.root or default_root()), name, path, detail)
            if got is not None:
                return got
        from container.engine.image.contents import subtree

        info = self._indexed_image(name)
        return info.diff_ids, subtree(info.id, path, detail=detail)

    @entry
    def image_diff(self, a: str, b: str) -> tuple[ImageInfo, ImageInfo, Changes]:
        """What is added, changed, removed from image a's tree to image b's."""
        from container.engine.image.contents import diff, merged

        ia, ib = self._indexed_image(a), self._indexed_image(b)
        return ia, ib, diff(merged(ia.id), merged(ib.id))

    @entry
    def history(self, name: str) -> tuple[ImageInfo, list[HistoryRow]]:
        from container.engine.image.catalog import resolve_image
        from container.engine.image.history import history

        info = resolve_image(self.store, name)
        return info, history(info)

    @entry
    def packages(self, name: str) -> tuple[ImageInfo, list[dict[str, Any]]]:
        """The image's packages (and its os-release as a row of manager "os-release")."""
        from container.engine.image.contents import image_packages

        info = self._indexed_image(name)
        return info, image_packages(info.id)

    # -- moving images without a registry (engine/transfer) ---------------------------------------
    @entry
    def save(self, names: list[str], *, fmt: str = "docker-archive", output: Any = None,
             stream: Any = None) -> list[str]:
        """Images to a docker-archive / oci-archive tar (`output` path or a binary `stream`) or an
        oci-dir; the image ids written."""
        from container.engine.transfer.save import save

        return save(self.store, names, fmt=fmt, output=output, stream=stream)

    @entry
    def load(self, path: Any, *, stream: Any = None,
             listener: Callable[[str], None] | None = None) -> list[Loaded]:
        """Every image of an archive (a tar file or directory at `path`, or a tar read from the
        binary `stream`): [Loaded(id, names)]."""
        from container.engine.transfer.load import load

        return load(self.store, path, listener, stream=stream)

    @entry
    def export(self, name: str, *, output: Any = None, stream: Any = None) -> None:
        """A container's merged filesystem as a tar, to the file `output` or the binary `stream`."""
        from container.engine.containers import resolve_container
        from container.engine.transfer.archive import atomic_file
        from container.engine.transfer.filesystem import export_container

        info = resolve_container(self.store, name)
        snapshot = self.store.snapshot_path(info.chain_id) if info.chain_id else None
        if output is None:
            export_container(info, snapshot, stream)
            return
        with atomic_file(output) as f:
            export_container(info, snapshot, f)

    @entry
    def import_rootfs(self, path: Any, name: str | None, *, stream: Any = None, message: str = "") -> str:
        """A root filesystem tarball (plain, gzip, zstd) as a one-layer image; its id (sha256:...)."""
        from container.engine.transfer.filesystem import import_rootfs

        return import_rootfs(self.store, path, name, stream=stream, message=message)

    @entry
    def push(self, source: str, dest: str | None = None, *, listener: Callable[[str], None] | None = None,
             log: Callable[[str], None] | None = None) -> Pushed:
        """An image to a registry (existing blobs skipped, cross-repository mounts); what was done."""
        from container.engine.transfer.push import push

        return push(self.store, source, dest, listener=listener, log=log)

    # -- maintenance ------------------------------------------------------------------------------
    @entry
    def gc(self, *, dry_run: bool = False) -> Plan:
        from container.engine.maint.gc import gc

        return gc(self.store, dry_run=dry_run)

    @staticmethod
    @entry
    def prune_filters(filters: list[str] | None) -> _dt.datetime | None:
        """docker's --filter until=<timestamp|duration>: the cut-off time (None: no filter)."""
        from container.engine.maint.prune import parse_filters

        return parse_filters(filters)

    @entry
    def prune(self, *, containers: bool = False, images: str | None = None, until: _dt.datetime | None = None,
              dry_run: bool = False) -> Plan:
        from container.engine.maint.prune import prune

        return prune(self.store, containers=containers, images=images, until=until, dry_run=dry_run)

    @entry
    def disk_usage(self, *, verbose: bool = False) -> dict[str, Any]:
        from container.engine.maint.df import disk_usage

        return disk_usage(self.store, verbose=verbose)

    @entry
    def fsck(self, *, repair: bool = False, deep: bool = False) -> Report:
        from container.engine.maint.fsck import fsck

        return fsck(self.store, repair=repair, deep=deep)

    @entry
    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One read-only query: (column names, rows)."""
        from container.engine.maint.sql import query as run_query

        return run_query(self.store, query)

    @entry
    def storage_info(self) -> dict[str, Any]:
        """`container info`'s storage section (engine/rostores.storage_section): host id, shared or
        not, lease expiry, the read-only stores and their status."""
        from container.engine.rostores import storage_section

        return storage_section(self.store, self.readonly)

    @staticmethod
    def sql_schema() -> tuple[list[TableDoc], list[tuple[str, str]]]:
        """The documented schema and the example queries."""
        from container.engine.maint import sql

        return sql.schema(), list(sql.EXAMPLES)

    # -- registries (no store) --------------------------------------------------------------------
    @staticmethod
    @entry
    def registry_host(server: str | None) -> str:
        """`login [SERVER]`'s host: docker.io by default, scheme and path dropped; InvalidReference."""
        from container.engine.registry.credentials import normalize_server

        return normalize_server(server)

    @staticmethod
    @entry
    def login(server: str | None, username: str, password: str, *,
              log: Callable[[str], None] | None = None) -> str:
        """Check the credentials against the registry, then save them; returns where they went."""
        from container.engine.registry.client import verify_login
        from container.engine.registry.credentials import normalize_server, store_credentials

        host = normalize_server(server)
        verify_login(host, username, password, log=log)
        return store_credentials(host, username, password)

    @staticmethod
    @entry
    def logout(server: str | None) -> tuple[str, bool]:
        """(the server as docker names it, whether credentials were there to remove)."""
        from container.engine.registry.credentials import auth_key, erase_credentials, normalize_server

        host = normalize_server(server)
        return auth_key(host), erase_credentials(host)

    # -- rootless and `info` (engine/runtime/userns.py, engine/runtime/hostinfo.py) -----------
    @staticmethod
    def enter_user_namespace() -> str | None:
        """An ordinary user's commands run in its user namespace (entered once, first thing, while
        the process has one thread): the id mode ("ranges" | "single"), or None (root, or refused:
        `run` then says why). Not for `exec`, which joins its container's namespace instead."""
        from container.engine.runtime.userns import enter

        return enter()

    @entry
    def info(self) -> dict[str, dict[str, Any]]:
        """docker/podman `info`: {section: {key: value}} (store, storage, rootless, runtime, host)."""
        from container.engine.rostores import storage_section
        from container.engine.runtime.hostinfo import gather

        sections = gather(self.store)
        out: dict[str, dict[str, Any]] = {}
        for name, values in sections.items():
            out[name] = values
            if name == "store":       # the host id, shared or not, the read-only stores
                out["storage"] = storage_section(self.store, self.readonly)
        return out
