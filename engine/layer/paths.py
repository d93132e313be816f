"""Member names as paths inside the layer root: cleaned, and resolved through same-layer symlinks.

    clean_path(b"/a/../../b/./c") == (b"b", b"c")          umoci's CleanPath
    resolve_links(comps, link_at, what) -> comps            umoci's SecureJoin, over any tree

Shared by the extractor (engine/layer/unpack.py: link_at reads the directory being extracted)
and fsck --deep's replay (engine/layer/verify.py: link_at reads its model), so both resolve a
path alike. Part of the security boundary (docs/security.md): the result is always inside the root.
"""

from __future__ import annotations

from container.engine.errors import LayerError
from container.engine.layer.tar import show_name

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Callable, Sequence


def clean_path(unsafe: bytes) -> tuple[bytes, ...]:
    """umoci CleanPath, as components: a leading "/" dropped, "." and empty components gone, ".."
    never above the root. () is the root itself."""
    return resolve_links(unsafe.split(b"/"))


MAX_LINKS = 40               # symlinks followed in one path, as Linux (then ELOOP)


def resolve_links(comps: Sequence[bytes], link_at: Callable[[tuple[bytes, ...]], bytes | None] | None = None,
                  what: bytes = b"") -> tuple[bytes, ...]:
    """The directory path `comps` with every symlink among its components resolved inside the tree,
    as a chroot would (umoci's SecureJoin): absolute targets start again at the root, ".." never
    climbs above it. `link_at(prefix)` is the target of the symlink at prefix (already resolved)
    or None (no link_at: the path is only cleaned). More than MAX_LINKS symlinks (a loop) is a
    LayerError naming `what`."""
    out: list[bytes] = []
    todo = list(reversed(comps))
    seen = 0
    while todo:
        c = todo.pop()
        if not c or c == b".":
            continue
        if c == b"..":
            if out:
                out.pop()
            continue
        target = None if link_at is None else link_at(tuple(out) + (c,))
        if target is None:
            out.append(c)
            continue
        seen += 1
        if seen > MAX_LINKS:
            raise LayerError(f"layer entry {show_name(what)}: too many levels of symbolic links "
                             f"(a symlink loop)")
        if target.startswith(b"/"):
            out = []
        todo.extend(reversed(target.split(b"/")))
    return tuple(out)
