"""Image archives on disk: writing a tar or a directory (save), reading one safely (load).

Writers (save): TarWriter streams members into a file object (a tar written in stream mode, so
stdout works); DirWriter writes the same names under a directory. Both take blobs as open files
with a known size: the bytes are copied as stored, never re-compressed.

Readers (load): open_source(path) -> TarSource | DirSource, one interface: names(), has(name),
open(name) -> (binary file, size). Every name is checked before use: a member named absolutely or
with `..`, a symlink that leaves the archive, a member whose header claims more bytes than the file
holds, a truncated tar: ArchiveError (one line), before anything is stored. Nothing is ever
extracted to disk from here; callers stream a member into the CAS.
"""

from __future__ import annotations

import io
import os
import secrets
import posixpath
import stat
import tarfile
from contextlib import contextmanager
from pathlib import Path

from container.engine.errors import ContainerError

CHUNK = 1 << 20

TYPE_CHECKING = False        # (mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Iterable, Iterator

MAX_SYMLINK_HOPS = 16


class ArchiveError(ContainerError):
    """An image archive that is malformed, truncated or hostile."""


# -- writing ---------------------------------------------------------------------------------------
class TarWriter:
    """Members appended to a tar stream (`out` is any writable binary file; never seeked)."""

    def __init__(self, out: BinaryIO):
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        self._dirs: set[str] = set()

    def _info(self, name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.type, ti.mtime, ti.uid, ti.gid = size, kind, 0, 0, 0
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return ti

    def mkdirs(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent and parent not in self._dirs:
            self.mkdirs(parent)
            self._dirs.add(parent)
            self.tf.addfile(self._info(parent + "/", kind=tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.mkdirs(name)
        self.tf.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_file(self, name: str, f: BinaryIO, size: int) -> None:
        self.mkdirs(name)
        self.tf.addfile(self._info(name, size), f)

    def close(self) -> None:
        self.tf.close()


class DirWriter:
    """The same members as files under `root` (an OCI layout directory)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, name: str) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_bytes(self, name: str, data: bytes) -> None:
        self._path(name).write_bytes(data)

    def add_file(self, name: str, f: BinaryIO, size: int) -> None:
        import shutil

        with open(self._path(name), "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)

    def close(self) -> None:
        pass


@contextmanager
def atomic_file(output: Path) -> Iterator[BinaryIO]:
    """A file written beside `output` and renamed onto it when the block succeeds (removed when not):
    a failed save or export leaves nothing behind."""
    output = Path(output).absolute()
    if not output.parent.is_dir():
        raise ContainerError(f"cannot write {output}: {output.parent} is not a directory")
    tmp = output.parent / f".{output.name}.tmp-{secrets.token_hex(4)}"
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    except OSError as e:
        raise ContainerError(f"cannot write {output}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


# -- reading ---------------------------------------------------------------------------------------
def clean_name(name: str) -> str:
    """A member name as a relative path inside the archive ('./a//b' -> 'a/b'); ArchiveError when it
    is absolute or climbs out with `..`."""
    if name.startswith("/") or "\x00" in name:
        raise ArchiveError(f"archive member {name!r}: absolute path, refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r}: path escapes the archive (..), refused")
    return "/".join(parts)


class TarSource:
    """A tar file, indexed once; members read in place."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "rb")
        total = os.fstat(self.f.fileno()).st_size
        try:
            self.tf = tarfile.open(fileobj=self.f, mode="r:")
            members = self.tf.getmembers()
        except (tarfile.TarError, EOFError) as e:
            self.f.close()
            raise ArchiveError(f"{path}: not a tar archive, or truncated ({e})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            self.f.seek(self.tf.offset)
            rest = self.f.read(1 << 16)
            if rest.strip(b"\0") and not rest.startswith(bytes(1024)):
                # tarfile stops quietly at a cut header: what follows the last member is not the end marker
                raise ArchiveError(f"{path}: truncated or corrupt tar (a member header is cut or damaged "
                                   f"at byte {self.tf.offset})")
            for m in members:
                name = clean_name(m.name)
                if m.isreg() and m.offset_data + m.size > total:
                    raise ArchiveError(f"archive member {name!r} claims {m.size} bytes but the archive ends "
                                       f"first: truncated or corrupt")
                if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
                    raise ArchiveError(f"archive member {name!r}: unsupported type, refused")
                if name:
                    self.members[name] = m
        except BaseException:
            self.f.close()
            raise

    def names(self) -> Iterable[str]:
        return [n for n, m in self.members.items() if m.isreg()]

    def _resolve(self, name: str) -> tarfile.TarInfo:
        seen = 0
        name = clean_name(name)
        while True:
            m = self.members.get(name)
            if m is None:
                raise ArchiveError(f"archive has no member {name!r}")
            if m.isreg():
                return m
            if not (m.issym() or m.islnk()) or seen >= MAX_SYMLINK_HOPS:
                raise ArchiveError(f"archive member {name!r} is not a regular file")
            seen += 1
            target = m.linkname
            if m.issym():
                if target.startswith("/"):
                    raise ArchiveError(f"archive member {name!r}: symlink to {target!r} leaves the archive")
                joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                if joined == ".." or joined.startswith("../"):
                    raise ArchiveError(f"archive member {name!r}: symlink to {target!r} leaves the archive")
                target = joined
            name = clean_name(target)

    def has(self, name: str) -> bool:
        try:
            self._resolve(name)
            return True
        except ArchiveError:
            return False

    def open(self, name: str) -> tuple[BinaryIO, int]:
        m = self._resolve(name)
        f = self.tf.extractfile(m)
        assert f is not None
        return _Checked(f, name), m.size       # type: ignore[arg-type,return-value]

    def close(self) -> None:
        self.tf.close()
        self.f.close()


class _Checked(io.RawIOBase):
    """A member's bytes; a short read (truncated archive) becomes an ArchiveError."""

    def __init__(self, f: BinaryIO, name: str):
        self.f, self.name_ = f, name

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            return self.f.read(n)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArchiveError(f"archive member {self.name_!r}: {e} (truncated archive?)") from None

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.f.close()
        super().close()


class DirSource:
    """A directory (an OCI layout, or an unpacked docker-archive); nothing outside it is read."""

    def __init__(self, path: Path):
        self.path = path
        self.real = os.path.realpath(path)

    def _resolve(self, name: str) -> str:
        rel = clean_name(name)
        p = os.path.realpath(os.path.join(self.real, rel))
        if p != self.real and not p.startswith(self.real + os.sep):
            raise ArchiveError(f"{name!r} in {self.path} is a symlink leaving the directory, refused")
        return p

    def names(self) -> Iterable[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self.real):
            for f in files:
                out.append(os.path.relpath(os.path.join(dirpath, f), self.real).replace(os.sep, "/"))
        return out

    def has(self, name: str) -> bool:
        try:
            return os.path.isfile(self._resolve(name))
        except ArchiveError:
            return False

    def open(self, name: str) -> tuple[BinaryIO, int]:
        p = self._resolve(name)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise ArchiveError(f"{self.path} has no {name!r}") from None
        except OSError as e:
            raise ArchiveError(f"cannot read {name!r} in {self.path}: {e.strerror}") from None
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            raise ArchiveError(f"{name!r} in {self.path} is not a regular file")
        return f, st.st_size

    def close(self) -> None:
        pass


def open_source(path: Path) -> TarSource | DirSource:
    """The archive at `path`: a directory or a tar (ArchiveError when it is neither)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArchiveError(f"open {path}: no such file or directory") from None
    except OSError as e:
        raise ArchiveError(f"open {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return DirSource(path)
    return TarSource(path)


def read_small(src: TarSource | DirSource | FileSource, name: str, limit: int) -> bytes:
    """A whole member that must be small (JSON): ArchiveError beyond `limit` bytes."""
    f, size = src.open(name)
    try:
        if size > limit:
            raise ArchiveError(f"archive member {name!r} is too large ({size} bytes, limit {limit})")
        data = f.read(limit + 1)
    finally:
        f.close()
    if len(data) != size:
        raise ArchiveError(f"archive member {name!r}: truncated")
    return data


class FileSource:
    """One file as a source with a single member (import's tarball)."""

    def __init__(self, path: Path):
        self.path = path

    def has(self, name: str) -> bool:
        return name == self.path.name

    def open(self, name: str) -> tuple[Any, int]:
        f = open(self.path, "rb")
        return f, os.fstat(f.fileno()).st_size

    def close(self) -> None:
        pass


def compressed(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except IsADirectoryError:
        return False
    except FileNotFoundError:
        raise ArchiveError(f"open {path}: no such file or directory") from None
    return head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd"


def spool(store, stream: Any, path: Path | None, *, decompress: bool = True) -> Path:
    """The archive as a file under ingest/: stdin copied, a gzip/zstd stream decompressed (unless
    not `decompress`). The caller removes it."""
    from container.engine.layer.compression import open_layer_stream

    tmp = store.ingest_dir / f".load-{secrets.token_hex(6)}.tar"
    f_in = stream if stream is not None else open(str(path), "rb")
    try:
        with open(tmp, "xb") as out:
            head = f_in.read(4)
            rest = _Prefixed(head, f_in)
            if decompress and (head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd"):
                kind = "gzip" if head[:2] == b"\x1f\x8b" else "zstd"
                try:
                    plain: Any = open_layer_stream(rest, f"application/vnd.oci.image.layer.v1.tar+{kind}")
                    while chunk := plain.read(CHUNK):
                        out.write(chunk)
                except ContainerError as e:
                    raise ArchiveError(f"the archive's {kind} stream is corrupt: {e}") from None
            else:
                while chunk := rest.read(CHUNK):
                    out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if stream is None:
            f_in.close()
    return tmp


class _Prefixed:
    """`head` (already read) then the rest of `f`."""

    def __init__(self, head: bytes, f: Any):
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return out
        return self.f.read(n)

    def readable(self) -> bool:
        return True
