"""Package databases, read: which files they are, what packages they list, how versions order.

    is_package_db("/var/lib/dpkg/status") -> True
    parse_db(path, data) -> [(name, version, arch, source, manager), ...]
    (how versions order, per manager: engine/image/versions.py)

The databases: dpkg's /var/lib/dpkg/status (deb822 stanzas; packages whose state is not
not-installed, as dpkg-query -W lists them) and /var/lib/dpkg/status.d/<name> (distroless: one
stanza per file), apk's /lib/apk/db/installed (P:/V:/A:/o: records), rpm's rpmdb.sqlite (the
header blobs of its Packages table: NAME, EPOCH, VERSION, RELEASE, ARCH, SOURCERPM), and
os-release (/etc/os-release, /usr/lib/os-release: one row, manager "os-release", name = ID,
version = VERSION_ID, source = PRETTY_NAME). python-debian parses dpkg's stanzas; it is imported
only when a dpkg database is met.
A database that does not parse yields no rows (the image still pulls).
"""

from __future__ import annotations

import struct

from container.engine import lazylog

log = lazylog.get("container.packages")

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_D = "/var/lib/dpkg/status.d/"
APK_INSTALLED = "/lib/apk/db/installed"
RPMDB = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
DB_PATHS = (DPKG_STATUS, APK_INSTALLED) + RPMDB + OS_RELEASE      # (and every file in DPKG_STATUS_D)
_FIXED = frozenset(DB_PATHS)

Pkg = tuple[str, str, str, str, str]          # name, version, arch, source, manager (dpkg | apk | rpm | os-release)
_DPKG_FIELDS = ["Package", "Status", "Version", "Architecture", "Source"]


def is_package_db(path: str) -> bool:
    """Is the file at this absolute path a package database (or os-release) that parse_db reads?"""
    if path in _FIXED:
        return True
    return (path.startswith(DPKG_STATUS_D) and "/" not in path[len(DPKG_STATUS_D):]
            and not path.endswith(".md5sums") and len(path) > len(DPKG_STATUS_D))


def parse_db(path: str, data: bytes) -> list[Pkg]:
    """The packages the database file at `path` lists, from its bytes."""
    try:
        if path == DPKG_STATUS or path.startswith(DPKG_STATUS_D):
            return _dpkg(data)
        if path == APK_INSTALLED:
            return _apk(data)
        if path in RPMDB:
            return _rpm(data)
        if path in OS_RELEASE:
            return _os_release(data)
    except Exception as e:         # a database we cannot read is no reason to fail a pull
        log.warning("cannot parse %s: %s", path, e)
    return []


def _dpkg(data: bytes) -> list[Pkg]:
    from debian.deb822 import Deb822

    out = []
    for p in Deb822.iter_paragraphs(data.decode("utf-8", "replace").splitlines(True), fields=_DPKG_FIELDS,
                                    use_apt_pkg=False):
        name = p.get("Package")
        if not name:
            continue
        state = p.get("Status", "install ok installed").split()
        if state and state[-1] == "not-installed":
            continue
        source = (p.get("Source") or name).split(" ")[0]
        out.append((name, p.get("Version", ""), p.get("Architecture", ""), source, "dpkg"))
    return out


def _apk(data: bytes) -> list[Pkg]:
    out = []
    for block in data.decode("utf-8", "replace").split("\n\n"):
        f: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                f.setdefault(line[0], line[2:])
        if f.get("P"):
            out.append((f["P"], f.get("V", ""), f.get("A", ""), f.get("o", f["P"]), "apk"))
    return out


def _os_release(data: bytes) -> list[Pkg]:
    import shlex

    kv = {}
    for line in data.decode("utf-8", "replace").splitlines():
        k, eq, v = line.strip().partition("=")
        if eq and k and not k.startswith("#"):
            try:
                parts = shlex.split(v)
                kv[k] = parts[0] if parts else ""
            except ValueError:
                kv[k] = v.strip("\"'")
    if not kv.get("ID"):
        return []
    return [(kv["ID"], kv.get("VERSION_ID", ""), "", kv.get("PRETTY_NAME", ""), "os-release")]


_RPM_TAGS = {1000: "name", 1001: "version", 1002: "release", 1003: "epoch", 1022: "arch", 1044: "sourcerpm"}


def _rpm(data: bytes) -> list[Pkg]:
    import sqlite3

    con = sqlite3.connect(":memory:")
    try:
        con.deserialize(data)
        blobs = [r[0] for r in con.execute("SELECT blob FROM Packages")]
    finally:
        con.close()
    out = []
    for blob in blobs:
        h = _rpm_header(bytes(blob))
        name = h.get("name")
        if not isinstance(name, str) or name == "gpg-pubkey":
            continue
        version = f"{h.get('version', '')}-{h.get('release', '')}"
        if isinstance(h.get("epoch"), int):
            version = f"{h['epoch']}:{version}"
        src = str(h.get("sourcerpm", ""))
        out.append((name, version, str(h.get("arch", "")), src.removesuffix(".src.rpm").rsplit("-", 2)[0], "rpm"))
    return out


def _rpm_header(b: bytes) -> dict[str, object]:
    """The tags we need from one rpm header blob (index count, data length, 16-byte entries, data)."""
    il, dl = struct.unpack(">ii", b[:8])
    store = b[8 + 16 * il:8 + 16 * il + dl]
    out: dict[str, object] = {}
    for i in range(il):
        tag, typ, off, count = struct.unpack(">iiii", b[8 + 16 * i:24 + 16 * i])
        key = _RPM_TAGS.get(tag)
        if key is None:
            continue
        if typ == 4 and count >= 1:                  # INT32
            out[key] = struct.unpack(">i", store[off:off + 4])[0]
        elif typ in (6, 8, 9):                       # STRING, STRING_ARRAY, I18NSTRING: the first one
            end = store.find(b"\0", off)
            out[key] = store[off:end if end >= 0 else None].decode("utf-8", "replace")
    return out
