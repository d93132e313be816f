"""Layer-chain identity (OCI image-spec config.md, "Layer ChainID"): the one copy.

    ChainID(L0) = DiffID(L0);  ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))

A snapshot (the merged tree of layers 0..n) is named by ChainID(Ln).
"""

from __future__ import annotations

import hashlib


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain id of every prefix of `diff_ids`: [ChainID(L0), ..., ChainID(Ln)]."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def chain_id(diff_ids: list[str]) -> str:
    """The chain id of the whole stack ("" for an image without layers)."""
    ids = chain_ids(list(diff_ids))
    return ids[-1] if ids else ""
