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
    engine.files(name, path) / image_diff(a, b) / history(name) / packages(name)   (the contents index)
    engine.gc() / prune(...) / disk_usage() / fsck() / sql(query) / sql_schema() / storage_info()
    Engine.login(...) / Engine.logout(...)

What it returns is data: frozen *Info dataclasses and plain reports, never peewee models.
Every method is an error boundary (engine/errors.boundary): what leaves is a ContainerError
subclass, with the exit code the CLI gives it. The engine's error and listener types are
re-exported here, so cli/ needs nothing else.

Imports are lazy, method by method: `container run` imports only what a run needs.
"""

from __future__ import annotations

from container.engine.errors import (  # noqa: F401  (re-exported for cli/)
    CommandNotExecutable, CommandNotFound, Conflict, ContainerError, ContainerNotFound, ImageNotFound,
    InvalidReference, RunError, StoreError, VolumeNotFound, boundary, translate)
from container.engine.progress import NULL, PullListener, RunListener  # noqa: F401  (re-exported)

TYPE_CHECKING = False        # (typing's own import costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    import datetime as _dt
    from typing import Any, Callable, Iterator, TypeVar

    from container.engine.containers import ContainerInfo
    from container.engine.image.catalog import ImageInfo, RemoveResult
    from container.engine.image.contents import Changes, Node
    from container.engine.image.history import HistoryRow
    from container.engine.image.reference import Reference
    from container.engine.maint.fsck import Report
    from container.engine.maint.gc import Plan
    from container.engine.maint.sql import TableDoc
    from container.engine.runtime.exec import ExecOptions
    from container.engine.rostores import ReadOnlyStores
    from container.engine.runtime.options import RunOptions
    from container.engine.store import Store
    from container.engine.transfer.load import Loaded
    from container.engine.transfer.push import Pushed
    from container.engine.volumes import VolumeInfo

    F = TypeVar("F", bound=Callable[..., Any])


def _entry(fn: F) -> F:
    """Run `fn` inside the error boundary. (functools.wraps by hand: functools' import costs
    `run` a millisecond.)"""
    def wrapper(*args: Any, **kw: Any) -> Any:
        with boundary():
            return fn(*args, **kw)
    for a in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, a, getattr(fn, a))
    wrapper.__dict__.update(fn.__dict__)
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


class Engine:
    """One store (ROOT and its metadata database) and the operations on it."""

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

            self._store = Store(self.root, self._db_url())
        return self._store

    def _db_url(self) -> str | None:
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
    @_entry
    def parse_reference(s: str) -> Reference:
        """docker's grammar and normalisation; InvalidReference ("invalid reference format: ...")."""
        from container.engine.image.reference import parse

        return parse(s)

    # -- images -------------------------------------------------------------------------------------
    @_entry
    def pull(self, ref: Reference, *, platform: str | None = None, listener: PullListener | None = None,
             snapshot: bool | None = None) -> ImageInfo:
        """snapshot: build the merged rootfs as the last step (None: the config's snapshot_on_pull)."""
        from container.engine.pull import pull

        return pull(self.store, ref, platform=platform, listener=listener, snapshot=snapshot)

    @_entry
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

    @_entry
    def image(self, name: str) -> ImageInfo:
        """By reference or (short) image id, in the user's store, else a read-only store's; ImageNotFound."""
        return self._resolve(name)

    @_entry
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

    @_entry
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

    @_entry
    def files(self, name: str, path: str | None = None, *, detail: bool = True) -> tuple[ImageInfo, list[Node]]:
        """The image's merged tree (or the subtree at `path`), sorted by path; ImageNotFound, and
        ContainerError when `path` is not in it. detail=False: only path, type, link, layer."""
        from container.engine.image.contents import subtree

        info = self._indexed_image(name)
        return info, subtree(info.id, path, detail=detail)

    @_entry
    def image_diff(self, a: str, b: str) -> tuple[ImageInfo, ImageInfo, Changes]:
        """What is added, changed, removed from image a's tree to image b's."""
        from container.engine.image.contents import diff, merged

        ia, ib = self._indexed_image(a), self._indexed_image(b)
        return ia, ib, diff(merged(ia.id), merged(ib.id))

    @_entry
    def history(self, name: str) -> tuple[ImageInfo, list[HistoryRow]]:
        from container.engine.image.catalog import resolve_image
        from container.engine.image.history import history

        info = resolve_image(self.store, name)
        return info, history(info)

    @_entry
    def packages(self, name: str) -> tuple[ImageInfo, list[dict[str, Any]]]:
        """The image's packages (and its os-release as a row of manager "os-release")."""
        from container.engine.image.contents import image_packages

        info = self._indexed_image(name)
        return info, image_packages(info.id)

    # -- moving images without a registry (engine/transfer) ---------------------------------------
    @_entry
    def save(self, names: list[str], *, fmt: str = "docker-archive", output: Any = None,
             stream: Any = None) -> list[str]:
        """Images to a docker-archive / oci-archive tar (`output` path or a binary `stream`) or an
        oci-dir; the image ids written."""
        from container.engine.transfer.save import save

        return save(self.store, names, fmt=fmt, output=output, stream=stream)

    @_entry
    def load(self, path: Any, *, stream: Any = None,
             listener: Callable[[str], None] | None = None) -> list[Loaded]:
        """Every image of an archive (a tar file or directory at `path`, or a tar read from the
        binary `stream`): [Loaded(id, names)]."""
        from container.engine.transfer.load import load

        return load(self.store, path, listener, stream=stream)

    @_entry
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

    @_entry
    def import_rootfs(self, path: Any, name: str | None, *, stream: Any = None, message: str = "") -> str:
        """A root filesystem tarball (plain, gzip, zstd) as a one-layer image; its id (sha256:...)."""
        from container.engine.transfer.filesystem import import_rootfs

        return import_rootfs(self.store, path, name, stream=stream, message=message)

    @_entry
    def push(self, source: str, dest: str | None = None, *, listener: Callable[[str], None] | None = None,
             log: Callable[[str], None] | None = None) -> Pushed:
        """An image to a registry (existing blobs skipped, cross-repository mounts); what was done."""
        from container.engine.transfer.push import push

        return push(self.store, source, dest, listener=listener, log=log)

    # -- containers ------------------------------------------------------------------------------
    @staticmethod
    def run_options(**kw: Any) -> RunOptions:
        """docker run's options (engine/runtime/options.RunOptions); None values take the defaults."""
        from container.engine.runtime.options import RunOptions

        return RunOptions(**{k: v for k, v in kw.items() if v is not None})

    def run(self, opts: RunOptions, *, listener: RunListener | None = None) -> int:
        """Create and run a container in the foreground: the command's exit status, or docker's
        125 (we failed before it started: an unknown image and a failed pull included), 126
        (cannot execute), 127 (not found) as the raised error's exit_code."""
        from container.engine.runtime.run import run

        with boundary(exit_code=125):
            try:
                return run(opts, store=self._store, root=self.root, db_url=self._db_url(), progress=listener,
                           readonly=self.readonly)
            except ContainerError as e:
                if not isinstance(e, RunError):
                    e.exit_code = 125
                raise

    def create(self, opts: RunOptions, *, listener: RunListener | None = None) -> str:
        """docker create: a container made as run makes it (image pulled if missing, rootfs
        prepared, status "created"), not started; its id. Failures exit 125, as run's."""
        from container.engine.runtime.run import create

        with boundary(exit_code=125):
            try:
                return create(opts, store=self._store, root=self.root, db_url=self._db_url(), progress=listener,
                              readonly=self.readonly)
            except ContainerError as e:
                e.exit_code = 125
                raise

    @_entry
    def containers(self, *, all: bool = False, filters: list[str] | None = None) -> list[ContainerInfo]:
        """docker ps [-a] [--filter KEY=VALUE...]: a status= or exited= filter lists stopped ones too."""
        from container.engine.containers import list_containers
        from container.engine.filters import filter_containers, wants_all
        from container.engine.image.catalog import resolve_image

        cs = list_containers(self.store, all=all or wants_all(filters))
        return filter_containers(cs, filters, lambda n: resolve_image(self.store, n))

    @_entry
    def container(self, name: str) -> ContainerInfo:
        """By name or (short) id; ContainerNotFound."""
        from container.engine.containers import resolve_container

        return resolve_container(self.store, name)

    @_entry
    def remove_container(self, name: str, *, force: bool = False, volumes: bool = False) -> None:
        """docker rm [-f] [-v]: volumes, its anonymous volumes too (those no other container uses)."""
        from container.engine.containers import remove_container, resolve_container
        from container.engine.volumes import release, remove_unused

        if force:                       # SIGKILL through its supervisor's protocol: no restart
            import signal

            from container.engine.runtime.control import stop

            name = stop(self.store, name, timeout=0, sig=signal.SIGKILL)
        try:
            gone = release(self.store, resolve_container(self.store, name).id) if volumes else []
            remove_container(self.store, name, force=force)
        except ContainerNotFound:
            if not force:
                raise
            return                      # a --rm container: its supervisor removed it as it stopped
        remove_unused(self.store, gone)

    # -- volumes (engine/volumes.py; mounting them is engine/runtime/mounts.py) -----------------
    @_entry
    def create_volume(self, name: str | None = None, *, labels: dict[str, str] | None = None) -> VolumeInfo:
        """docker volume create [NAME] (an anonymous 64-hex name without one; an existing one as is)."""
        from container.engine.volumes import create_volume

        return create_volume(self.store, name, labels)

    @_entry
    def volumes(self, *, filters: list[str] | None = None) -> list[VolumeInfo]:
        """docker volume ls [--filter dangling=|driver=|label=|name=] (engine/filters.py)."""
        from container.engine.filters import filter_volumes
        from container.engine.volumes import list_volumes

        return filter_volumes(list_volumes(self.store), filters)

    @_entry
    def volume(self, name: str) -> VolumeInfo:
        """VolumeNotFound ("No such volume: NAME")."""
        from container.engine.volumes import get_volume

        return get_volume(self.store, name)

    @_entry
    def remove_volume(self, name: str) -> None:
        """Conflict while a container uses it (docker's "volume is in use - [ids]")."""
        from container.engine.volumes import remove_volume

        remove_volume(self.store, name)

    @_entry
    def prune_volumes(self, *, dry_run: bool = False) -> tuple[list[str], int]:
        """(names removed, bytes freed) of the volumes no container uses."""
        from container.engine.maint.prune import prune_volumes

        return prune_volumes(self.store, dry_run=dry_run)

    # -- detached containers (engine/runtime/supervisor.py, control.py, logs.py) ------------------
    def run_detached(self, opts: RunOptions, *, listener: RunListener | None = None) -> str:
        """run -d: the container made as run() makes it and started under its own supervisor
        process; its id once it runs. Failures are run()'s (125/126/127), nothing left behind."""
        from container.engine.runtime.run import run_detached

        with boundary(exit_code=125):
            try:
                return run_detached(opts, store=self._store, root=self.root, db_url=self._db_url(),
                                    progress=listener)
            except ContainerError as e:
                if not isinstance(e, RunError):
                    e.exit_code = 125
                raise

    @_entry
    def start(self, name: str) -> str:
        """docker start: a created or exited container, under a new supervisor; its id."""
        from container.engine.runtime.control import start

        return start(self.store, name)

    @_entry
    def stop(self, name: str, *, timeout: int | None = None) -> str:
        """docker stop: StopSignal, then SIGKILL after `timeout` seconds (10); its id."""
        from container.engine.runtime.control import stop

        return stop(self.store, name, timeout)

    @_entry
    def kill(self, name: str, *, signal: str = "KILL") -> str:
        """docker kill -s SIGNAL (name or number); Conflict when it is not running."""
        from container.engine.runtime.control import kill

        return kill(self.store, name, signal)

    @_entry
    def wait(self, name: str) -> int:
        """docker wait: blocks until the container stops; its exit code."""
        from container.engine.runtime.control import wait

        return wait(self.store, name)

    @_entry
    def logs(self, name: str, *, follow: bool = False, tail: int | None = None,
             since: str | None = None) -> Iterator[tuple[str, str, str]]:
        """docker logs: (stream, text, RFC 3339 time) records; `since` a duration (10m, 1h30m,
        90s), an RFC 3339 time or a Unix timestamp. A generator: iterate it inside this boundary."""
        from container.engine.runtime.control import logs
        from container.engine.runtime.logs import parse_since

        it = logs(self.store, name, follow=follow, tail=tail, since=parse_since(since) if since else None)
        with boundary():
            yield from it

    @_entry
    def systemd_unit(self, name: str, *, executable: str, timeout: int = 10) -> str:
        """`generate systemd`: a unit file that starts the container at boot."""
        from container.engine.runtime.control import systemd_unit

        return systemd_unit(self.store, name, executable=executable, timeout=timeout)

    # -- exec: a process in a running container (engine/runtime/exec.py) -------------------------
    @staticmethod
    def exec_options(**kw: Any) -> ExecOptions:
        """docker exec's options (engine/runtime/exec.ExecOptions); None values take the defaults."""
        from container.engine.runtime.exec import ExecOptions

        return ExecOptions(**{k: v for k, v in kw.items() if v is not None})

    @_entry
    def exec(self, opts: ExecOptions) -> int:
        """Run a command in a running container: its exit status (0 at once with detach); raised:
        ContainerNotFound and Conflict (not running) exit 1, 126 cannot start it, 127 not found."""
        from container.engine.runtime.exec import exec_in

        return exec_in(self.store, opts)

    # -- maintenance ------------------------------------------------------------------------------
    @_entry
    def gc(self, *, dry_run: bool = False) -> Plan:
        from container.engine.maint.gc import gc

        return gc(self.store, dry_run=dry_run)

    @staticmethod
    @_entry
    def prune_filters(filters: list[str] | None) -> _dt.datetime | None:
        """docker's --filter until=<timestamp|duration>: the cut-off time (None: no filter)."""
        from container.engine.maint.prune import parse_filters

        return parse_filters(filters)

    @_entry
    def prune(self, *, containers: bool = False, images: str | None = None, until: _dt.datetime | None = None,
              dry_run: bool = False) -> Plan:
        from container.engine.maint.prune import prune

        return prune(self.store, containers=containers, images=images, until=until, dry_run=dry_run)

    @_entry
    def disk_usage(self, *, verbose: bool = False) -> dict[str, Any]:
        from container.engine.maint.df import disk_usage

        return disk_usage(self.store, verbose=verbose)

    @_entry
    def fsck(self, *, repair: bool = False, deep: bool = False) -> Report:
        from container.engine.maint.fsck import fsck

        return fsck(self.store, repair=repair, deep=deep)

    @_entry
    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """One read-only query: (column names, rows)."""
        from container.engine.maint.sql import query as run_query

        return run_query(self.store, query)

    @_entry
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
    @_entry
    def registry_host(server: str | None) -> str:
        """`login [SERVER]`'s host: docker.io by default, scheme and path dropped; InvalidReference."""
        from container.engine.registry.credentials import normalize_server

        return normalize_server(server)

    @staticmethod
    @_entry
    def login(server: str | None, username: str, password: str, *,
              log: Callable[[str], None] | None = None) -> str:
        """Check the credentials against the registry, then save them; returns where they went."""
        from container.engine.registry.client import verify_login
        from container.engine.registry.credentials import normalize_server, store_credentials

        host = normalize_server(server)
        verify_login(host, username, password, log=log)
        return store_credentials(host, username, password)

    @staticmethod
    @_entry
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

    @_entry
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
