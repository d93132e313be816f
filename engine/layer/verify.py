"""A layer tar replayed into a model of the tree it unpacks to, and a tree compared with it.

    replay(stream) -> (model, diff_id)          stream: the uncompressed layer tar
    compare_tree(model, tree) -> [difference, ...]   ([] = the tree is what the tar says)

fsck --deep uses it to check layers/<diff_id>/ against its blob: the tar is the index. The
replay reads with engine/layer/tar.py, as the extractor does, and follows the extractor's rules
(engine/layer/unpack.py): later entries replace earlier ones, whiteout markers are plain empty
files, a hardlink to a lower layer is an empty placeholder naming its target (HARDLINK_XATTR), a
same-layer symlink in a parent path is resolved inside the tree, sparse files read with their holes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from container.engine.layer.compression import HashingReader
from container.engine.layer.tar import (AUFS_META_PREFIX, BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, OPAQUE,
                                        REGULAR_TYPES, SYMTYPE, WHITEOUT_PREFIX, Limits, Source, iter_entries)
from container.engine.layer.paths import clean_path, resolve_links
from container.engine.layer.sparse import hash_sparse
from container.engine.layer.owners import OwnerPolicy
from container.engine.layer.unpack import HARDLINK_XATTR

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from _typeshed import SupportsRead


def replay(stream: SupportsRead[bytes]) -> tuple[dict, str]:
    """Replay the layer tar as engine/layer/unpack.py extracts it, in memory:
    ({path components: record}, the diff_id of the whole stream, read to its end)."""
    model: dict[tuple, dict] = {}
    group = 0
    hs = HashingReader(stream)
    src = Source(hs)
    def link_at(p: tuple[bytes, ...]) -> bytes | None:
        rec = model.get(p)
        return rec["target"] if rec is not None and rec["type"] == "sym" else None

    for e in iter_entries(src, Limits()):
        comps = clean_path(e.name)
        is_reg = e.type in REGULAR_TYPES
        if not comps:
            if is_reg:
                src.copy(None, e.size)
                src.skip_padding(e.size)
            continue
        comps = resolve_links(comps[:-1], link_at, e.name) + comps[-1:]   # a same-layer symlink parent
        for i in range(1, len(comps)):         # implicit parents
            if comps[:i] not in model or model[comps[:i]]["type"] != "dir":
                model[comps[:i]] = {"type": "dir", "implicit": True}
        leaf = comps[-1]

        def drop(c=comps):
            for k in [k for k in model if k[:len(c)] == c]:
                del model[k]

        if (leaf.startswith(WHITEOUT_PREFIX)
                and (not leaf.startswith(AUFS_META_PREFIX) or leaf == OPAQUE)):
            drop()
            model[comps] = {"type": "reg", "size": 0, "sha": hashlib.sha256().hexdigest(), "marker": True}
            if is_reg:
                src.copy(None, e.size)
                src.skip_padding(e.size)
            continue
        if is_reg:
            if e.sparse is not None:
                sha = hash_sparse(src, e.sparse, e.real_size, e.size)
            else:
                h = hashlib.sha256()
                left = e.size
                while left:
                    chunk = src.read(min(left, 1 << 20))
                    h.update(chunk)
                    left -= len(chunk)
                src.skip_padding(e.size)
                sha = h.hexdigest()
            drop()
            group += 1
            model[comps] = {"type": "reg", "size": e.real_size, "sha": sha, "mode": e.mode & 0o7777,
                            "uid": e.uid, "gid": e.gid, "group": group}
        elif e.type == DIRTYPE:
            old = model.get(comps)
            if old is None or old["type"] != "dir":
                drop()
            model[comps] = {"type": "dir", "mode": e.mode & 0o7777, "uid": e.uid, "gid": e.gid}
        elif e.type == SYMTYPE:
            drop()
            model[comps] = {"type": "sym", "target": e.linkname, "uid": e.uid, "gid": e.gid}
        elif e.type == LNKTYPE:
            target = clean_path(e.linkname)
            target = resolve_links(target[:-1], link_at, e.name) + target[-1:]
            t = model.get(target)
            if t is None:
                # A link to a lower layer: the tree holds a placeholder naming the target,
                # which the snapshot merge resolves (the extractor's placeholder, engine/layer/unpack.py).
                drop()
                model[comps] = {"type": "reg", "size": 0, "placeholder": b"/".join(target)}
                continue
            if comps != target:
                drop()
                model[comps] = dict(t)
        else:
            drop()
            kind = {CHRTYPE: "chr", BLKTYPE: "blk", FIFOTYPE: "fifo"}[e.type]
            model[comps] = {"type": kind, "mode": e.mode & 0o7777, "dev": (e.devmajor, e.devminor),
                            "uid": e.uid, "gid": e.gid, "optional": kind != "fifo"}
    while hs.read(1 << 20):
        pass
    return model, hs.diff_id()


def compare_tree(model: dict, tree: Path) -> list[str]:
    """Differences between the directory `tree` and a replayed layer ([] = identical)."""
    out: list[str] = []
    policy = OwnerPolicy.current()           # what the unpacker could do here: compare with that
    seen: set[tuple] = set()
    inode_of_group: dict[int, tuple] = {}
    base = os.fsencode(os.fspath(tree))
    stack: list[tuple[bytes, ...]] = [()]
    while stack:
        d = stack.pop()
        dpath = os.path.join(base, *d) if d else base
        try:
            names = os.listdir(dpath)
        except OSError as e:
            out.append(f"{_show(d)}: cannot list: {e.strerror}")
            continue
        for name in names:
            comps = d + (name,)
            p = os.path.join(dpath, name)
            st = os.lstat(p)
            seen.add(comps)
            rec = model.get(comps)
            show = _show(comps)
            if rec is None:
                out.append(f"{show}: in the tree, not in the layer")
                if stat.S_ISDIR(st.st_mode):
                    pass
                continue
            t = rec["type"]
            actual = ("dir" if stat.S_ISDIR(st.st_mode) else "reg" if stat.S_ISREG(st.st_mode) else
                      "sym" if stat.S_ISLNK(st.st_mode) else "chr" if stat.S_ISCHR(st.st_mode) else
                      "blk" if stat.S_ISBLK(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode) else "?")
            if actual != t:
                out.append(f"{show}: is a {actual}, the layer has a {t}")
                continue
            if t == "dir":
                stack.append(comps)
            if "mode" in rec and not rec.get("implicit") and \
                    stat.S_IMODE(st.st_mode) != policy.file_mode(rec["mode"], t == "dir"):
                out.append(f"{show}: mode {stat.S_IMODE(st.st_mode):o}, the layer says {rec['mode']:o}")
            ids = policy.owner(rec["uid"], rec["gid"])[0] if "uid" in rec else None
            if ids is not None and (st.st_uid, st.st_gid) != ids:
                out.append(f"{show}: owner {st.st_uid}:{st.st_gid}, the layer says {rec['uid']}:{rec['gid']}")
            if t == "reg" and "placeholder" in rec:
                try:
                    got_target = os.getxattr(p, HARDLINK_XATTR, follow_symlinks=False)
                except OSError:
                    got_target = None
                if st.st_size != 0 or got_target != rec["placeholder"]:
                    out.append(f"{show}: should be a placeholder for a hardlink to "
                               f"{os.fsdecode(rec['placeholder'])!r} in a lower layer")
            elif t == "reg":
                if st.st_size != rec["size"]:
                    out.append(f"{show}: {st.st_size} bytes, the layer has {rec['size']}")
                elif _sha_file(p) != rec["sha"]:
                    out.append(f"{show}: content differs from the layer")
                g = rec.get("group")
                if g is not None:
                    ino = (st.st_dev, st.st_ino)
                    if inode_of_group.setdefault(g, ino) != ino:
                        out.append(f"{show}: should be a hardlink of the same file as its tar link target")
            elif t == "sym":
                if os.readlink(p) != rec["target"]:
                    out.append(f"{show}: symlink to {os.fsdecode(os.readlink(p))!r}, the layer says "
                               f"{os.fsdecode(rec['target'])!r}")
            elif t in ("chr", "blk"):
                if (os.major(st.st_rdev), os.minor(st.st_rdev)) != rec["dev"]:
                    out.append(f"{show}: device numbers differ from the layer")
    for comps, rec in model.items():
        if comps not in seen and not rec.get("optional"):
            out.append(f"{_show(comps)}: in the layer, missing from the tree")
    return out


def _show(comps: tuple) -> str:
    return "/" + "/".join(os.fsdecode(c) for c in comps)


def _sha_file(p) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
