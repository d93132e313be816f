"""Rootless: the user namespace a non-root user's commands run in, and its id mapping.

Two id modes, chosen automatically (plan()):

    ranges  /etc/subuid and /etc/subgid give the user a range and newuidmap/newgidmap exist:
            0 -> the user, 1..N -> the range (N = the range's size, at most 65536), as podman does;
            files keep their real owners (chowned by the unpacker inside the namespace).
    single  0 <-> the user only (we write uid_map/gid_map ourselves; setgroups denied): every file
            is the user's, root in the container; the owners the kernel cannot hold are recorded
            (engine/layer/owners.py).

enter() moves the calling process, while it is still single-threaded (the kernel refuses
CLONE_NEWUSER to a threaded process), into a new user namespace with that mapping. From then on it
is uid 0 in there, with the capabilities over what it maps: the unpacker chowns, the container's
mount/pid/uts/ipc namespaces are unshared from it, the store's files are removed by it. It says
what it did in $_CONTAINER_USERNS ("<mode> <host uid>", engine/locate.USERNS_ENV), which
locate.rootless() and the store's owner check read. Root (in the initial namespace) never enters.
"""

from __future__ import annotations

import os
import pwd
import shutil

from container.engine.errors import RunError
from container.engine.layer.owners import initial_namespace, read_id_map
from container.engine.locate import USERNS_ENV

CLONE_NEWUSER = 0x10000000
MAX_RANGE = 65536
_ERROR: list[str] = []            # why enter() could not make the namespace (run says it)


def subordinate_range(path: str, name: str, uid: int) -> tuple[int, int] | None:
    """(start, count) of the user's first range in /etc/subuid or /etc/subgid, by name or id."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (name, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0 and start > 0:
            return start, min(count, MAX_RANGE)
    return None


def host_ids() -> tuple[int, int]:
    """The user's uid and gid on the host (what 0 maps to, inside its namespace)."""
    if current_mode() is None:
        return os.getuid(), os.getgid()
    ids = []
    for path in ("/proc/self/uid_map", "/proc/self/gid_map"):
        ids.append(next((out for inside, out, _ in read_id_map(path) if inside == 0), 0))
    return ids[0], ids[1]


def plan() -> dict:
    """How this user's namespace is (or would be) mapped: {"mode": ranges|single, "reason": why,
    "uid_map": [(inside, outside, count)], "gid_map": [...]}; mode "root" for root."""
    uid, gid = host_ids()
    if uid == 0:
        return {"mode": "root", "reason": "running as root", "uid_map": [], "gid_map": []}
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    su = subordinate_range("/etc/subuid", name, uid)
    sg = subordinate_range("/etc/subgid", name, uid)
    tools = [t for t in ("newuidmap", "newgidmap") if not shutil.which(t)]
    if su and sg and not tools:
        return {"mode": "ranges",
                "reason": f"/etc/subuid and /etc/subgid give {name} {su[0]}-{su[0] + su[1] - 1} and "
                          f"{sg[0]}-{sg[0] + sg[1] - 1}; newuidmap/newgidmap map them",
                "uid_map": [(0, uid, 1), (1, su[0], su[1])], "gid_map": [(0, gid, 1), (1, sg[0], sg[1])]}
    if not (su and sg):
        missing = " and ".join(p for p, r in (("/etc/subuid", su), ("/etc/subgid", sg)) if not r)
        why = f"no subordinate range for {name} in {missing}"
    else:
        why = f"{' and '.join(tools)} not installed (Debian package uidmap)"
    return {"mode": "single", "reason": why + f": only uid {uid} and gid {gid} are mapped (to 0)",
            "uid_map": [(0, uid, 1)], "gid_map": [(0, gid, 1)]}


def current_mode() -> str | None:
    """The id mode this process entered (enter() ran here or in an ancestor), or None."""
    v = os.environ.get(USERNS_ENV)
    if not v or initial_namespace():
        return None
    return v.split()[0]


def entry_error() -> str | None:
    """Why enter() left this process outside a user namespace (None: it did not fail)."""
    return _ERROR[0] if _ERROR else None


def enter() -> str | None:
    """Put this (single-threaded) process into its user namespace; returns the id mode, or None
    (root; or the kernel refused: entry_error() says why, and the commands that need the
    namespace, run, say so). Idempotent."""
    try:
        return _enter()
    except RunError as e:
        _ERROR[:] = [str(e)]
        return None


def _enter() -> str | None:
    if os.geteuid() == 0 and not os.environ.get(USERNS_ENV):
        return None
    mode = current_mode()
    if mode is not None:
        return mode
    os.environ.pop(USERNS_ENV, None)
    p = plan()
    uid, gid = host_ids()          # (read now: both read as unmapped once uid_map is written)
    from container.engine.runtime.syscalls import get_errno, libc

    lib = libc()
    r, w = os.pipe()
    helper = -1
    if p["mode"] == "ranges":
        helper = os.fork()
        if helper == 0:                           # outside: maps the parent once it has unshared
            os.close(w)
            os.read(r, 1)
            os._exit(_map_parent(os.getppid(), p))
    os.close(r)
    err = 0
    if lib.unshare(CLONE_NEWUSER) != 0:
        err = get_errno()
    os.close(w)
    mapped = False
    if helper > 0:
        _, status = os.waitpid(helper, 0)
        mapped = not err and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    if err:
        raise RunError(f"cannot create a user namespace ({os.strerror(err)}): rootless containers need "
                       f"unprivileged user namespaces (sysctl user.max_user_namespaces, "
                       f"kernel.unprivileged_userns_clone)")
    if not mapped:
        if p["mode"] == "ranges":                 # newuidmap refused: the single id still works
            p = {**p, "mode": "single"}
        _write_map("/proc/self/setgroups", "deny")
        _write_map("/proc/self/uid_map", f"0 {uid} 1")
        _write_map("/proc/self/gid_map", f"0 {gid} 1")
    os.environ[USERNS_ENV] = f"{p['mode']} {uid}"
    return str(p["mode"])


def _map_parent(pid: int, p: dict) -> int:
    """newuidmap/newgidmap PID (in, out, count)...; 0 when both succeeded."""
    for tool, key in (("newuidmap", "uid_map"), ("newgidmap", "gid_map")):
        args = [tool, str(pid)] + [str(x) for line in p[key] for x in line]
        try:
            child = os.posix_spawnp(tool, args, dict(os.environ))
        except OSError:
            return 1
        _, status = os.waitpid(child, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status):
            return 1
    return 0


def _write_map(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        if not path.endswith("setgroups"):
            raise RunError(f"cannot map ids in the user namespace ({path}: {e.strerror})") from None


def join(pid: int, mode: str) -> None:
    """Move this (single-threaded) process, still outside any user namespace, into the one process
    `pid` runs in (a namespace another command of this user made, `mode` its id mode) instead of a
    new one: what `exec` needs, since a fresh namespace is a sibling of the container's and has no
    rights over it. The user owns that namespace, so the kernel lets it in with every capability
    there; it is uid 0 in it, as after enter(). Raises OSError (gone, or not this user's)."""
    from container.engine.runtime.syscalls import setns

    uid = os.getuid()
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWUSER)
    finally:
        os.close(fd)
    os.environ[USERNS_ENV] = f"{mode} {uid}"
