"""engine/layer/owners.py: umoci's rootlesscontainers record, and the policies of the three id modes."""

from __future__ import annotations

import pytest

from container.engine.layer.owners import OwnerPolicy, decode_resource, encode_resource


@pytest.mark.parametrize("uid,gid,raw", [(0, 0, b""), (0, 42, b"\x10\x2a"), (1000, 1000, b"\x08\xe8\x07\x10\xe8\x07"),
                                         (0xFFFFFFFF, 5, b"\x08\xff\xff\xff\xff\x0f\x10\x05")])
def test_resource_round_trip(uid, gid, raw):
    assert encode_resource(uid, gid) == raw
    assert decode_resource(raw) == (uid, gid)


@pytest.mark.parametrize("raw", [b"\x08", b"\x18\x01", b"\x08\xff\xff\xff\xff\xff\xff\x01"])
def test_malformed_resource(raw):
    with pytest.raises(ValueError):
        decode_resource(raw)


def _policy(mode: str) -> OwnerPolicy:
    if mode == "root":
        return OwnerPolicy(chown=True, uids=[(0, 1 << 32)], gids=[(0, 1 << 32)], devices=True, keep_special=True,
                           mode="root")
    if mode == "ranges":
        return OwnerPolicy(chown=True, uids=[(0, 1), (1, 65536)], gids=[(0, 1), (1, 65536)], devices=False,
                           keep_special=True, mode="ranges")
    return OwnerPolicy(chown=False, uids=[(0, 1)], gids=[(0, 1)], devices=False, keep_special=False, mode="single")


def test_root_keeps_everything():
    p = _policy("root")
    assert p.owner(70000, 42) == ((70000, 42), None)
    assert p.file_mode(0o4755, False) == 0o4755 and p.summary() is None


def test_ranges_chown_mapped_and_record_the_rest():
    p = _policy("ranges")
    assert p.owner(0, 42) == ((0, 42), None)
    assert p.owner(70000, 42) == ((0, 42), encode_resource(70000, 0))
    assert p.file_mode(0o6755, False) == 0o6755
    assert "1 owner(s)" in (p.summary() or "")


def test_single_id_records_and_drops_setuid():
    p = _policy("single")
    assert p.owner(0, 0) == (None, None)
    assert p.owner(0, 42) == (None, encode_resource(0, 42))
    assert p.file_mode(0o4755, False) == 0o755 and p.file_mode(0o2775, True) == 0o2775
    s = p.summary() or ""
    assert s.startswith("single id mode:") and "setuid/setgid dropped from 1 file(s)" in s


def test_current_as_root_is_root():
    import os

    if os.geteuid() != 0:
        pytest.skip("root only")
    assert OwnerPolicy.current().mode == "root"
