"""Users and groups inside a rootfs, resolved as docker/runc do, never following a symlink out of it.

    resolve_user(rootfs, spec) -> ExecUser(uid, gid, sgids, home, name)

`spec` is the image's config.User or `run -u`: "", "name", "uid", "name:group", "uid:gid",
"name:gid", "uid:group". Rules (runc libcontainer/user.GetExecUser, which docker uses):

- empty spec = root (uid 0, gid 0).
- a user *name* must exist in the rootfs's /etc/passwd ("unable to find user X"); a numeric uid
  may be absent (then gid 0 and HOME "/"), and if present its passwd entry gives gid and home.
- a group *name* must exist in /etc/group; a numeric gid is taken as is.
- supplementary groups, as podman sets them (checked side by side in tests/test_run.py): with an
  explicit group, only that group (`-u 1000:1000`: groups=1000); with a user and no group, the
  primary gid plus the /etc/group entries that list the user's name (`-u app`: 1000, 10, 50);
  with no user at all (the image's default root), only those entries (busybox: groups=10(wheel)),
  or the primary gid when there are none.

/etc/passwd and /etc/group are read from the container's rootfs with every symlink resolved
inside that rootfs (absolute targets mean "relative to the rootfs", `..` stops at its top), so an
image whose /etc/passwd is a symlink to /../../etc/shadow reads the rootfs's own file or nothing
(CVE-2024-9676: podman/buildah followed such links on the host).
"""

from __future__ import annotations

import errno
import os
import stat
from container.engine.errors import RunError
from container.engine.runtime.options import Record

MAX_SYMLINKS = 40
MAX_FILE = 4 << 20     # a passwd/group file larger than this is not read (a hostile image)


class ExecUser(Record):
    FIELDS = dict(uid=0, gid=0, sgids=tuple, home="/", name="")
    __slots__ = tuple(FIELDS)
    uid: int
    gid: int
    sgids: tuple[int, ...]
    home: str
    name: str


def open_in_root(root: str | os.PathLike, unsafe_path: str, flags: int = os.O_RDONLY) -> int:
    """Open `unsafe_path` inside directory `root`, resolving every symlink relative to `root`.

    Returns an fd. Raises OSError (ENOENT, ELOOP, ...) like open(2). The final component is
    opened with O_NOFOLLOW after its own symlinks were resolved by hand, so nothing can point
    the open outside the tree (a concurrent rename inside a container rootfs is not our threat:
    the rootfs we read is a snapshot nobody writes)."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in unsafe_path.split("/") if p not in ("", ".")]
        stack: list[int] = []          # fds of the directories walked, root excluded
        links = 0
        while parts:
            name = parts.pop(0)
            cur = stack[-1] if stack else root_fd
            if name == "..":
                if stack:
                    os.close(stack.pop())
                continue
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except OSError:
                if not parts:
                    # last component missing: let open() report it (O_CREAT callers get it made)
                    return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=cur)
                raise
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), unsafe_path)
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    for fd in stack:
                        os.close(fd)
                    stack.clear()
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if parts:
                if not stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), unsafe_path)
                stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=cur))
                continue
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
        # the path named the root itself (or walked back to it)
        cur = stack[-1] if stack else root_fd
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=cur)
    finally:
        for fd in stack:
            os.close(fd)
        os.close(root_fd)


def read_in_root(root: str | os.PathLike, unsafe_path: str) -> str | None:
    """The text of a regular file inside `root`, or None when missing/not a regular file."""
    try:
        # O_NONBLOCK: a fifo a running container planted there must not hang `exec` (nor a tty
        # become ours); what is not a regular file is not read
        fd = open_in_root(root, unsafe_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            return None
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _rows(text: str | None, nfields: int):
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split(":")
        if len(f) < nfields:
            f += [""] * (nfields - len(f))
        yield f


def _int(s: str) -> int | None:
    if s.isdigit():
        v = int(s)
        if v < 2**32 - 1:
            return v
    return None


def resolve_user(rootfs: str | os.PathLike, spec: str | None) -> ExecUser:
    spec = (spec or "").strip()
    user_arg, _, group_arg = spec.partition(":")
    passwd = read_in_root(rootfs, "/etc/passwd")
    uid, gid, home, name = 0, 0, "/", ""
    found = False
    want_uid = _int(user_arg) if user_arg else 0
    if user_arg and want_uid is None and not user_arg.isdigit():
        pass
    elif user_arg and want_uid is None:
        raise RunError(f"invalid user {user_arg!r}: uid out of range")
    for f in _rows(passwd, 7):
        # name:pw:uid:gid:gecos:home:shell
        if (want_uid is None and f[0] == user_arg) or (want_uid is not None and _int(f[2]) == want_uid):
            entry_uid = _int(f[2])
            if entry_uid is None:
                continue
            name, uid, gid, home = f[0], entry_uid, _int(f[3]) or 0, f[5] or "/"
            found = True
            break
    if not found:
        if want_uid is None:
            raise RunError(f"unable to find user {user_arg}: no matching entries in passwd file")
        uid = want_uid
    sgids: list[int] = [gid] if user_arg else []
    groups = None
    if group_arg:
        want_gid = _int(group_arg)
        if want_gid is not None:
            gid = want_gid
        else:
            groups = read_in_root(rootfs, "/etc/group")
            for f in _rows(groups, 4):
                entry_gid = _int(f[2])
                if f[0] == group_arg and entry_gid is not None:
                    gid = entry_gid
                    break
            else:
                raise RunError(f"unable to find group {group_arg}: no matching entries in group file")
        sgids = [gid]
    elif name:
        groups = read_in_root(rootfs, "/etc/group")
        for f in _rows(groups, 4):
            members = [m.strip() for m in f[3].split(",")]
            g = _int(f[2])
            if name in members and g is not None and g not in sgids:
                sgids.append(g)
    return ExecUser(uid=uid, gid=gid, sgids=tuple(sgids or [gid]), home=home or "/", name=name)
