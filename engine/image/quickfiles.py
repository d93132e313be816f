"""`container files` without peewee: the common case read through schema/lite.py.

    quick_files(root, name, path, detail) -> (diff_ids, nodes) | None

It serves an image named by a tag (engine/image/quickref.py) in the default SQLite store of this
user, whose layers are all indexed; None for anything else (a --db URL, an id or digest, a layer
to index late, a migration due, an image only a read-only store has), before anything is
written: the ORM path (engine/service.py's files) then does the whole of it. The rows and the
merge are engine/image/contents.py's, so both paths print the same tree. Importing peewee and
opening the store through the ORM cost `files` about 40 ms; the listing of a 13k-entry image
itself about 30.
"""

from __future__ import annotations

import os

from container.engine.image.contents import image_rows_sql, merge_rows, pick
from container.engine.image.quickref import fast_reference, looks_like_id
from container.engine.locate import lite_db

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from container.engine.image.contents import Node


def quick_files(root: str, name: str, path: str | None = None,
                detail: bool = True) -> tuple[tuple[str, ...], list[Node]] | None:
    """(the image's diff_ids, its merged tree or the subtree at `path` sorted by path), or None
    when this path cannot serve (see the module docstring); ContainerError when `path` is not in
    the tree."""
    if looks_like_id(name) or name.startswith("sha256:"):
        return None                  # (an id or id prefix comes before a tag: the ORM path's order)
    ref = fast_reference(name)
    if ref is None:
        return None
    db = lite_db(os.path.abspath(root))
    if db is None:
        return None
    try:
        with db.reading():
            found = db.images_by_tag(*ref)
            if len(found) != 1:
                return None
            layers = db.image_layers(found[0][0])
            if not layers or not all(indexed for _, indexed in layers):
                return None
            rows = db.select(image_rows_sql("?", detail), (found[0][0],))
    finally:
        db.close()
    return tuple(d for d, _ in layers), pick(merge_rows(rows, detail), path)
