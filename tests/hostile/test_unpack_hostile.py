"""Adversarial layers (issue 5 item 1): every case either stays inside the layer root (as umoci does)
or is rejected with a one-line LayerError, and a host sentinel outside the root stays untouched
(content, mode, mtime), with no new file anywhere outside the root.

Layers are built with tests/tarmaker.py (raw headers): tarfile would refuse to write most of them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import sys
from pathlib import Path

import pytest
import zstandard

import tarmaker as tm  # noqa: E402

from container.engine.layer.compression import open_layer_stream  # noqa: E402
from container.engine.errors import LayerError  # noqa: E402
from container.engine.layer.snapshot import ensure_snapshot  # noqa: E402
from container.engine.layer.tar import Limits  # noqa: E402
from container.engine.layer.owners import OwnerPolicy  # noqa: E402
from container.engine.layer.unpack import unpack_layer  # noqa: E402
from container.engine.layer.verify import compare_tree, replay  # noqa: E402

ROOT = OwnerPolicy.current().devices     # real root: device nodes made (not in a user namespace)
SPECIAL = 0o7777 if OwnerPolicy.current().keep_special else 0o1777    # single id: setuid/setgid dropped
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZST = "application/vnd.oci.image.layer.v1.tar+zstd"


def listing(base: Path, skip: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if Path(dirpath) / d != skip]
        for n in dirs + files:
            p = Path(dirpath) / n
            if p == skip:
                continue
            st = os.lstat(p)
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


class Jail:
    """tmp/{host/sentinel, host/dir/, root/}; `root` is where layers go."""

    def __init__(self, tmp: Path):
        self.base = tmp
        self.host = tmp / "host"
        (self.host / "dir").mkdir(parents=True)
        self.sentinel = self.host / "sentinel"
        self.sentinel.write_text("HOST PATH WAS CHANGED! THIS IS A PATH ESCAPE!\n" [:0] + "host sentinel\n")
        os.chmod(self.sentinel, 0o644)
        (self.host / "dir" / "inner").write_text("inner\n")
        self.root = tmp / "root"
        self.root.mkdir()
        self.passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
        self.before = listing(self.base, self.root)
        self.sentinel_stat = os.lstat(self.sentinel)

    def check(self) -> None:
        st = os.lstat(self.sentinel)
        assert self.sentinel.read_text() == "host sentinel\n", "HOST PATH WAS CHANGED! PATH ESCAPE!"
        assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink) == (
            self.sentinel_stat.st_mode, self.sentinel_stat.st_uid, self.sentinel_stat.st_gid,
            self.sentinel_stat.st_mtime_ns, self.sentinel_stat.st_nlink)
        assert listing(self.base, self.root) == self.before, "something changed outside the root"
        assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == self.passwd


@pytest.fixture
def jail(tmp_path):
    j = Jail(tmp_path)
    yield j
    j.check()


def unpack(data: bytes, dest: Path, media_type=MT_TAR, **kw):
    """Like pull: unpack to the end-of-archive marker, then drain the rest (for the diff_id)."""
    s = open_layer_stream(io.BytesIO(data), media_type)
    stats = unpack_layer(s, dest, **kw)
    while s.read(1 << 20):
        pass
    return stats


# Each case: id -> (layer builder(jail) -> bytes, expected: "ok" | regex of the LayerError,
#                   check(root) for "ok" cases or None)
S = lambda j: str(j.sentinel)          # noqa: E731  absolute host path of the sentinel
H = lambda j: str(j.host)              # noqa: E731

CASES = {
    # -- names
    "dotdot-file": (lambda j: tm.tar(tm.file("../../../../host/sentinel", b"pwned")), "ok",
                    lambda r: (r / "host/sentinel").read_bytes() == b"pwned"),
    "dotdot-mid": (lambda j: tm.tar(tm.file("a/b/../../../../x", b"x")), "ok", lambda r: (r / "x").exists()),
    "dotdot-only": (lambda j: tm.tar(tm.dir("..")), "ok", lambda r: True),
    "absolute-file": (lambda j: tm.tar(tm.file(S(j), b"pwned")), "ok",
                      lambda r: (r / S_rel()).read_bytes() == b"pwned"),
    "absolute-dir-then-file": (lambda j: tm.tar(tm.dir("/"), tm.dir(H(j)), tm.file(H(j) + "/new", b"n")), "ok",
                               lambda r: True),
    "pax-path-dotdot": (lambda j: tm.tar(tm.entry("innocent", pax_extra={"path": "../../host/sentinel"},
                                                  data=b"pwned")), "ok",
                        lambda r: (r / "host/sentinel").read_bytes() == b"pwned"),
    "gnu-longname-dotdot": (lambda j: tm.tar(tm.gnu_long(b"L", "../" * 40 + "host/sentinel")
                                             + tm.header("x", b"0", size=5) + tm.pad(b"pwned")), "ok",
                            lambda r: (r / "host/sentinel").exists()),
    "nul-in-pax-path": (lambda j: tm.tar(tm.entry("x", pax_extra={"path": b"a\0/../../b"})), "NUL"),
    "empty-name": (lambda j: tm.tar(tm.file("", b"x")), "empty name"),
    "non-utf8-name": (lambda j: tm.tar(tm.file(b"caf\xe9-\xff\xfe", b"latin1"), tm.symlink(b"l\xff", b"\xfe")),
                      "ok", lambda r: os.path.exists(os.fsencode(r) + b"/caf\xe9-\xff\xfe")),
    "long-name-over-limit": (lambda j: tm.tar(tm.file("a/" * 2100 + "x")), "longer than"),
    "component-too-long": (lambda j: tm.tar(tm.file("n" * 300)), "too long|File name"),
    "deep-nesting": (lambda j: tm.tar(tm.file("d/" * 250 + "f", b"deep")), "ok",
                     lambda r: (r / ("d/" * 250 + "f")).read_bytes() == b"deep"),
    "too-deep": (lambda j: tm.tar(tm.file("d/" * 1000 + "f", b"deep")), "deeper than"),
    # -- root entry
    "root-to-symlink": (lambda j: tm.tar(tm.symlink(".", H(j)), tm.file("x", b"x")), "root directory"),
    "root-to-file": (lambda j: tm.tar(tm.file("./", b"x")), "root directory"),
    "root-dotdot-symlink": (lambda j: tm.tar(tm.symlink("../..", "/")), "root directory"),
    "root-hardlink": (lambda j: tm.tar(tm.file("f"), tm.hardlink("/", "f")), "root directory"),
    "hardlink-to-root": (lambda j: tm.tar(tm.hardlink("h", "./")), "root directory"),
    # -- symlinks, then writes through them in the same layer: resolved inside the root (as umoci's
    #    SecureJoin and docker's chrooted untar do): absolute targets re-rooted, ".." clamped
    "symlink-abs-out-write": (lambda j: tm.tar(tm.symlink("evil", H(j)), tm.file("evil/sentinel", b"pwned")),
                              "ok", lambda r: (r / H_rel() / "sentinel").read_bytes() == b"pwned"
                              and os.readlink(r / "evil") == "/" + H_rel()),
    "symlink-rel-out-write": (lambda j: tm.tar(tm.symlink("evil", "../host"), tm.file("evil/sentinel", b"p")),
                              "ok", lambda r: (r / "host/sentinel").read_bytes() == b"p"),
    "symlink-deep-rel-write": (lambda j: tm.tar(tm.dir("a"), tm.dir("a/b"), tm.symlink("a/b/c", "../../../../.."),
                                                tm.file("a/b/c/host/sentinel", b"p")), "ok",
                               lambda r: (r / "host/sentinel").read_bytes() == b"p"),
    "symlink-in-root-write": (lambda j: tm.tar(tm.dir("real"), tm.symlink("l", "real"), tm.file("l/x", b"x")),
                              "ok", lambda r: (r / "real/x").read_bytes() == b"x" and (r / "l").is_symlink()),
    "symlink-self-dir": (lambda j: tm.tar(tm.symlink("a", "."), tm.file("a/a/a/x", b"x")), "ok",
                         lambda r: (r / "x").read_bytes() == b"x"),
    "dir-replaced-by-symlink": (lambda j: tm.tar(tm.dir("d"), tm.file("d/ok", b"ok"), tm.symlink("d", H(j)),
                                                 tm.file("d/sentinel", b"pwned")), "ok",
                                lambda r: (r / H_rel() / "sentinel").read_bytes() == b"pwned"),
    "symlink-loop": (lambda j: tm.tar(tm.symlink("l1", "l2"), tm.symlink("l2", "l1"), tm.file("l1/x", b"x")),
                     "symbolic links"),
    "symlink-self-loop": (lambda j: tm.tar(tm.symlink("l", "l/x"), tm.file("l/y", b"x")), "symbolic links"),
    "symlink-chain-out": (lambda j: tm.tar(tm.symlink("a", "b"), tm.symlink("b", "c/" + "../" * 20),
                                           tm.symlink("c", H(j)), tm.file("a/sentinel", b"chain")), "ok",
                          lambda r: (r / "sentinel").read_bytes() == b"chain"),
    "symlink-chain-abs": (lambda j: tm.tar(tm.symlink("a", "/b"), tm.symlink("b", H(j)),
                                           tm.file("a/dir/inner", b"chain")), "ok",
                          lambda r: (r / H_rel() / "dir/inner").read_bytes() == b"chain"),
    "symlink-to-later-symlink": (lambda j: tm.tar(tm.symlink("a", "b"), tm.file("x", b"0"),
                                                  tm.symlink("b", "../" * 20 + H_rel()),
                                                  tm.file("a/sentinel", b"later")), "ok",
                                 lambda r: (r / H_rel() / "sentinel").read_bytes() == b"later"),
    "symlink-dotdot-in-target-mid": (lambda j: tm.tar(tm.dir("x"), tm.symlink("x/l", "../../../../etc"),
                                                      tm.file("x/l/passwd", b"root")), "ok",
                                     lambda r: (r / "etc/passwd").read_bytes() == b"root"),
    "symlink-to-file-write": (lambda j: tm.tar(tm.file("f", b"f"), tm.symlink("l", "f"), tm.file("l/x", b"x")),
                              "not a directory"),
    "symlink-dangling-creates-inside": (lambda j: tm.tar(tm.symlink("d", "/nowhere/deep"), tm.file("d/x", b"x")),
                                        "ok", lambda r: (r / "nowhere/deep/x").read_bytes() == b"x"),
    "symlink-dir-entry-through": (lambda j: tm.tar(tm.symlink("d", H(j)), tm.dir("d/dir", mode=0o777),
                                                   tm.file("d/dir/inner", b"in")), "ok",
                                  lambda r: (r / H_rel() / "dir/inner").read_bytes() == b"in"
                                  and stat.S_IMODE(os.lstat(r / H_rel() / "dir").st_mode) == 0o777),
    "symlink-hardlink-through": (lambda j: tm.tar(tm.dir("real"), tm.file("real/f", b"F"), tm.symlink("l", "/real"),
                                                  tm.hardlink("h", "l/f"), tm.hardlink("l/g", "real/f")), "ok",
                                 lambda r: os.lstat(r / "h").st_ino == os.lstat(r / "real/f").st_ino
                                 == os.lstat(r / "real/g").st_ino),
    "symlink-whiteout-through": (lambda j: tm.tar(tm.dir("real"), tm.symlink("l", "real"), tm.file("l/.wh.gone")),
                                 "ok", lambda r: (r / "real/.wh.gone").exists()),
    "symlink-then-dir-entry": (lambda j: tm.tar(tm.symlink("d", H(j)), tm.dir("d", mode=0o777),
                                                tm.file("d/sentinel", b"in root")), "ok",
                               lambda r: (r / "d/sentinel").read_bytes() == b"in root"
                               and not (r / "d").is_symlink()),
    "symlink-then-file-over": (lambda j: tm.tar(tm.symlink("f", S(j)), tm.file("f", b"replaced")), "ok",
                               lambda r: (r / "f").read_bytes() == b"replaced"),
    "symlink-dir-chmod": (lambda j: tm.tar(tm.symlink("d", H(j) + "/dir"), tm.dir("d/", mode=0o777)), "ok",
                          lambda r: (r / "d").is_dir() and not (r / "d").is_symlink()),
    "symlink-then-node": (lambda j: tm.tar(tm.symlink("p", S(j)), tm.fifo("p")), "ok",
                          lambda r: stat.S_ISFIFO(os.lstat(r / "p").st_mode)),
    # -- hardlinks
    # a target that is not in this layer becomes a placeholder for the merge (cleaned, inside the root)
    "hardlink-abs-out": (lambda j: tm.tar(tm.hardlink("h", S(j))), "ok",
                         lambda r: placeholder(r / "h") == S_abs().lstrip("/").encode()),
    "hardlink-dotdot-out": (lambda j: tm.tar(tm.hardlink("h", "../host/sentinel")), "ok",
                            lambda r: placeholder(r / "h") == b"host/sentinel"),
    "hardlink-via-symlink-dir": (lambda j: tm.tar(tm.symlink("s", H(j)), tm.hardlink("h", "s/sentinel")),
                                 "ok", lambda r: placeholder(r / "h") == H_rel().encode() + b"/sentinel"),
    "hardlink-to-symlink-out": (lambda j: tm.tar(tm.symlink("s", S(j)), tm.hardlink("h", "s"),
                                                 tm.file("h", b"replaces the link, never writes through")), "ok",
                                lambda r: os.readlink(r / "s") == S_abs() and (r / "h").read_bytes().startswith(b"rep")),
    "hardlink-to-dir": (lambda j: tm.tar(tm.dir("d"), tm.hardlink("h", "d")), "is a directory"),
    "hardlink-to-later": (lambda j: tm.tar(tm.hardlink("h", "later"), tm.file("later", b"L")), "ok",
                          lambda r: placeholder(r / "h") == b"later"),
    "hardlink-to-self": (lambda j: tm.tar(tm.hardlink("h", "./h")), "hardlink to itself"),
    "hardlink-reserved-xattr": (lambda j: tm.tar(tm.entry("f", b"0", b"data", pax_extra={
        "SCHILY.xattr.user.container.hardlink": "etc/shadow"})), "ok",
                                lambda r: placeholder(r / "f") is None),
    "hardlink-then-write": (lambda j: tm.tar(tm.file("a", b"orig"), tm.hardlink("b", "a"), tm.file("b", b"new")),
                            "ok", lambda r: (r / "a").read_bytes() == b"orig" and (r / "b").read_bytes() == b"new"),
    # -- whiteouts
    "whiteout-dotdot": (lambda j: tm.tar(tm.file("../.wh.sentinel")), "ok", lambda r: (r / ".wh.sentinel").exists()),
    "whiteout-abs": (lambda j: tm.tar(tm.file(H(j) + "/.wh.sentinel")), "ok", lambda r: True),
    "whiteout-dot": (lambda j: tm.tar(tm.file(".wh..")), "invalid whiteout"),
    "whiteout-dotdot-name": (lambda j: tm.tar(tm.file("a/.wh...")), "invalid whiteout"),
    "whiteout-bare": (lambda j: tm.tar(tm.file("a/.wh.")), "invalid whiteout"),
    "whiteout-as-dir": (lambda j: tm.tar(tm.dir(".wh.etc")), "not a regular file"),
    "whiteout-as-symlink": (lambda j: tm.tar(tm.symlink(".wh.etc", H(j))), "not a regular file"),
    "whiteout-parent": (lambda j: tm.tar(tm.file(".wh.x/y")), "cannot be a directory"),
    "opaque-as-dir": (lambda j: tm.tar(tm.dir("a/.wh..wh..opq")), "not a regular file"),
    "opaque-as-parent": (lambda j: tm.tar(tm.file("a/.wh..wh..opq/x", b"x")), "cannot be a directory"),
    "aufs-meta-as-parent": (lambda j: tm.tar(tm.file(".wh..wh.plnk/1.2", b"x")), "ok",
                            lambda r: (r / ".wh..wh.plnk/1.2").exists()),
    "opaque-at-root": (lambda j: tm.tar(tm.file(".wh..wh..opq")), "ok", lambda r: (r / ".wh..wh..opq").exists()),
    "opaque-dotdot": (lambda j: tm.tar(tm.file("../../.wh..wh..opq")), "ok", lambda r: True),
    "opaque-with-data": (lambda j: tm.tar(tm.file("d/.wh..wh..opq", b"data is dropped")), "ok",
                         lambda r: (r / "d/.wh..wh..opq").read_bytes() == b""),
    "whiteout-through-symlink": (lambda j: tm.tar(tm.symlink("s", H(j)), tm.file("s/.wh.sentinel")),
                                 "ok", lambda r: (r / H_rel() / ".wh.sentinel").exists()),
    "aufs-plnk-hardlink": (lambda j: tm.tar(tm.dir(".wh..wh.plnk"), tm.file(".wh..wh.plnk/1.2", b"shared"),
                                            tm.hardlink("bin/x", ".wh..wh.plnk/1.2")), "ok",
                           lambda r: (r / "bin/x").read_bytes() == b"shared"),
    # -- devices, fifos, modes
    "devices": (lambda j: tm.tar(tm.chardev("dev/mem", 1, 1), tm.blockdev("dev/sda", 8, 0), tm.fifo("dev/fifo")),
                "ok", lambda r: stat.S_ISFIFO(os.lstat(r / "dev/fifo").st_mode)
                and (not ROOT or stat.S_ISCHR(os.lstat(r / "dev/mem").st_mode))),
    "setuid-root-file": (lambda j: tm.tar(tm.file("bin/su", b"#!", mode=0o6755, uid=0, gid=0)), "ok",
                         lambda r: stat.S_IMODE(os.lstat(r / "bin/su").st_mode) == 0o6755 & SPECIAL),
    "setuid-nonroot-owner": (lambda j: tm.tar(tm.file("x", b"#!", mode=0o4755, uid=1000, gid=1000)), "ok",
                             lambda r: stat.S_IMODE(os.lstat(r / "x").st_mode) == 0o4755 & SPECIAL),
    "mode-0000-dir": (lambda j: tm.tar(tm.dir("d", mode=0), tm.file("d/f", b"f", mode=0), tm.dir("d/e", mode=0),
                                       tm.file("d/e/g", b"g")), "ok",
                      lambda r: stat.S_IMODE(os.lstat(r / "d").st_mode) == 0),
    "mode-bits-garbage": (lambda j: tm.tar(tm.header("m", b"0", mode=0o7777777) + tm.end()), "ok",
                          lambda r: stat.S_IMODE(os.lstat(r / "m").st_mode) == 0o7777 & SPECIAL),
    # -- types and headers
    "gnu-sparse-empty": (lambda j: tm.tar(tm.header("sparse", b"S", size=0, magic=b"ustar  \0")), "ok",
                         lambda r: (r / "sparse").read_bytes() == b""),
    "pax-sparse": (lambda j: tm.tar(tm.entry("sp", pax_extra={"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                                               "GNU.sparse.name": "x"})), "sparse"),
    "unknown-type": (lambda j: tm.tar(tm.header("u", b"Z")), "unsupported tar entry type"),
    "multivolume": (lambda j: tm.tar(tm.header("u", b"M")), "unsupported tar entry type"),
    "socket-like-type-8": (lambda j: tm.tar(tm.header("u", b"8")), "unsupported tar entry type"),
    "contiguous-file": (lambda j: tm.tar(tm.header("c", b"7", size=2) + tm.pad(b"cc")), "ok",
                        lambda r: (r / "c").read_bytes() == b"cc"),
    "pax-odd-keys": (lambda j: tm.tar(tm.entry("odd", b"0", b"v", pax_extra={
        "": "empty value", "weird key with spaces": "=", "comment": "\n\n", "SCHILY.xattr.": "no name",
        "SCHILY.xattr.trusted.evil": "x", "SCHILY.xattr.security.capability": b"\x01\x00\x00\x02",
        "SCHILY.xattr.user.container.implicit": "1", "LIBARCHIVE.xattr.%zz": "!!!"})), "ok|bad",
                     lambda r: (r / "odd").read_bytes() == b"v"),
    "pax-no-equals": (lambda j: tm.tar(tm.header("p", b"x", size=12) + tm.pad(b"12 noequals\n")
                                       + tm.file("f")), "bad PAX"),
    "pax-bad-length": (lambda j: tm.tar(tm.header("p", b"x", size=12) + tm.pad(b"99 path=abc\n")
                                        + tm.file("f")), "bad PAX"),
    "pax-negative-size": (lambda j: tm.tar(tm.entry("f", pax_extra={"size": "-5"})), "out of range"),
    "pax-huge-size": (lambda j: tm.tar(tm.entry("f", pax_extra={"size": str(1 << 62)})), "too large"),
    "pax-bad-uid": (lambda j: tm.tar(tm.entry("f", pax_extra={"uid": "abc"})), "bad numeric"),
    "pax-bad-mtime": (lambda j: tm.tar(tm.entry("f", pax_extra={"mtime": "nan"})), "bad numeric"),
    "pax-header-alone": (lambda j: tm.tar(tm.pax({"path": "x"})), "extended header without an entry"),
    "pax-global-path": (lambda j: tm.tar(tm.pax({"path": "../../global"}, type=b"g"), tm.file("a", b"1")), "ok",
                        lambda r: (r / "global").read_bytes() == b"1"),
    "bad-octal": (lambda j: tm.tar(tm.header("f", b"0", raw_size=b"12345678xyz\0")), "bad tar header"),
    "bad-checksum": (lambda j: tm.tar(tm.header("f", b"0", chksum=1)), "checksum"),
    "hidden-after-zero-block": (lambda j: tm.tar(tm.file("a"), b"\0" * 512, tm.file("hidden")), "lone zero block"),
    "lone-zero-block-at-eof": (lambda j: tm.file("a", b"x") + b"\0" * 512, "ok", lambda r: (r / "a").exists()),
    # -- duplicates
    "duplicates": (lambda j: tm.tar(tm.file("a", b"1"), tm.dir("a"), tm.file("a/b", b"2"), tm.symlink("a", "/"),
                                    tm.file("a", b"3")), "ok", lambda r: (r / "a").read_bytes() == b"3"),
    "duplicate-dir-mode": (lambda j: tm.tar(tm.dir("d", mode=0), tm.file("d/x", b"x"), tm.dir("d", mode=0)), "ok",
                           lambda r: True),
}


def placeholder(p: Path):
    """The lower-layer target a hardlink placeholder records (None: not a placeholder)."""
    try:
        return os.getxattr(p, "user.container.hardlink", follow_symlinks=False)
    except OSError:
        return None


def H_rel() -> str:
    return _current["host"].lstrip("/")


def S_rel() -> str:
    return _current["sentinel"].lstrip("/")


def S_abs() -> str:
    return _current["sentinel"]


_current: dict = {}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_layer(jail, case):
    build, expect, *check = CASES[case]
    _current["sentinel"] = str(jail.sentinel)
    _current["host"] = str(jail.host)
    data = build(jail)
    if expect == "ok":
        unpack(data, jail.root)
        assert check[0](jail.root), f"{case}: unexpected result inside the root"
        model, _ = replay(io.BytesIO(data))          # fsck --deep's replay agrees with the extractor
        assert compare_tree(model, jail.root) == [], case
    elif expect.startswith("ok|"):
        try:
            unpack(data, jail.root)
        except LayerError as e:
            assert "\n" not in str(e)
            import re
            assert re.search(expect[3:], str(e)), str(e)
        else:
            assert check[0](jail.root)
    else:
        with pytest.raises(LayerError, match=expect) as ei:
            unpack(data, jail.root)
        assert "\n" not in str(ei.value)


# -- compressed streams: truncation, corruption, bombs ------------------------------------------------

GOOD = tm.tar(tm.dir("d"), *[tm.file(f"d/f{i}", tm.seed_bytes(3000, i)) for i in range(20)])
ZC = zstandard.ZstdCompressor()


@pytest.mark.parametrize("case,mt,blob", [
    ("gzip-truncated-middle", MT_GZ, gzip.compress(GOOD)[: len(gzip.compress(GOOD)) // 2]),
    ("gzip-truncated-trailer", MT_GZ, gzip.compress(GOOD)[:-4]),
    ("gzip-bitflip", MT_GZ, (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:])(gzip.compress(GOOD))),
    ("gzip-header-only", MT_GZ, gzip.compress(GOOD)[:10]),
    ("zstd-truncated-middle", MT_ZST, ZC.compress(GOOD)[: len(ZC.compress(GOOD)) // 2]),
    ("zstd-truncated-end", MT_ZST, ZC.compress(GOOD)[:-3]),
    ("zstd-bitflip", MT_ZST, (lambda b: b[:60] + bytes([b[60] ^ 0xFF]) + b[61:])(ZC.compress(GOOD))),
    ("tar-truncated", MT_TAR, GOOD[:7000]),
    ("tar-cut-in-entry", MT_TAR, GOOD[:-1024 - 512 * 3]),
    ("tar-random", MT_TAR, tm.seed_bytes(4096, 99)),
    ("gzip-of-garbage", MT_GZ, gzip.compress(tm.seed_bytes(4096, 98))),
    ("zstd-of-garbage", MT_ZST, ZC.compress(tm.seed_bytes(4096, 97))),
    ("declared-zstd-is-gzip", MT_ZST, gzip.compress(GOOD)),
])
def test_corrupt_streams(jail, case, mt, blob):
    with pytest.raises(LayerError) as ei:
        unpack(blob, jail.root, mt)
    assert "\n" not in str(ei.value)


def _bomb_tar(n_bytes: int) -> bytes:
    """A tar holding one file of n_bytes zeros, gzip-compressed on the fly (~1000:1)."""
    co = zlib_gzip()  # level 1: still ~1000:1 on zeros
    out = [co.compress(tm.header("bomb", b"0", size=n_bytes))]
    zero = b"\0" * (1 << 20)
    for _ in range(n_bytes // len(zero)):
        out.append(co.compress(zero))
    out.append(co.compress(tm.end()))
    out.append(co.flush())
    return b"".join(out)


def zlib_gzip():
    import zlib
    return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


def test_bomb_bytes_limit(jail):
    blob = _bomb_tar(128 << 20)             # 128 MiB of zeros in ~600 KiB
    assert len(blob) < 1 << 20
    with pytest.raises(LayerError, match="too large"):
        unpack(blob, jail.root, MT_GZ, limits=Limits(max_bytes=16 << 20))
    # nothing of the file was written: the declared size is checked before any byte
    assert not (jail.root / "bomb").exists()


def test_bomb_declared_size_default_limit(jail):
    # a header that claims 100 GiB: rejected by the default limit before a byte is written
    blob = ZC.compress(tm.header("huge", b"0", size=100 << 30))
    with pytest.raises(LayerError, match="too large"):
        unpack(blob, jail.root, MT_ZST)


def test_bomb_entries_limit(jail):
    data = tm.tar(*[tm.dir(f"d{i}") for i in range(1500)])
    with pytest.raises(LayerError, match="too many entries"):
        unpack(ZC.compress(data), jail.root, MT_ZST, limits=Limits(max_entries=1000))


def test_bomb_zstd_memory_is_bounded(jail, tmp_path):
    """1 GiB of zeros in ~32 KiB of zstd (and ~1 MiB of gzip): reading it all through
    open_layer_stream, in a fresh process, never holds more than a bounded slice in memory."""
    import subprocess

    script = """
import io, resource, sys, zlib, zstandard
from container.engine.layer.compression import open_layer_stream
kind = sys.argv[1]
zero = b"\\0" * (1 << 22)
if kind == "zstd":
    c = zstandard.ZstdCompressor().compressobj()
    mt = "application/vnd.oci.image.layer.v1.tar+zstd"
else:
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    mt = "application/vnd.oci.image.layer.v1.tar+gzip"
blob = b"".join([c.compress(zero) for _ in range(256)] + [c.flush()])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = open_layer_stream(io.BytesIO(blob), mt)
n = 0
while True:
    b = s.read(1 << 20)
    if not b:
        break
    assert len(b) <= 1 << 20
    n += len(b)
print(len(blob), n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    for kind in ("zstd", "gzip"):
        r = subprocess.run([sys.executable, "-c", script, kind], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        csize, n, grew_mib = map(int, r.stdout.split())
        assert n == 1 << 30 and csize < 8 << 20
        assert grew_mib < 150, f"{kind}: decompression held {grew_mib} MiB"


# -- across layers: the snapshot merge never follows a symlink out -------------------------------------

def _store(tmp: Path):
    from container.engine.store import Store

    s = Store(tmp / "store")
    s.ensure()
    s.db()
    return s


def _add(store, data: bytes) -> str:
    from tarmaker import add_layer

    return add_layer(store, data)


CROSS = {
    "symlink-then-dir-write": [
        lambda j: tm.tar(tm.symlink("evil", H(j))),
        lambda j: tm.tar(tm.dir("evil"), tm.file("evil/sentinel", b"pwned")),
    ],
    "symlink-then-implicit-write": [
        lambda j: tm.tar(tm.symlink("evil", H(j))),
        lambda j: tm.tar(tm.file("evil/sentinel", b"pwned")),
    ],
    "rel-symlink-then-write": [
        lambda j: tm.tar(tm.symlink("evil", "../../../../host")),
        lambda j: tm.tar(tm.file("evil/sentinel", b"pwned"), tm.file("evil/new", b"new")),
    ],
    "dir-replaced-by-symlink-then-write": [
        lambda j: tm.tar(tm.dir("d"), tm.file("d/a", b"a")),
        lambda j: tm.tar(tm.symlink("d", H(j))),
        lambda j: tm.tar(tm.file("d/sentinel", b"pwned")),
    ],
    "whiteout-through-symlink": [
        lambda j: tm.tar(tm.symlink("w", H(j))),
        lambda j: tm.tar(tm.file("w/.wh.sentinel"), tm.file("w/.wh.dir")),
    ],
    "opaque-through-symlink": [
        lambda j: tm.tar(tm.symlink("w", H(j))),
        lambda j: tm.tar(tm.file("w/.wh..wh..opq")),
    ],
    "whiteout-of-symlink": [
        lambda j: tm.tar(tm.symlink("s", H(j) + "/dir")),
        lambda j: tm.tar(tm.file(".wh.s")),
    ],
    "symlink-file-then-overwrite": [
        lambda j: tm.tar(tm.symlink("f", S(j))),
        lambda j: tm.tar(tm.file("f", b"pwned")),
    ],
    "symlink-dir-then-chmod": [
        lambda j: tm.tar(tm.symlink("d", H(j))),
        lambda j: tm.tar(tm.dir("d", mode=0o777, uid=1234)),
    ],
    "symlink-then-hardlink-in-next": [
        lambda j: tm.tar(tm.symlink("s", S(j))),
        lambda j: tm.tar(tm.file("t", b"x"), tm.hardlink("s", "t")),
    ],
    "hardlink-to-lower-outside-abs": [
        lambda j: tm.tar(tm.file("etc/shadow", b"in the rootfs")),
        lambda j: tm.tar(tm.hardlink("h", S(j)), tm.hardlink("h2", "/etc/shadow")),
    ],
    "hardlink-to-lower-via-symlink": [
        lambda j: tm.tar(tm.symlink("s", H(j))),
        lambda j: tm.tar(tm.hardlink("h", "s/sentinel")),
    ],
    "hardlink-to-lower-symlink-out": [
        lambda j: tm.tar(tm.symlink("s", S(j))),
        lambda j: tm.tar(tm.hardlink("h", "s"), tm.file("other", b"o")),
    ],
    "hardlink-to-lower-dir": [
        lambda j: tm.tar(tm.dir("d")),
        lambda j: tm.tar(tm.hardlink("h", "d")),
    ],
    "mode-0000-dir-across-layers": [
        lambda j: tm.tar(tm.dir("locked", mode=0), tm.file("locked/a", b"a")),
        lambda j: tm.tar(tm.file("locked/.wh.a"), tm.file("locked/b", b"b")),
    ],
}


CROSS_ERRORS = {
    "hardlink-to-lower-outside-abs": "not found in lower layers",
    "hardlink-to-lower-via-symlink": "not found in lower layers",
    "hardlink-to-lower-dir": "is a directory",
}


@pytest.mark.parametrize("case", sorted(CROSS))
def test_cross_layer_merge_is_contained(jail, case):
    store = _store(jail.root)
    try:
        diff_ids = [_add(store, build(jail)) for build in CROSS[case]]
        if case in CROSS_ERRORS:
            with pytest.raises(LayerError, match=CROSS_ERRORS[case]):
                ensure_snapshot(store, diff_ids)
            assert not [p for p in store.snapshots_dir.iterdir()], "a failed merge left a tree behind"
            return
        _, path = ensure_snapshot(store, diff_ids)
        # nothing of the layers is a symlink that was followed: every path is inside the snapshot
        for dirpath, dirs, files in os.walk(path):
            for n in dirs:
                assert not os.path.islink(os.path.join(dirpath, n)) or n not in ("evil", "w", "d")
        if case in ("symlink-then-dir-write", "symlink-then-implicit-write", "rel-symlink-then-write",
                    "dir-replaced-by-symlink-then-write"):
            evil = "d" if case.startswith("dir-replaced") else "evil"
            assert not (path / evil).is_symlink() and (path / evil / "sentinel").read_bytes() == b"pwned"
        if case == "symlink-file-then-overwrite":
            assert not (path / "f").is_symlink() and (path / "f").read_bytes() == b"pwned"
        if case == "symlink-dir-then-chmod":
            assert (path / "d").is_dir() and not (path / "d").is_symlink()
        if case == "hardlink-to-lower-symlink-out":
            assert os.readlink(path / "h") == str(jail.sentinel)
            assert os.lstat(path / "h").st_ino == os.lstat(path / "s").st_ino
        if case == "whiteout-of-symlink":
            assert not os.path.lexists(path / "s")
        if case == "mode-0000-dir-across-layers":
            assert stat.S_IMODE(os.lstat(path / "locked").st_mode) == 0
            os.chmod(path / "locked", 0o700)
            assert sorted(os.listdir(path / "locked")) == ["b"]
    finally:
        store.close()
