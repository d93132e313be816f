"""The blob store keeps invariant 1: every file under blobs/ hashes to its name."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from container.cas import BlobStore, Digest, DigestMismatch, InvalidDigest, SizeMismatch, remove_under
from container.cas.errors import UnsafeDelete


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def test_digest_parse_rejects_paths_and_other_algorithms():
    good = "sha256:" + "a" * 64
    assert str(Digest.parse(good)) == good
    for bad in ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "sha512:" + "a" * 128, "a" * 64, "",
                "sha256:" + "a" * 63, "sha256:" + "a" * 64 + "/x"]:
        with pytest.raises(InvalidDigest):
            Digest.parse(bad)


def test_put_and_read_back_dedupes(tmp_path):
    s = BlobStore(tmp_path)
    d = s.put_bytes(b"hello")
    mtime = s.path(d).stat().st_mtime_ns
    assert s.read(d) == b"hello" and s.verify(d)
    assert s.put_bytes(b"hello") == d
    assert s.path(d).stat().st_mtime_ns == mtime  # present blob never written again
    assert [x for x, _ in s.walk()] == [d]
    assert not os.access(s.path(d), os.W_OK) or os.geteuid() == 0
    assert s.path(d).stat().st_mode & 0o222 == 0


def test_mismatch_publishes_nothing(tmp_path):
    s = BlobStore(tmp_path)
    want = digest_of(b"right bytes")
    with pytest.raises(DigestMismatch):
        with s.ingest(want, size=len(b"wrong bytes")) as ing:
            ing.write(b"wrong bytes")
            ing.commit()
    assert not s.has(want)
    assert list(s.walk()) == []
    assert not (tmp_path / "ingest" / want.hex / "data").exists()


def test_oversize_stream_is_cut_off(tmp_path):
    s = BlobStore(tmp_path)
    want = digest_of(b"abc")
    with pytest.raises(SizeMismatch):
        with s.ingest(want, size=3) as ing:
            ing.write(b"abcdef")
    assert not s.has(want)


def test_interrupted_ingest_resumes_from_partial(tmp_path):
    data = os.urandom(3 << 20)
    want = digest_of(data)
    s = BlobStore(tmp_path)
    with s.ingest(want, size=len(data)) as ing:
        ing.write(data[: 1 << 20])  # then "crash": leave without commit
    assert not s.has(want)
    with s.ingest(want, size=len(data)) as ing:
        assert ing.offset == 1 << 20
        ing.write(data[ing.offset:])
        ing.commit()
    assert s.read(want) == data
    assert not (tmp_path / "ingest" / want.hex).exists()


def _slow_writer(root: str, data: bytes, out: "mp.Queue") -> None:
    s = BlobStore(Path(root))
    want = digest_of(data)
    with s.ingest(want, size=len(data)) as ing:
        if ing.done:
            out.put("skipped")
            return
        for i in range(0, len(data), 4096):
            ing.write(data[i:i + 4096])
            time.sleep(0.001)
        ing.commit()
        out.put("wrote")


def test_two_processes_write_a_blob_once(tmp_path):
    data = os.urandom(200_000)
    q: mp.Queue = mp.Queue()
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=_slow_writer, args=(str(tmp_path), data, q)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
    results = sorted(q.get(timeout=5) for _ in ps)
    assert results == ["skipped", "wrote"]
    assert BlobStore(tmp_path).read(digest_of(data)) == data


def test_remove_under_refuses_outside_root(tmp_path):
    root = tmp_path / "root"
    (root / "layers" / "x").mkdir(parents=True)
    outside = tmp_path / "sentinel"
    outside.write_text("keep")
    (root / "layers" / "link").symlink_to(outside)
    for p in [outside, root, root / "..", root / "layers" / ".." / ".." / "sentinel", Path("/")]:
        with pytest.raises(UnsafeDelete):
            remove_under(root, p)
    remove_under(root, root / "layers" / "link")  # deletes the link, not its target
    assert outside.read_text() == "keep"
    d = root / "layers" / "x" / "locked"
    d.mkdir()
    (d / "f").write_text("x")
    d.chmod(0)
    remove_under(root, root / "layers" / "x")
    assert not (root / "layers" / "x").exists()
