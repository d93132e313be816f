"""`container info`: what this store and host use and why, as {section: {key: value}} (docker's and
podman's `info`, grouped). Sections: store, rootless, runtime, host; other modules may add theirs
(the facade returns the dict as it is). Reads only: nothing is created, no namespace is made.
"""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any

from container.engine.layer.owners import read_id_map
from container.engine.locate import rootless, runtime_dir
from container.engine.runtime.userns import current_mode, entry_error, host_ids, plan

OVERLAY_USERNS_KERNEL = (5, 11)       # overlayfs mountable in a user namespace from here on


def kernel_version() -> tuple[int, int]:
    rel = platform.release()
    parts = rel.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def _has_fs(name: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == name for line in f if line.strip())
    except OSError:
        return False


def overlay_backend() -> tuple[str, str]:
    """(kernel overlay | copy, why) for a container's rootfs, as run chooses it (a failed overlay
    mount falls back to the copy too)."""
    forced = os.environ.get("CONTAINER_ROOTFS")
    if forced == "copy":
        return forced, f"CONTAINER_ROOTFS={forced}"
    kv = kernel_version()
    has_overlay = _has_fs("overlay") or os.path.isdir("/sys/module/overlay")
    if has_overlay and (not rootless() or kv >= OVERLAY_USERNS_KERNEL):
        why = "as root" if not rootless() else (f"kernel {kv[0]}.{kv[1]} >= 5.11 mounts overlayfs in a "
                                                 f"user namespace")
        return "kernel overlay", why
    what = "no overlayfs in this kernel" if not has_overlay else f"kernel {kv[0]}.{kv[1]} < 5.11"
    fuse = " (fuse-overlayfs is not used yet)" if shutil.which("fuse-overlayfs") else ""
    return "copy", f"{what}: each container gets a private copy of its image{fuse}"


def _isolation() -> tuple[str, str]:
    if not os.path.exists("/proc/self/ns/pid"):
        return "chroot", "this kernel has no PID/mount namespaces"
    if rootless() and current_mode() is None:
        return "none", f"no user namespace: {entry_error() or 'not entered'}"
    ns = "user, mount, pid, uts, ipc (+net with --network none)" if rootless() else \
        "mount, pid, uts, ipc (+net with --network none)"
    return "namespaces", ns


def gather(store: Any) -> dict[str, dict[str, Any]]:
    """The sections of `container info` for `store` (an engine.store.Store)."""
    url = store.db_url
    if url and "://" in url:
        from container.schema.pg import redact

        backend, shown = url.split("://", 1)[0], redact(url)
    else:
        backend, shown = "sqlite", url or str(store.db_path)
    try:
        with open(os.path.join(store.root, "rootless")) as f:
            owner = f.read().strip()
    except OSError:
        owner = None
    sections: dict[str, dict[str, Any]] = {
        "store": {"root": str(store.root), "db_backend": backend, "db": shown,
                  "runtime_dir": runtime_dir(str(store.root)),
                  "owner": f"rootless ({owner})" if owner else ("root" if os.path.exists(store.root) else "new")},
    }
    if rootless():
        p = plan()
        mode = current_mode() or "none"
        sections["rootless"] = {
            "rootless": True, "host_uid": host_ids()[0], "host_gid": host_ids()[1],
            "id_mode": {"ranges": "subordinate ranges", "single": "single id"}.get(mode, "none"),
            "reason": p["reason"] if mode == p["mode"] else (entry_error() or "newuidmap/newgidmap failed: single id"),
            "uid_map": [list(x) for x in read_id_map("/proc/self/uid_map")],
            "gid_map": [list(x) for x in read_id_map("/proc/self/gid_map")],
        }
    else:
        sections["rootless"] = {"rootless": False, "id_mode": "root", "reason": "running as root"}
    iso, iso_why = _isolation()
    ov, ov_why = overlay_backend()
    sections["runtime"] = {"isolation": iso, "namespaces": iso_why, "rootfs": ov, "rootfs_reason": ov_why}
    u = os.uname()
    sections["host"] = {"kernel": u.release, "os": _os_name(), "arch": u.machine, "cpus": os.cpu_count() or 0,
                        "hostname": u.nodename}
    return sections


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()
