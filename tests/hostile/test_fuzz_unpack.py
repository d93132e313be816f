"""Property tests for the extractor (issue 5 item 4): random tar streams built from raw headers with
names/link targets from a small hostile alphabet ('..', '/', '.wh.', symlinks to the outside...).
Whatever the stream: nothing is written outside the root, and the only exception is LayerError.
Then the merge of two such layers (snapshot) is held to the same rule."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tarmaker as tm  # noqa: E402

from container.engine.layer.compression import open_layer_stream  # noqa: E402
from container.engine.errors import LayerError  # noqa: E402
from container.engine.layer.tar import Limits  # noqa: E402
from container.engine.layer.unpack import unpack_layer  # noqa: E402

OUTSIDE = Path(tempfile.mkdtemp(prefix="fuzz-outside-"))
(OUTSIDE / "sentinel").write_text("sentinel\n")
(OUTSIDE / "dir").mkdir(exist_ok=True)

PARTS = ["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", ".wh..", "c\xff", str(OUTSIDE).lstrip("/"),
         "sentinel", "dir"]
TYPES = [b"0", b"0", b"5", b"5", b"2", b"2", b"1", b"6", b"3", b"x", b"L", b"K", b"g", b"S", b"7", b"Z", b"\0"]

name_st = st.lists(st.sampled_from(PARTS), min_size=0, max_size=5).map("/".join) | st.sampled_from(
    ["/", "..", "../..", str(OUTSIDE), str(OUTSIDE) + "/sentinel", "./", "a/../../.."])
link_st = name_st | st.sampled_from([str(OUTSIDE), str(OUTSIDE / "sentinel"), "/", "../../..", "a", "a/b"])


@st.composite
def member(draw):
    typ = draw(st.sampled_from(TYPES))
    name = draw(name_st)
    if typ in (b"x", b"g"):
        recs = draw(st.dictionaries(st.sampled_from(["path", "linkpath", "size", "uid", "mtime", "gid",
                                                     "SCHILY.xattr.user.x", "GNU.sparse.major", "odd key"]),
                                    name_st | st.sampled_from(["-1", "12", "1e3", "nan", "99999999999999"]),
                                    max_size=3))
        return tm.pax(recs, type=typ)
    if typ in (b"L", b"K"):
        return tm.gnu_long(typ, draw(name_st))
    data = draw(st.binary(max_size=600)) if typ in (b"0", b"7", b"\0") else b""
    mode = draw(st.sampled_from([0o644, 0o755, 0, 0o4755, 0o1777, 0o7777]))
    h = tm.header(name, typ, size=len(data), mode=mode, linkname=draw(link_st),
                  uid=draw(st.sampled_from([0, 1000, 2 ** 21])), devmajor=1, devminor=3)
    if draw(st.integers(0, 30)) == 0:      # occasionally corrupt a header byte
        i = draw(st.integers(0, 511))
        h = h[:i] + bytes([h[i] ^ 0x5A]) + h[i + 1:]
    return h + tm.pad(data)


stream_st = st.builds(lambda ms, end, cut: (b"".join(ms) + (tm.end() if end else b""))[:cut] if cut else
                      b"".join(ms) + (tm.end() if end else b""),
                      st.lists(member(), min_size=1, max_size=12), st.booleans(),
                      st.one_of(st.none(), st.none(), st.integers(0, 4000)))


def outside_state():
    out = {}
    for dirpath, dirs, files in os.walk(OUTSIDE):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            out[p] = (s.st_mode, s.st_size, s.st_mtime_ns, s.st_nlink)
    return out


BEFORE = outside_state()
LIMITS = Limits(max_bytes=1 << 20, max_entries=1000, max_name=1024, max_pax=4096, max_depth=32)


def _check_outside():
    assert outside_state() == BEFORE
    assert (OUTSIDE / "sentinel").read_text() == "sentinel\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_st)
def test_random_streams_stay_inside(data):
    with tempfile.TemporaryDirectory(prefix="fuzz-root-") as d:
        dest = Path(d) / "root"
        dest.mkdir()
        try:
            unpack_layer(io.BytesIO(data), dest, limits=LIMITS)
        except LayerError as e:
            assert "\n" not in str(e)
    _check_outside()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=3000), st.sampled_from([
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd"]))
def test_random_bytes_any_media_type(blob, mt):
    with tempfile.TemporaryDirectory(prefix="fuzz-root-") as d:
        try:
            unpack_layer(open_layer_stream(io.BytesIO(blob), mt), Path(d), limits=LIMITS)
        except LayerError:
            pass
    _check_outside()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_st, stream_st)
def test_random_layers_merge_inside(l1, l2):
    from container.engine.layer.snapshot import merge_layers

    with tempfile.TemporaryDirectory(prefix="fuzz-merge-") as d:
        layers = []
        for i, data in enumerate((l1, l2)):
            p = Path(d) / f"l{i}"
            p.mkdir()
            try:
                unpack_layer(io.BytesIO(data), p, limits=LIMITS)
            except LayerError:
                pass
            layers.append(p)
        snap = Path(d) / "snap"
        snap.mkdir()
        try:
            merge_layers(layers, snap)
        except LayerError as e:          # e.g. a hardlink to a lower layer that has no such file
            assert "\n" not in str(e)
        for dirpath, dirs, files in os.walk(snap):
            assert not any(n.startswith(".wh.") for n in dirs + files)
    _check_outside()


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    import shutil
    shutil.rmtree(OUTSIDE, ignore_errors=True)
