"""`container history`: an image config's history joined with its layers (docker history's rows).

    history(info) -> [HistoryRow, ...]     newest first, as docker prints them

Each history entry that is not an empty_layer consumes the next layer (bottom up) and shows its
unpacked size; empty_layer entries show 0. Only the newest entry carries the image's ID (docker
prints <missing> for the others: they are no images of their own here). A config without history
gets one row per layer.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from container.engine.image.catalog import ImageInfo, parse_created


@dataclass(frozen=True)
class HistoryRow:
    id: str                       # the image's config digest on the newest row, "<missing>" otherwise
    created: _dt.datetime | None
    created_by: str
    size: int                     # bytes the step's layer unpacks to (0: empty_layer)
    comment: str
    empty_layer: bool
    diff_id: str | None           # the layer it made, if any


def history(info: ImageInfo) -> list[HistoryRow]:
    entries = info.config.get("history") if isinstance(info.config, dict) else None
    layers = list(info.layers)
    rows: list[HistoryRow] = []
    i = 0
    if isinstance(entries, list) and entries:
        for h in entries:
            h = h if isinstance(h, dict) else {}
            empty = bool(h.get("empty_layer"))
            layer = None
            if not empty and i < len(layers):
                layer = layers[i]
                i += 1
            rows.append(HistoryRow("", parse_created(h.get("created")), str(h.get("created_by") or ""),
                                   layer.unpacked_size if layer else 0, str(h.get("comment") or ""),
                                   empty, layer.diff_id if layer else None))
    for layer in layers[i:]:                 # layers the history does not describe
        rows.append(HistoryRow("", info.created, "", layer.unpacked_size, "", False, layer.diff_id))
    rows.reverse()
    return [HistoryRow(info.config_digest if n == 0 else "<missing>", r.created, r.created_by, r.size,
                       r.comment, r.empty_layer, r.diff_id) for n, r in enumerate(rows)]
