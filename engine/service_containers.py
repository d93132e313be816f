"""The engine's facade, its containers' half: run, create, list and remove containers, their
volumes, detached containers (start/stop/kill/wait/logs) and exec. engine/service.py's Engine
inherits these methods; cli/ still sees one facade, `container.engine.service.Engine`.

Each method is an error boundary as in engine/service.py; imports are lazy, method by method (run's
path pays for this module's few lines only).
"""

from __future__ import annotations

from container.engine.errors import ContainerError, ContainerNotFound, RunError, boundary, entry

TYPE_CHECKING = False        # (typing's own import costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, Iterator

    from container.engine.containers import ContainerInfo
    from container.engine.progress import RunListener
    from container.engine.rostores import ReadOnlyStores
    from container.engine.runtime.exec import ExecOptions
    from container.engine.runtime.options import RunOptions
    from container.engine.store import Store
    from container.engine.volumes import VolumeInfo


class ContainerVerbs:
    """What Engine (engine/service.py) provides and these methods use: root, store, store_if_open,
    db_url(), readonly."""

    root: Any
    if TYPE_CHECKING:
        @property
        def store(self) -> Store: ...

        @property
        def store_if_open(self) -> Store | None: ...

        @property
        def readonly(self) -> ReadOnlyStores | None: ...

        def db_url(self) -> str | None: ...

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
                return run(opts, store=self.store_if_open, root=self.root, db_url=self.db_url(), progress=listener,
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
                return create(opts, store=self.store_if_open, root=self.root, db_url=self.db_url(), progress=listener,
                              readonly=self.readonly)
            except ContainerError as e:
                e.exit_code = 125
                raise

    @entry
    def containers(self, *, all: bool = False, filters: list[str] | None = None) -> list[ContainerInfo]:
        """docker ps [-a] [--filter KEY=VALUE...]: a status= or exited= filter lists stopped ones too."""
        from container.engine.containers import list_containers
        from container.engine.filters import filter_containers, wants_all
        from container.engine.image.catalog import resolve_image

        cs = list_containers(self.store, all=all or wants_all(filters))
        return filter_containers(cs, filters, lambda n: resolve_image(self.store, n))

    @entry
    def container(self, name: str) -> ContainerInfo:
        """By name or (short) id; ContainerNotFound."""
        from container.engine.containers import resolve_container

        return resolve_container(self.store, name)

    @entry
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
    @entry
    def create_volume(self, name: str | None = None, *, labels: dict[str, str] | None = None) -> VolumeInfo:
        """docker volume create [NAME] (an anonymous 64-hex name without one; an existing one as is)."""
        from container.engine.volumes import create_volume

        return create_volume(self.store, name, labels)

    @entry
    def volumes(self, *, filters: list[str] | None = None) -> list[VolumeInfo]:
        """docker volume ls [--filter dangling=|driver=|label=|name=] (engine/filters.py)."""
        from container.engine.filters import filter_volumes
        from container.engine.volumes import list_volumes

        return filter_volumes(list_volumes(self.store), filters)

    @entry
    def volume(self, name: str) -> VolumeInfo:
        """VolumeNotFound ("No such volume: NAME")."""
        from container.engine.volumes import get_volume

        return get_volume(self.store, name)

    @entry
    def remove_volume(self, name: str) -> None:
        """Conflict while a container uses it (docker's "volume is in use - [ids]")."""
        from container.engine.volumes import remove_volume

        remove_volume(self.store, name)

    @entry
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
                return run_detached(opts, store=self.store_if_open, root=self.root, db_url=self.db_url(),
                                    progress=listener)
            except ContainerError as e:
                if not isinstance(e, RunError):
                    e.exit_code = 125
                raise

    @entry
    def start(self, name: str) -> str:
        """docker start: a created or exited container, under a new supervisor; its id."""
        from container.engine.runtime.control import start

        return start(self.store, name)

    @entry
    def stop(self, name: str, *, timeout: int | None = None) -> str:
        """docker stop: StopSignal, then SIGKILL after `timeout` seconds (10); its id."""
        from container.engine.runtime.control import stop

        return stop(self.store, name, timeout)

    @entry
    def kill(self, name: str, *, signal: str = "KILL") -> str:
        """docker kill -s SIGNAL (name or number); Conflict when it is not running."""
        from container.engine.runtime.control import kill

        return kill(self.store, name, signal)

    @entry
    def wait(self, name: str) -> int:
        """docker wait: blocks until the container stops; its exit code."""
        from container.engine.runtime.control import wait

        return wait(self.store, name)

    @entry
    def logs(self, name: str, *, follow: bool = False, tail: int | None = None,
             since: str | None = None) -> Iterator[tuple[str, str, str]]:
        """docker logs: (stream, text, RFC 3339 time) records; `since` a duration (10m, 1h30m,
        90s), an RFC 3339 time or a Unix timestamp. A generator: iterate it inside this boundary."""
        from container.engine.runtime.control import logs
        from container.engine.runtime.logs import parse_since

        it = logs(self.store, name, follow=follow, tail=tail, since=parse_since(since) if since else None)
        with boundary():
            yield from it

    @entry
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

    @entry
    def exec(self, opts: ExecOptions) -> int:
        """Run a command in a running container: its exit status (0 at once with detach); raised:
        ContainerNotFound and Conflict (not running) exit 1, 126 cannot start it, 127 not found."""
        from container.engine.runtime.exec import exec_in

        return exec_in(self.store, opts)
