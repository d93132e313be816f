"""`container run`: create and run a container in the foreground (the run half of design.md's data
flow); `container create` is the same path stopped before the spawn (create()).

    options checked -> path chosen (fast or ORM) -> --env-file/-e read -> image (pulled if missing)
          -> snapshot (under the shared store lock) -> Container row (status created) -> rootfs
          (overlay, or a private copy) -> process spec (runtime/options.py) -> isolation backend
          (runtime/isolate.py) -> status running (pid) -> exit code -> status exited, or row + dir
          removed (--rm)

Two ways to the same rows, chosen once before any input is read or anything is written:
runtime/fast.py's FastStore (the stdlib's sqlite3, for an image found by its tag with its
snapshot built: `run`'s hot path, ~60% cheaper than importing peewee, cas and dataclasses), and
runtime/ormstore.py's OrmStore (engine.store + peewee: any --db URL, pulls, ids and digests,
snapshot builds).
CONTAINER_TRACE=1 prints where the milliseconds go.

No DB transaction is held while the container runs; the supervisor holds
flock(ROOT/containers/<id>/lock) instead, so gc/prune/rm can tell a live container from a
stale row (a supervisor killed with SIGKILL leaves "running" with no lock holder: shown as
exited, exit code unknown).
"""

from __future__ import annotations

import os
import sys
import time

from container.engine.errors import RunError
from container.engine.runtime.fastjson import dumps
from container.engine.runtime.options import (
    RunOptions, check_options, container_env, image_config, process_args, user_env)

_TRACE = bool(os.environ.get("CONTAINER_TRACE"))
_T0 = float(os.environ.get("CONTAINER_TRACE_T0") or time.perf_counter())


def trace(what: str) -> None:
    """CONTAINER_TRACE=1: where the milliseconds of `run` go (stderr; t=0 is main()'s start)."""
    if _TRACE:
        sys.stderr.write(f"trace {(time.perf_counter() - _T0) * 1000:7.2f} ms  "
                         f"(cpu {time.process_time() * 1000:6.1f})  {what}\n")


def choose_store(opts: RunOptions, *, store=None, root=None, db_url=None, readonly=None):
    """The run's path, chosen once: a FastStore when the fast path serves this run (it only
    reads; an image in the user's own store), else an OrmStore (opened later: nothing is created
    here) that also looks in the read-only stores."""
    mounts = opts.volumes or opts.mounts or opts.tmpfs          # (volume rows: the ORM path's)
    if db_url is None and (store is None or store.db_url is None) and not mounts:
        from container.engine.runtime.fast import FastStore

        if store is not None:
            lroot = str(store.root)
        elif root:
            lroot = str(root)
        else:
            from container.engine.locate import default_root

            lroot = default_root()
        fast = FastStore.open(lroot, opts)
        if fast is not None:
            return fast
    if store is None:
        from container.engine.store import Store

        store = Store(root, db_url)
    from container.engine.runtime.ormstore import OrmStore

    return OrmStore(store, readonly)


def _begin(opts: RunOptions, store, root, db_url, progress, readonly=None):
    """What run and create share before a container exists: the isolation, the path (fast or
    ORM), the user's env, the image (pulled if missing). Returns (db, image, isolation, extra_env)."""
    if not sys.platform.startswith("linux"):
        raise RunError(f"container run needs Linux (namespaces, overlayfs, chroot); this host is "
                       f"{sys.platform}")
    from container.engine.runtime import isolate

    isolation = isolate.choose_isolation(opts.isolation)
    reason = isolate.unavailable_reason(isolation)
    if reason:
        raise RunError(reason)
    check_options(opts)
    if opts.volumes or opts.mounts or opts.tmpfs:
        from container.engine.runtime.mounts import check_isolation

        check_isolation(opts, isolation)
    trace("imports done, options checked")
    db = choose_store(opts, store=store, root=root, db_url=db_url, readonly=readonly)
    trace(f"path chosen: {type(db).__name__}")
    extra_env = user_env(opts)                  # once: an --env-file may be /dev/stdin
    db.open_db()
    trace("database open")
    image = db.image(opts, progress)
    trace("image resolved")
    return db, image, isolation, extra_env


def run(opts: RunOptions, *, store=None, root=None, db_url=None, progress=None, readonly=None) -> int:
    """Create and run a container in the foreground; returns docker's exit status.

    store (an engine.store.Store) or root/db_url say where; readonly (engine/rostores) where else
    an image may be found. progress is a RunListener
    (engine/progress.py): image_missing() and the pull's events when the image is pulled.
    Raises RunError (125), CommandNotExecutable (126), CommandNotFound (127) or another
    ContainerError before the command starts; nothing is left behind in that case."""
    db, image, isolation, extra_env = _begin(opts, store, root, db_url, progress, readonly)
    return _create_and_run(db, opts, image, isolation, extra_env)


def create(opts: RunOptions, *, store=None, root=None, db_url=None, progress=None, readonly=None) -> str:
    """docker create: the container made as run makes it (row "created", rootfs prepared), not
    started; returns its id. Nothing is left behind when it fails."""
    db, image, isolation, extra_env = _begin(opts, store, root, db_url, progress, readonly)
    made = _create(db, opts, image, isolation, extra_env)
    os.close(made[2])
    return made[0]


def _userns_mode() -> str:
    """"" for root, else the rootless id mode (ranges | single) the container runs in."""
    from container.engine.locate import USERNS_ENV      # (loaded already: the facade's db URL)

    return (os.environ.get(USERNS_ENV) or "").partition(" ")[0]


def _undo(db, cid: str, cdir: str, row_made: bool, lock_fd) -> None:
    """A failed create or start: the row, then the container's dir (DB first, files second)."""
    if row_made:
        try:
            db.delete(cid, failed=True)
        except Exception:
            pass
    if lock_fd is not None:
        db.remove_dir(cdir)
        os.close(lock_fd)


def _create(db, opts: RunOptions, image, isolation: str, extra_env: list[str]):
    """The container made, under the shared store lock: snapshot, process spec, name, dir with its
    held lock, rootfs dirs, row "created" (a private copy when it is not an overlay). Returns
    (cid, cdir, lock_fd, snap, rootfs, spec); undone when it fails."""
    import fcntl

    from container.engine.runtime import isolate
    from container.engine.runtime.options import random_name
    from container.engine.runtime.users import resolve_user

    cid = os.urandom(32).hex()
    cdir = os.path.join(db.containers_dir, cid)
    lock_fd = None
    row_made = False
    try:
        with db.lock():
            chain_id, snap = db.snapshot(image)
            trace("snapshot ready")
            cfg = image_config(image.config)
            argv, entrypoint, cmd = process_args(cfg, opts)
            user_spec = opts.user if opts.user is not None else (cfg.get("User") or "")
            user = resolve_user(snap, user_spec)
            workdir = opts.workdir or cfg.get("WorkingDir") or "/"
            if not workdir.startswith("/"):
                workdir = "/" + workdir
            hostname = opts.hostname or cid[:12]
            env = container_env(cfg, extra_env, hostname, opts.tty, user.home)
            name = opts.name
            if name is None:
                for _ in range(20):
                    name = random_name()
                    if not db.name_taken(name):
                        break
                else:
                    name = f"{random_name()}_{cid[:6]}"
            elif db.name_taken(name):
                raise RunError(f'Conflict. The container name "/{name}" is already in use')
            os.mkdir(cdir, 0o700)
            lock_fd = os.open(os.path.join(cdir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            # CONTAINER_ROOTFS=copy forces the private copy (what we fall back to when the
            # kernel refuses the overlay mount): for tests and for filesystems overlay dislikes.
            if isolation == "namespaces" and os.environ.get("CONTAINER_ROOTFS") != "copy":
                mode = "overlay"
                from container.engine.runtime.rootfs import overlay_dirs

                dirs = overlay_dirs(cdir)
                rootfs = isolate.RootfsSpec(mode="overlay", path=dirs["path"], lower=str(snap),
                                    upper=dirs["upper"], work=dirs["work"])
            else:
                mode = "copy"
                rootfs = None
            config = {"env": env, "workdir": workdir, "user": user_spec, "hostname": hostname,
                      "entrypoint": entrypoint, "cmd": cmd, "tty": opts.tty,
                      "interactive": opts.interactive, "read_only": opts.read_only,
                      "network": opts.network, "rm": opts.rm, "lower": str(snap),
                      "userns": _userns_mode()}
            if opts.detach or opts.restart != "no" or opts.init or opts.log_opts or cfg.get("StopSignal"):
                config.update(restart=opts.restart, init=opts.init, stop_signal=cfg.get("StopSignal") or "",
                              log_opts=list(opts.log_opts))
            mounts: list = []
            if opts.volumes or opts.mounts or opts.tmpfs:
                from container.engine.runtime import mounts as m

                mounts = m.plan(db.store, opts)
                config["mounts"] = mounts
            if getattr(db, "host", None):
                config["host"] = db.host
            image_id = image.id
            if getattr(image, "readonly_store", ""):   # rows of another store: named in the config only
                config.update(image_store=image.readonly_store, image_id=image.id, chain_id=chain_id)
                image_id = chain_id = None
            db.insert({"id": cid, "name": name, "image_id": image_id, "image_ref": opts.image,
                       "chain_id": chain_id, "command": dumps(argv), "config": dumps(config),
                       "isolation": isolation, "rootfs_mode": mode, "status": "created"})
            row_made = True
            if mounts:
                m.attach(db.store, cid, mounts, snap)
            trace("container row created, rootfs prepared")
            if rootfs is None:
                from container.engine.runtime.rootfs import make_copy

                rootfs = isolate.RootfsSpec(mode="copy", path=make_copy(snap, cdir))
        spec = process_spec(argv, config, user)
    except BaseException:
        _undo(db, cid, cdir, row_made, lock_fd)
        raise
    return cid, cdir, lock_fd, snap, rootfs, spec


def process_spec(argv: list[str], config: dict, user):
    """The process a container row describes (its argv, its config JSON, the resolved user)."""
    from container.engine.runtime import isolate

    return isolate.ProcessSpec(argv=argv, env=config["env"], cwd=config["workdir"], uid=user.uid,
                               gid=user.gid, sgids=user.sgids, hostname=config["hostname"],
                               tty=bool(config.get("tty")), interactive=bool(config.get("interactive")),
                               read_only=bool(config.get("read_only")), network=config.get("network", "host"),
                               init=bool(config.get("init")), mounts=_child_mounts(config))


def _child_mounts(config: dict) -> list:
    if not config.get("mounts"):
        return []
    from container.engine.runtime.mounts import child_mounts

    return child_mounts(config["mounts"])


def start_process(db, cid: str, cdir: str, snap, rootfs, spec, isolation: str, requested: str, forked=None):
    """Spawn the container's process (runtime/isolate.py), falling back to a private copy when
    the overlay mount is refused and, with --isolation auto, to chroot where namespaces are;
    the row says which. Returns the Running process; raises RunError (125/126/127). forked(pid):
    isolate.spawn()'s, called again for the process of a fallback."""
    from container.engine.runtime import isolate

    try:
        return isolate.spawn(isolation, rootfs, spec, forked)
    except (isolate.OverlayFailed, isolate.NamespacesUnavailable) as e:
        from container.engine.runtime.rootfs import make_copy

        if isinstance(e, isolate.NamespacesUnavailable):
            if requested != "auto" or spec.mounts:
                raise
            isolation = "chroot"            # auto: where namespaces are refused, chroot
        if os.environ.get("CONTAINER_DEBUG"):
            sys.stderr.write(f"{e}; using {isolation} with a private copy\n")
        with db.lock():
            if rootfs.mode != "copy":
                rootfs = isolate.RootfsSpec(mode="copy", path=make_copy(snap, cdir))
            db.update(cid, rootfs_mode="copy", isolation=isolation)
        return isolate.spawn(isolation, rootfs, spec, forked)


def kill_unrecorded(running) -> None:
    """A process that started but whose start could not be recorded: SIGKILL it and reap it."""
    import signal

    try:
        os.kill(running.container_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    running.wait()


def run_detached(opts: RunOptions, *, store=None, root=None, db_url=None, progress=None) -> str:
    """run -d: the container made as run() makes it, then handed to its own supervisor process
    (runtime/supervisor.py), which starts it; returns its id once it has started. A start
    failure raises as run() does (125/126/127) and leaves nothing behind."""
    from container.engine.runtime.supervisor import launch

    db, image, isolation, extra_env = _begin(opts, store, root, db_url, progress)
    cid, cdir, lock_fd, _snap, _rootfs, _spec = _create(db, opts, image, isolation, extra_env)
    try:
        launch(db.where(), cid, cdir, lock_fd=lock_fd)
    except BaseException:
        _undo(db, cid, cdir, True, lock_fd)
        raise
    os.close(lock_fd)
    return cid


def _recorder(opts: RunOptions, cdir: str):
    """A foreground run's log (not for --rm: it would go with the container): a Tee, or for -t
    the LogWriter the pty pump writes to."""
    from container.engine.runtime.logs import LogWriter, config_log_options
    from container.engine.runtime.options import log_options
    from container.engine.runtime.tee import Tee

    log = LogWriter(cdir, **log_options(opts.log_opts, config_log_options()))
    return log if opts.tty else Tee(log)


def _close_recorder(rec) -> None:
    if hasattr(rec, "finish"):
        rec.finish()
    else:
        rec.close()


def _create_and_run(db, opts: RunOptions, image, isolation: str, extra_env: list[str]) -> int:
    cid, cdir, lock_fd, snap, rootfs, spec = _create(db, opts, image, isolation, extra_env)
    running = None
    rec = None

    def started(pid: int) -> None:
        # "running" is recorded the moment the process exists, while it sets up its namespaces
        # on the other core; a start that fails after all removes the row (below) as before
        db.update(cid, status="running", pid=pid, started=db.now())
        trace("status running recorded")

    try:
        if not opts.rm:
            rec = _recorder(opts, cdir)
        if rec is not None and not opts.tty:
            rec.redirect()
            try:
                running = start_process(db, cid, cdir, snap, rootfs, spec, isolation, opts.isolation, started)
            finally:
                rec.restore()
            rec.start()
        else:
            running = start_process(db, cid, cdir, snap, rootfs, spec, isolation, opts.isolation, started)
            if rec is not None:
                running.log = rec
        trace("container process exec'd")
    except BaseException:
        if running is not None:               # started, but we cannot record it: stop it
            kill_unrecorded(running)
        if rec is not None:
            _close_recorder(rec)
        _undo(db, cid, cdir, True, lock_fd)
        raise
    code = 125
    beating = getattr(db, "keep_alive", lambda: None)()
    try:
        code = running.wait()
        trace("container exited")
    finally:
        if beating is not None:
            beating.set()
        if rec is not None:
            _close_recorder(rec)
        if opts.rm:
            db.delete(cid)                      # DB first, files second (design.md invariant 4)
            trace("row deleted")
            db.remove_dir(cdir)
        else:
            db.update(cid, status="exited", exit_code=code, finished=db.now())
        os.close(lock_fd)
        trace("recorded / removed")
    return code
