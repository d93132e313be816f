"""engine.layer.compression + engine.layer.unpack: every entry type, attributes, long names, compression."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

import tarmaker as tm  # noqa: E402

from container.engine.layer.compression import open_layer_stream  # noqa: E402
from container.engine.errors import LayerError, UnsupportedMediaType  # noqa: E402
from container.engine.layer.tar import Limits  # noqa: E402
from container.engine.layer.unpack import IMPLICIT_XATTR, unpack_layer  # noqa: E402

ROOT = os.geteuid() == 0
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_GZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def unpack(data: bytes, dest: Path, media_type=MT_TAR, **kw):
    dest.mkdir(exist_ok=True)
    return unpack_layer(open_layer_stream(io.BytesIO(data), media_type), dest, **kw)


def read_all(stream) -> bytes:
    out = []
    while True:
        b = stream.read(65536)
        if not b:
            return b"".join(out)
        out.append(b)


# -- compression ---------------------------------------------------------------------------------

PAYLOAD = tm.tar(tm.file("a", tm.seed_bytes(300_000)), tm.dir("d"), tm.file("d/b", b"bee"))


@pytest.mark.parametrize("mt,blob", [
    (MT_TAR, PAYLOAD),
    (MT_GZ, gzip.compress(PAYLOAD)),
    (MT_DOCKER_GZ, gzip.compress(PAYLOAD)),
    (MT_ZST, zstandard.ZstdCompressor().compress(PAYLOAD)),
])
def test_open_layer_stream_roundtrip(mt, blob):
    assert read_all(open_layer_stream(io.BytesIO(blob), mt)) == PAYLOAD


def test_gzip_multi_member_and_zero_padding():
    blob = gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:]) + b"\0" * 100
    assert read_all(open_layer_stream(io.BytesIO(blob), MT_GZ)) == PAYLOAD


def test_zstd_multi_frame():
    c = zstandard.ZstdCompressor()
    blob = c.compress(PAYLOAD[:5000]) + c.compress(PAYLOAD[5000:])
    assert read_all(open_layer_stream(io.BytesIO(blob), MT_ZST)) == PAYLOAD


@pytest.mark.parametrize("mt,blob,msg", [
    (MT_GZ, zstandard.ZstdCompressor().compress(PAYLOAD), "zstd"),
    (MT_ZST, gzip.compress(PAYLOAD), "gzip"),
    (MT_TAR, gzip.compress(PAYLOAD), "gzip"),
    (MT_GZ, PAYLOAD, "tar"),
])
def test_magic_conflicts_are_layer_errors(mt, blob, msg):
    with pytest.raises(LayerError, match=msg):
        read_all(open_layer_stream(io.BytesIO(blob), mt))


def test_unknown_media_type():
    with pytest.raises(UnsupportedMediaType, match="unsupported layer media type"):
        open_layer_stream(io.BytesIO(PAYLOAD), "application/vnd.oci.image.layer.v1.tar+bzip2")


@pytest.mark.parametrize("mt,blob", [
    (MT_GZ, gzip.compress(PAYLOAD)[:-20]),
    (MT_GZ, gzip.compress(PAYLOAD)[:40]),
    (MT_ZST, zstandard.ZstdCompressor().compress(PAYLOAD)[:-5]),
    (MT_ZST, zstandard.ZstdCompressor().compress(PAYLOAD)[:100]),
])
def test_truncated_compressed_streams(mt, blob):
    with pytest.raises(LayerError, match="truncated"):
        read_all(open_layer_stream(io.BytesIO(blob), mt))


def test_corrupt_gzip_and_trailing_garbage():
    g = bytearray(gzip.compress(PAYLOAD))
    g[30:40] = b"\xff" * 10
    with pytest.raises(LayerError, match="corrupt"):
        read_all(open_layer_stream(io.BytesIO(bytes(g)), MT_GZ))
    with pytest.raises(LayerError, match="trailing garbage"):
        read_all(open_layer_stream(io.BytesIO(gzip.compress(PAYLOAD) + b"garbage"), MT_GZ))


def test_corrupt_zstd():
    z = bytearray(zstandard.ZstdCompressor().compress(PAYLOAD))
    z[8:40] = b"\x00\xff" * 16
    with pytest.raises(LayerError):
        read_all(open_layer_stream(io.BytesIO(bytes(z)), MT_ZST))


# -- entry types and attributes ----------------------------------------------------------------------

def test_every_entry_type(tmp_path):
    data = tm.tar(
        tm.dir("etc", mode=0o755, mtime=1_500_000_000),
        tm.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o644, mtime=1_500_000_001),
        tm.dir("bin"),
        tm.file("bin/busybox", b"\x7fELF...", mode=0o4755, uid=0, gid=0),
        tm.symlink("bin/sh", "busybox"),
        tm.symlink("bin/abs", "/bin/busybox"),
        tm.hardlink("bin/ls", "bin/busybox"),
        tm.dir("tmp", mode=0o1777),
        tm.file("sgid", b"", mode=0o2755),
        tm.fifo("pipe", mode=0o640),
        tm.chardev("null", 1, 3, mode=0o666),
        tm.blockdev("loop0", 7, 0, mode=0o660),
        tm.file("owned", b"x", uid=1234, gid=5678, mode=0o600),
    )
    out = tmp_path / "l"
    stats = unpack(data, out)
    assert stats.entries == 13
    assert (out / "etc/passwd").read_bytes().startswith(b"root:")
    assert os.lstat(out / "etc/passwd").st_mtime == 1_500_000_001
    assert os.lstat(out / "etc").st_mtime == 1_500_000_000
    assert stat.S_IMODE(os.lstat(out / "bin/busybox").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(out / "sgid").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(out / "tmp").st_mode) == 0o1777
    assert os.readlink(out / "bin/sh") == "busybox"
    assert os.readlink(out / "bin/abs") == "/bin/busybox"
    assert os.lstat(out / "bin/ls").st_ino == os.lstat(out / "bin/busybox").st_ino
    assert stat.S_ISFIFO(os.lstat(out / "pipe").st_mode)
    assert stat.S_IMODE(os.lstat(out / "pipe").st_mode) == 0o640
    if ROOT:
        st = os.lstat(out / "null")
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
        assert stat.S_ISBLK(os.lstat(out / "loop0").st_mode)
        assert (os.lstat(out / "owned").st_uid, os.lstat(out / "owned").st_gid) == (1234, 5678)
        assert stats.skipped == 0
    else:
        assert not (out / "null").exists() and stats.skipped == 2


def test_pax_attributes_xattrs_and_long_names(tmp_path):
    long_dir = "/".join(["d" * 60] * 5)
    long_name = long_dir + "/" + "f" * 200
    long_target = "/" + "t" * 300
    data = tm.tar(
        tm.dir(long_dir.split("/")[0]),
        tm.file(long_name, b"long"),
        tm.symlink("longlink", long_target),
        # GNU 'L' / 'K' long names
        tm.gnu_long(b"L", "g" * 150) + tm.header("ignored", b"0", size=3) + tm.pad(b"gnu"),
        tm.gnu_long(b"K", "k" * 150) + tm.gnu_long(b"L", "gnulink") + tm.header("x", b"2", linkname="short"),
        # PAX uid/gid/mtime/size beyond ustar's fields, xattrs (SCHILY and LIBARCHIVE base64)
        tm.entry("big-ids", b"0", b"payload", uid=0, gid=0, pax_extra={
            "uid": "3000000000", "gid": "3000000001", "mtime": "1700000000.123456789",
            "SCHILY.xattr.user.schily": b"\x00\x01binary", "LIBARCHIVE.xattr.user.lib%20name": "aGVsbG8=",
            "unknown.vendor.key": "ignored", "hdrcharset": "BINARY"}),
        # ustar prefix field
        tm.header("pfx-file", b"0", size=2, prefix="pre/fix") + tm.pad(b"pf"),
    )
    out = tmp_path / "l"
    unpack(data, out)
    assert (out / long_name).read_bytes() == b"long"
    assert os.readlink(out / "longlink") == long_target
    assert (out / ("g" * 150)).read_bytes() == b"gnu"
    assert os.readlink(out / "gnulink") == "k" * 150
    st = os.lstat(out / "big-ids")
    assert st.st_mtime_ns == 1_700_000_000_123_456_789
    if ROOT:
        assert (st.st_uid, st.st_gid) == (3000000000, 3000000001)
    try:
        assert os.getxattr(out / "big-ids", "user.schily") == b"\x00\x01binary"
        assert os.getxattr(out / "big-ids", "user.lib name") == b"hello"
    except OSError as e:  # pragma: no cover - filesystem without user xattrs
        pytest.skip(f"no user xattrs here: {e}")
    assert (out / "pre/fix/pfx-file").read_bytes() == b"pf"


def test_base256_numeric_fields(tmp_path):
    data = tm.tar(tm.header("b256", b"0", size=5, uid=2 ** 33, gid=7, mtime=2 ** 40) + tm.pad(b"hello"))
    out = tmp_path / "l"
    with pytest.raises(LayerError, match="out of range"):     # uid 2**33 cannot exist on Linux
        unpack(data, out)
    data = tm.tar(tm.header("b256", b"0", size=5, mtime=2 ** 33 + 5, raw_size=b"\x80" + b"\0" * 10 + b"\x05")
                  + tm.pad(b"hello"))
    out2 = tmp_path / "l2"
    unpack(data, out2)
    assert (out2 / "b256").read_bytes() == b"hello"
    assert os.lstat(out2 / "b256").st_mtime == 2 ** 33 + 5


def test_whiteouts_kept_as_markers(tmp_path):
    data = tm.tar(tm.dir("a"), tm.file("a/.wh.gone", b"ignored data"), tm.file("a/.wh..wh..opq"),
                  tm.file(".wh.top"), tm.file("a/kept", b"k"))
    out = tmp_path / "l"
    unpack(data, out)
    assert (out / "a/.wh.gone").read_bytes() == b""
    assert (out / "a/.wh..wh..opq").exists() and (out / ".wh.top").exists()
    assert (out / "a/kept").read_bytes() == b"k"


def test_duplicates_later_wins(tmp_path):
    data = tm.tar(
        tm.file("f", b"first"), tm.file("f", b"second"),
        tm.dir("d", mode=0o700), tm.file("d/child", b"c"), tm.dir("d", mode=0o750),   # dir over dir keeps
        tm.dir("x"), tm.file("x/in", b"i"), tm.file("x", b"file now"),                # file over dir
        tm.file("y", b"y"), tm.dir("y"),                                              # dir over file
        tm.symlink("s", "/etc"), tm.file("s", b"not a link"),
    )
    out = tmp_path / "l"
    unpack(data, out)
    assert (out / "f").read_bytes() == b"second"
    assert (out / "d/child").read_bytes() == b"c"
    assert stat.S_IMODE(os.lstat(out / "d").st_mode) == 0o750
    assert (out / "x").read_bytes() == b"file now"
    assert (out / "y").is_dir()
    assert not (out / "s").is_symlink() and (out / "s").read_bytes() == b"not a link"


def test_mode_0000_dir_holding_files(tmp_path):
    data = tm.tar(tm.dir("locked", mode=0o000), tm.file("locked/f", b"inside", mode=0o000),
                  tm.dir("locked/sub", mode=0o000), tm.file("locked/sub/g", b"deeper"))
    out = tmp_path / "l"
    unpack(data, out)
    assert stat.S_IMODE(os.lstat(out / "locked").st_mode) == 0
    assert stat.S_IMODE(os.lstat(out / "locked/sub").st_mode) == 0
    os.chmod(out / "locked", 0o700)
    os.chmod(out / "locked/sub", 0o700)
    assert (out / "locked/sub/g").read_bytes() == b"deeper"


def test_implicit_parents_marked_and_root_entry(tmp_path):
    out = tmp_path / "l"
    unpack(tm.tar(tm.file("a/b/c", b"x")), out)
    assert (out / "a/b/c").read_bytes() == b"x"
    assert stat.S_IMODE(os.lstat(out).st_mode) == 0o755
    try:
        assert os.getxattr(out / "a", IMPLICIT_XATTR) == b"1"
    except OSError as e:  # pragma: no cover
        pytest.skip(f"no user xattrs here: {e}")
    out2 = tmp_path / "l2"
    unpack(tm.tar(tm.dir("./", mode=0o711), tm.dir("a"), tm.file("a/b", b"x")), out2)
    assert stat.S_IMODE(os.lstat(out2).st_mode) == 0o711
    with pytest.raises(OSError):
        os.getxattr(out2 / "a", IMPLICIT_XATTR)


def test_same_tree_as_gnu_tar(tmp_path):
    """A tarfile-written archive of a real tree: our extractor and tar -x agree on everything."""
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(tm.seed_bytes(70_000, 3))
    os.chmod(src / "usr/bin/tool", 0o755)
    os.symlink("tool", src / "usr/bin/alias")
    os.link(src / "usr/bin/tool", src / "usr/bin/tool2")
    (src / "etc").mkdir()
    (src / "etc/conf").write_text("c\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(src, arcname=".")
    ours = tmp_path / "ours"
    unpack(buf.getvalue(), ours)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (tmp_path / "t.tar").write_bytes(buf.getvalue())
    assert os.system(f"tar -xpf {tmp_path / 't.tar'} -C {theirs}") == 0
    assert tree(ours) == tree(theirs)


def tree(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        os.readlink(p) if stat.S_ISLNK(st.st_mode) else
                        (p.read_bytes() if stat.S_ISREG(st.st_mode) else None),
                        st.st_mtime if not stat.S_ISDIR(st.st_mode) else None)
    return out


def test_limits(tmp_path):
    data = tm.tar(*[tm.file(f"f{i}", b"x" * 100) for i in range(10)])
    with pytest.raises(LayerError, match="too many entries"):
        unpack(data, tmp_path / "a", limits=Limits(max_entries=5))
    with pytest.raises(LayerError, match="too large"):
        unpack(data, tmp_path / "b", limits=Limits(max_bytes=500))
    with pytest.raises(LayerError, match="longer than"):
        unpack(tm.tar(tm.file("n" * 300)), tmp_path / "c", limits=Limits(max_name=200))
    with pytest.raises(LayerError, match="header too large"):
        unpack(tm.tar(tm.entry("p", pax_extra={"comment": "c" * 5000})), tmp_path / "d",
               limits=Limits(max_pax=1000))
    unpack(data, tmp_path / "e", limits=Limits(max_entries=10, max_bytes=1000))


@pytest.mark.parametrize("mt,compress", [(MT_TAR, lambda b: b), (MT_GZ, gzip.compress),
                                          (MT_ZST, zstandard.ZstdCompressor().compress)])
def test_truncated_and_corrupt_streams_are_layer_errors(tmp_path, mt, compress):
    good = tm.tar(tm.file("a", tm.seed_bytes(5000)), tm.file("b", b"b"))
    cases = {
        "cut-in-data": good[:1200],
        "cut-in-header": good[:512 * 11 + 100],
        "bad-checksum": tm.header("a", b"0", size=1, chksum=12345) + tm.pad(b"x") + tm.end(),
        "garbage": b"this is not a tar archive at all" * 40,
    }
    for i, (what, raw) in enumerate(cases.items()):
        with pytest.raises(LayerError):
            unpack(compress(raw), tmp_path / f"t{i}", mt)


def test_reads_only_to_end_marker_and_stream_can_be_drained(tmp_path):
    data = tm.tar(tm.file("a", b"x")) + b"\0" * 10240
    s = io.BytesIO(data)
    unpack_layer(s, (tmp_path / "o").resolve() if (tmp_path / "o").mkdir() is None else None)
    s.read()   # the caller drains the rest; nothing broke


def test_limits_from_env(tmp_path, monkeypatch):
    assert Limits.from_env({}) == Limits()
    lim = Limits.from_env({"CONTAINER_LAYER_MAX_BYTES": "2K", "CONTAINER_LAYER_MAX_ENTRIES": "3"})
    assert (lim.max_bytes, lim.max_entries) == (2048, 3)
    with pytest.raises(LayerError, match="CONTAINER_LAYER_MAX_ENTRIES"):
        Limits.from_env({"CONTAINER_LAYER_MAX_ENTRIES": "lots"})
    monkeypatch.setenv("CONTAINER_LAYER_MAX_ENTRIES", "2")
    with pytest.raises(LayerError, match="too many entries"):
        unpack(tm.tar(tm.file("a"), tm.file("b"), tm.file("c")), tmp_path / "o")


@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_owner_right_under_a_setgid_destination(tmp_path):
    out = tmp_path / "l"
    out.mkdir()
    os.chown(out, 0, 4321)
    os.chmod(out, 0o2755)
    unpack_layer(io.BytesIO(tm.tar(tm.file("f", b"x", uid=0, gid=0), tm.file("g", b"y", uid=7, gid=8),
                                   tm.dir("d", uid=0, gid=0), tm.file("d/h", b"z"))), out)
    assert (os.lstat(out / "f").st_gid, os.lstat(out / "d/h").st_gid, os.lstat(out / "d").st_gid) == (0, 0, 0)
    assert (os.lstat(out / "g").st_uid, os.lstat(out / "g").st_gid) == (7, 8)
    assert stat.S_IMODE(os.lstat(out / "f").st_mode) == 0o644


# -- issue 11: PAX records per POSIX, the end of a stream, sparse maps ----------------------------------

def test_pax_empty_value_removes_the_field(tmp_path):
    data = tm.tar(
        tm.pax({"uid": "4242", "mtime": "1000", "SCHILY.xattr.user.global": "g"}, type=b"g"),
        tm.file("a", b"a", uid=7),                                       # the globals apply
        tm.entry("b", b"0", b"b", uid=7, pax_extra={"uid": "", "SCHILY.xattr.user.global": "",
                                                    "SCHILY.xattr.user.empty": ""}),   # removed for b
        tm.pax({"mtime": ""}, type=b"g"),                                # a global removed
        tm.file("c", b"c", uid=7, mtime=2000),
        tm.entry("d", b"0", b"d", pax_extra={"path": ""}))               # an empty path: the header's name
    from container.engine.layer.tar import Limits, Source, iter_entries

    src = Source(io.BytesIO(data))
    got = {}
    for e in iter_entries(src, Limits()):
        got[e.name] = e
        src.copy_padded(None, e.size)
    assert got[b"a"].uid == 4242 and got[b"a"].mtime_ns == 1000 * 10**9 and got[b"a"].xattrs == {"user.global": b"g"}
    assert got[b"b"].uid == 7 and got[b"b"].xattrs == {} and got[b"b"].mtime_ns == 1000 * 10**9
    assert got[b"c"].uid == 4242 and got[b"c"].mtime_ns == 2000 * 10**9
    assert b"d" in got
    unpack(data, tmp_path / "t")
    try:
        assert os.getxattr(tmp_path / "t/a", "user.global") == b"g"
    except OSError:
        pytest.skip("no user xattrs here")
    assert "user.global" not in os.listxattr(tmp_path / "t/b")
    assert "user.empty" not in os.listxattr(tmp_path / "t/b")


def test_stream_end_at_a_header_boundary(tmp_path):
    unpack(tm.tar(tm.file("a", b"x" * 700), eof=False), tmp_path / "a")
    assert (tmp_path / "a/a").read_bytes() == b"x" * 700
    unpack(b"", tmp_path / "empty")                                      # an empty stream: an empty layer
    with pytest.raises(LayerError, match="extended header without an entry"):
        unpack(tm.pax({"path": "x"}), tmp_path / "b")
    with pytest.raises(LayerError, match="truncated"):
        unpack(tm.tar(tm.file("a", b"x" * 700), eof=False)[:-100], tmp_path / "c")


@pytest.mark.parametrize("records,match", [
    ({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "0,10,5,10",
      "GNU.sparse.size": "100"}, "sparse map"),                          # overlapping regions
    ({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "0,4,200,4",
      "GNU.sparse.size": "100"}, "sparse map"),                          # past the real size
    ({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "0,3",
      "GNU.sparse.size": "100"}, "covers 3 bytes"),                      # not the member's data
    ({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "0,x",
      "GNU.sparse.size": "100"}, "bad GNU sparse map"),
    ({"GNU.sparse.major": "2", "GNU.sparse.minor": "0"}, "unsupported GNU sparse format"),
    ({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "0,8",
      "GNU.sparse.size": str(1 << 50)}, "too large"),                    # a hole bomb: the real size counts
])
def test_bad_sparse_maps_are_layer_errors(tmp_path, records, match):
    with pytest.raises(LayerError, match=match):
        unpack(tm.tar(tm.entry("s", b"0", b"x" * 8, pax_extra=records)), tmp_path / "t")


def test_sparse_pax_1_0_by_hand(tmp_path):
    m = tm.pad(b"2\n0\n3\n8192\n2\n")
    data = tm.tar(tm.entry("./GNUSparseFile.1/f", b"0", m + b"abcXY", pax_extra={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "f", "GNU.sparse.realsize": "10000"}))
    unpack(data, tmp_path / "t")
    got = (tmp_path / "t/f").read_bytes()
    assert got == b"abc" + bytes(8189) + b"XY" + bytes(10000 - 8194)
    from container.engine.layer.verify import compare_tree, replay

    assert compare_tree(replay(io.BytesIO(data))[0], tmp_path / "t") == []
