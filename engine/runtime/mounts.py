"""A container's mounts: `-v`, `--mount` and `--tmpfs` parsed as docker parses them, planned in the
supervisor (bind sources checked, volumes named and created, first use copied up from the image),
and applied by the container's init before pivot_root (child.py calls apply_mounts()).

    -v /host:/ctr[:ro|rw][,nocopy]  bind         -v name:/ctr[:ro]   named volume (created on first use)
    -v /ctr                         anonymous volume (64-hex name; gone with `rm -v` / `run --rm`)
    --mount type=bind,src=/host,dst=/ctr[,readonly]     --mount type=volume[,src=name],dst=/ctr[,readonly]
    --mount type=tmpfs,dst=/run[,tmpfs-size=64m][,tmpfs-mode=1777]      --tmpfs /run[:size=64m,mode=1777]

The config JSON of the container keeps the planned mounts (`config["mounts"]`: type, source,
target, readonly, name, anonymous, data), from which child_mounts() rebuilds what init mounts.

Safety (docs/volumes.md): a target is resolved inside the rootfs as a chroot would (symlinks
included: an absolute link starts again at the container's root, ".." never climbs above it;
engine/layer/paths.resolve_links), then walked component by component with
openat(O_PATH|O_NOFOLLOW) from the rootfs, missing components created on the way (in the overlay
mount, so in the container's upper dir, or in its private copy: never in a shared snapshot), and
the mount is made on /proc/self/fd/N of the final component: it cannot land outside the rootfs.
Targets under /proc, /sys and /dev are refused (those are mounted after pivot_root). Read-only
binds are remounted MS_BIND|MS_REMOUNT|MS_RDONLY. The chroot backend has no mount namespace: runs
with mounts are refused there (check_isolation).
"""

from __future__ import annotations

import os

from container.engine.errors import RunError

VOLUME_MODES = {"ro", "rw", "z", "Z", "nocopy", "private", "rprivate", "shared", "rshared", "slave", "rslave"}
TMPFS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8}     # MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC
TMPFS_CLEARS = {"rw": 1, "suid": 2, "dev": 4, "exec": 8}
TMPFS_DEFAULT = 2 | 4 | 8                                         # docker's: nosuid,nodev,noexec
RESERVED = ("/proc", "/sys", "/dev")


def has_mounts(opts) -> bool:
    return bool(opts.volumes or opts.mounts or opts.tmpfs)


def check_isolation(opts, isolation: str) -> None:
    if isolation == "chroot" and has_mounts(opts):
        raise RunError("volumes and mounts (-v, --mount, --tmpfs) need --isolation namespaces: chroot "
                       "isolation has no mount namespace to put them in")


def _target(t: str, where: str) -> str:
    if not t.startswith("/"):
        raise RunError(f"{where}invalid mount path: '{t}' mount path must be absolute")
    t = os.path.normpath(t)
    if t.startswith("//"):
        t = "/" + t.lstrip("/")
    if t == "/":
        raise RunError(f"{where}invalid specification: destination can't be '/'")
    if any(t == r or t.startswith(r + "/") for r in RESERVED):
        raise RunError(f"{where}mounts under /proc, /sys and /dev are not supported: {t}")
    return t


def _mount(type: str, target: str, *, source: str = "", readonly: bool = False, name: str = "",
           anonymous: bool = False, nocopy: bool = False, data: str = "", flags: int = 0, mode: str = "") -> dict:
    return {"type": type, "source": source, "target": target, "readonly": readonly, "name": name,
            "anonymous": anonymous, "nocopy": nocopy, "data": data, "flags": flags, "mode": mode}


def _volume_or_bind(src: str, dst: str, readonly: bool, nocopy: bool, mode: str, where: str) -> dict:
    if src.startswith("/"):
        return _mount("bind", dst, source=os.path.normpath(src), readonly=readonly, mode=mode)
    from container.engine.volumes import check_volume_name

    try:
        check_volume_name(src)
    except Exception as e:
        raise RunError(str(e)) from None
    return _mount("volume", dst, name=src, readonly=readonly, nocopy=nocopy, mode=mode)


def parse_volume(spec: str) -> dict:
    """docker's -v: DST, SRC:DST, DST:MODE, SRC:DST:MODE (SRC absolute: a bind, else a volume name)."""
    parts = spec.split(":")
    bad = f"invalid volume specification: '{spec}'"
    if not spec or len(parts) > 3 or any(p == "" for p in parts):
        raise RunError(bad)
    src, mode = "", ""
    if len(parts) == 1:
        dst = parts[0]
    elif len(parts) == 2 and all(m in VOLUME_MODES for m in parts[1].split(",")) and not parts[1].startswith("/"):
        dst, mode = parts
    elif len(parts) == 2:
        src, dst = parts
    else:
        src, dst, mode = parts
    words = mode.split(",") if mode else []
    for m in words:
        if m not in VOLUME_MODES:
            raise RunError(f"invalid mode: {mode}")
    if "ro" in words and "rw" in words:
        raise RunError(f"invalid mode: {mode}")
    kind = "bind" if src.startswith("/") else "volume"
    dst = _target(dst, f"{bad}: invalid mount config for type \"{kind}\": ")
    if not src:
        return _mount("volume", dst, anonymous=True, readonly="ro" in words, nocopy="nocopy" in words, mode=mode)
    return _volume_or_bind(src, dst, "ro" in words, "nocopy" in words, mode, bad + ": ")


def _bool(v: str | None, key: str, spec: str) -> bool:
    if v is None or v.lower() in ("1", "true"):
        return True
    if v.lower() in ("0", "false"):
        return False
    raise RunError(f'invalid argument "{spec}" for "--mount" flag: invalid value for {key}: {v}')


def parse_mount_flag(spec: str) -> dict:
    """docker's --mount: comma-separated key=value (CSV quoting allowed)."""
    import csv

    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as e:
        raise RunError(f'invalid argument "{spec}" for "--mount" flag: {e}') from None
    kv: dict[str, str | None] = {}
    for f in fields:
        key, eq, val = f.partition("=")
        kv[key.strip().lower()] = val if eq else None
    bad = f'invalid argument "{spec}" for "--mount" flag: '
    kind: str = kv.pop("type", None) or "volume"
    if kind not in ("bind", "volume", "tmpfs"):
        raise RunError(f"{bad}invalid type '{kind}': want bind, volume or tmpfs")
    src: str | None = None
    dst: str | None = None
    readonly = nocopy = False
    size: str | None = None
    tmode: str | None = None
    for k, v in kv.items():
        if k in ("source", "src"):
            src = v or ""
        elif k in ("target", "destination", "dst"):
            dst = v or ""
        elif k in ("readonly", "ro"):
            readonly = _bool(v, k, spec)
        elif k == "volume-nocopy" and kind == "volume":
            nocopy = _bool(v, k, spec)
        elif k == "tmpfs-size" and kind == "tmpfs":
            size = v or ""
        elif k == "tmpfs-mode" and kind == "tmpfs":
            tmode = v or ""
        elif k in ("bind-propagation", "consistency") and v:
            continue
        else:
            raise RunError(f"{bad}unexpected key '{k}' in '{spec}'" if v is not None or k not in ("readonly", "ro")
                           else f"{bad}invalid field '{k}'")
    where = f'invalid mount config for type "{kind}": '
    if not dst:
        raise RunError(f"{where}field Target must not be empty")
    dst = _target(dst, where)
    if kind == "tmpfs":
        if src:
            raise RunError(f"{where}field Source must not be specified")
        data = []
        if size:
            data.append("size=" + _size(size, where))
        if tmode:
            if not all(c in "01234567" for c in tmode) or len(tmode) > 4:
                raise RunError(f"{where}invalid tmpfs-mode {tmode!r}: want octal, e.g. 1777")
            data.append("mode=" + tmode)
        return _mount("tmpfs", dst, readonly=readonly, data=",".join(data),
                      flags=TMPFS_DEFAULT | (1 if readonly else 0))
    if kind == "bind":
        if not src:
            raise RunError(f"{where}field Source must not be empty")
        if not src.startswith("/"):
            raise RunError(f"{where}invalid mount path: '{src}' mount path must be absolute")
        return _mount("bind", dst, source=os.path.normpath(src), readonly=readonly)
    if not src:
        return _mount("volume", dst, anonymous=True, readonly=readonly, nocopy=nocopy)
    return _volume_or_bind(src, dst, readonly, nocopy, "", where)


def _size(v: str, where: str) -> str:
    import re

    m = re.fullmatch(r"(\d+)([kKmMgG]?)[bB]?", v.strip())
    if not m:
        raise RunError(f"{where}invalid tmpfs-size {v!r}: want bytes, or a number with k, m or g")
    return m.group(1) + m.group(2).lower()


def parse_tmpfs(spec: str) -> dict:
    """docker's --tmpfs DST[:OPTIONS]: mount(8)'s tmpfs options (size=, mode=, ro, exec...)."""
    dst, _, opts = spec.partition(":")
    dst = _target(dst, f"invalid tmpfs specification '{spec}': ")
    flags = TMPFS_DEFAULT
    data = []
    for o in filter(None, opts.split(",")):
        if o in TMPFS_FLAGS:
            flags |= TMPFS_FLAGS[o]
        elif o in TMPFS_CLEARS:
            flags &= ~TMPFS_CLEARS[o]
        elif o.split("=", 1)[0] in ("size", "mode", "nr_inodes", "nr_blocks", "uid", "gid") and "=" in o:
            data.append(o)
        else:
            raise RunError(f"invalid tmpfs option {o!r} in '{spec}'")
    return _mount("tmpfs", dst, readonly=bool(flags & 1), data=",".join(data), flags=flags)


def parse_all(opts) -> list[dict]:
    """Every mount of the run, checked (no duplicate destination), parents before children."""
    out = ([parse_volume(v) for v in opts.volumes] + [parse_mount_flag(m) for m in opts.mounts]
           + [parse_tmpfs(t) for t in opts.tmpfs])
    seen = set()
    for m in out:
        if m["target"] in seen:
            raise RunError(f"Duplicate mount point: {m['target']}")
        seen.add(m["target"])
    return sorted(out, key=lambda m: m["target"].count("/"))


# -- the supervisor's side ------------------------------------------------------------------------

def plan(store, opts) -> list[dict]:
    """The mounts with their host sources: binds checked (the source must exist), anonymous
    volumes named, volumes' sources their _data dirs. Nothing is written."""
    from container.engine.volumes import data_path, new_anonymous_name

    out = []
    for m in parse_all(opts):
        m = dict(m)
        if m["type"] == "bind":
            if not os.path.exists(m["source"]):
                raise RunError(f'invalid mount config for type "bind": bind source path does not exist: '
                               f'{m["source"]}')
        elif m["type"] == "volume":
            if m["anonymous"]:
                m["name"] = new_anonymous_name()
            m["source"] = data_path(store, m["name"])
        out.append(m)
    return out


def attach(store, cid: str, mounts: list[dict], snapshot) -> None:
    """After the container's row exists: its volumes created/recorded (engine/volumes.attach), and a
    volume still empty gets the image's content at its target (docker's copy-up: files, owners,
    modes), unless nocopy."""
    from container.engine.volumes import attach as record

    vols = [m for m in mounts if m["type"] == "volume"]
    if not vols:
        return
    record(store, cid, [(m["name"], m["target"], m["anonymous"]) for m in vols])
    for m in vols:
        if not m["nocopy"]:
            copy_up(str(snapshot), m["target"], m["source"])


def copy_up(snapshot: str, target: str, data: str) -> None:
    """The image's directory at `target` (resolved inside the snapshot) copied into the empty volume
    directory `data`; nothing when the volume has content or the image has no directory there."""
    import stat

    from container.engine.layer.paths import resolve_links
    from container.engine.runtime.rootfs import copy_tree

    if os.listdir(data):
        return
    comps = resolve_links(os.fsencode(target).split(b"/"), lambda p: _readlink(snapshot, p), os.fsencode(target))
    src = os.path.join(snapshot, *[os.fsdecode(c) for c in comps])
    try:
        st = os.lstat(src)
    except OSError:
        return
    if not comps or not stat.S_ISDIR(st.st_mode):
        return
    try:
        copy_tree(src, data, exists=True)
    except OSError as e:
        raise RunError(f"cannot copy the image's {target} into the volume: {e.strerror or e}") from None


def _readlink(root: str, prefix: tuple[bytes, ...]) -> bytes | None:
    try:
        return os.readlink(os.path.join(os.fsencode(root), *prefix))
    except OSError:
        return None


def child_mounts(mounts: list[dict]) -> list[tuple]:
    """What init mounts, from config["mounts"]: (kind bind|tmpfs, source, target, readonly, flags, data)."""
    return [("tmpfs" if m["type"] == "tmpfs" else "bind", m["source"], m["target"], bool(m["readonly"]),
             int(m.get("flags") or 0), m.get("data") or "") for m in mounts]


def host_ready(mounts: list[tuple]) -> None:
    """In the supervisor, before the fork: what init needs is imported, and every bind source exists."""
    from container.engine.layer import paths  # noqa: F401  (init resolves targets with it)

    for kind, src, *_ in mounts:
        if kind == "bind" and not os.path.exists(src):
            raise RunError(f'invalid mount config for type "bind": bind source path does not exist: {src}')


# -- the container's side (init, in its own mount namespace, before pivot_root) ----------------

def apply_mounts(root: str, mounts: list[tuple]) -> list[str]:
    """Mount each on its target resolved inside `root`; the targets as container paths."""
    from container.engine.runtime.syscalls import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, mount

    done = []
    for kind, src, target, readonly, flags, data in mounts:
        is_dir = kind == "tmpfs" or os.path.isdir(src)
        fd, where = _open_target(root, target, is_dir)
        try:
            fdpath = f"/proc/self/fd/{fd}"
            try:
                if kind == "tmpfs":
                    mount("tmpfs", fdpath, "tmpfs", flags, data or None)
                else:
                    mount(src, fdpath, None, MS_BIND | MS_REC)
            except OSError as e:
                raise RunError(f"cannot mount {src or 'tmpfs'} on {target}: {os.strerror(e.errno or 0).lower()}") \
                    from None
            if kind == "bind" and readonly:
                path = os.path.join(root, where.lstrip("/"))
                a, b = os.stat(path), os.stat(src)
                if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                    raise RunError(f"cannot make {target} read-only: the mount is not where it was made")
                keep = os.statvfs(path).f_flag & (2 | 4 | 8)        # nosuid, nodev, noexec as they are
                mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
        finally:
            os.close(fd)
        done.append(where)
    return done


def _open_target(root: str, target: str, is_dir: bool) -> tuple[int, str]:
    """An O_PATH fd on `target` resolved inside `root` (created when missing), and its resolved path."""
    from container.engine.layer.paths import resolve_links

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        def link_at(prefix: tuple[bytes, ...]) -> bytes | None:
            try:
                return os.readlink(b"/".join(prefix), dir_fd=rootfd)
            except OSError:
                return None

        try:
            comps = resolve_links(os.fsencode(target).split(b"/"), link_at, os.fsencode(target))
        except Exception as e:
            raise RunError(f"mount target {target}: {e}") from None
        where = "/" + "/".join(os.fsdecode(c) for c in comps)
        if not comps or any(where == r or where.startswith(r + "/") for r in RESERVED):
            raise RunError(f"mount target {target} resolves to {where} in the container: refused")
        fd = os.dup(rootfd)
        for i, c in enumerate(comps):
            last = i == len(comps) - 1
            want_dir = not last or is_dir
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if want_dir else 0)
            try:
                try:
                    nfd = os.open(c, flags, dir_fd=fd)
                except FileNotFoundError:
                    if want_dir:
                        os.mkdir(c, 0o755, dir_fd=fd)
                    else:
                        os.close(os.open(c, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                         0o644, dir_fd=fd))
                    nfd = os.open(c, flags, dir_fd=fd)
            except OSError as e:
                os.close(fd)
                raise RunError(f"cannot create the mount target {target} in the container: "
                               f"{(e.strerror or str(e)).lower()}") from None
            os.close(fd)
            fd = nfd
        return fd, where
    finally:
        os.close(rootfd)
