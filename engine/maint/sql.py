"""`container sql`: read-only queries over the metadata database, and its documented schema.

query() returns (columns, rows) and schema() the tables with what each column means;
cli/system.py draws both.

Read-only is enforced by the database, not by looking at the query text:
SQLite is opened with a `mode=ro` URI and `PRAGMA query_only=1`
(schema.open_database(readonly=True)), and an authorizer refuses ATTACH/DETACH and
any PRAGMA that sets a value (so `PRAGMA query_only=0` cannot undo it). PostgreSQL runs
it as one prepared statement (so `COMMIT; DELETE ...` is refused: one statement only) in a READ
ONLY transaction whose snapshot is already taken (so it cannot be switched back to READ WRITE),
rolled back after (schema/pg.py). Other databases (--db URL): a READ ONLY transaction, rolled back.

string_agg(X, SEP), PostgreSQL's and SQLite 3.44's, is added to older SQLite connections, so one
query text serves both backends (the examples below use it). version_cmp(a, b[, manager]) and
version_lt(a, b[, manager]) (dpkg's version ordering, or rpm's / apk's for manager 'rpm' / 'apk':
engine/image/versions.py) are added to SQLite connections; on PostgreSQL they are SQL functions
created with the schema (schema/pgversion.py; version_lt is a boolean there, 0/1 on SQLite).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from container.engine.errors import ContainerError, StoreError

# What each column means (the documented schema). Types and keys come from the models themselves.
DOC: dict[str, tuple[str, dict[str, str]]] = {
    "meta": ("Key/value facts about the store.", {
        "key": "fact name (schema_version)", "value": "its value"}),
    "blob": ("Every blob in blobs/sha256/ that something references: manifests, indexes, configs, "
             "compressed layers.", {
        "digest": "sha256:<hex>, also the file name blobs/sha256/<hex>",
        "size": "bytes",
        "media_type": "OCI/Docker media type",
        "refs": "number of edges naming it (image.manifest/config/index, image_layer.blob)",
        "created": "when it was recorded (UTC)",
        "disk": "bytes on disk (st_blocks*512) when measured, or NULL (usage records: docs/usage-records.md)",
        "inode": "st_ino of the file when measured: the record holds while it matches",
        "verified": "st_ctime_ns of the file when fsck last rehashed it and it matched, or NULL"}),
    "layer": ("One unpacked layer tree, layers/<diff_id hex>/.", {
        "diff_id": "sha256 of the uncompressed tar",
        "size": "bytes of regular-file contents",
        "entries": "tar entries",
        "refs": "number of image_layer rows naming it",
        "created": "when it was unpacked (UTC)",
        "disk": "bytes on disk of the tree (st_blocks*512, each inode once), or NULL until measured",
        "inode": "st_ino of the tree's directory when measured: the record holds while it matches",
        "inodes": "distinct inodes of the tree, or NULL until measured"}),
    "image": ("One pulled image manifest for one platform. docker's IMAGE ID is config_digest.", {
        "id": "manifest digest",
        "manifest_digest": "-> blob.digest (the manifest)",
        "config_digest": "-> blob.digest (the image config; docker's IMAGE ID)",
        "index_digest": "-> blob.digest (the index it was chosen from), or NULL",
        "os": "platform os", "architecture": "platform architecture", "variant": "platform variant",
        "created": "from the image config (UTC)",
        "pulled": "when it was pulled (UTC)",
        "size": "sum of compressed layer sizes, bytes",
        "chain_id": "chain id of the full layer stack (-> snapshot.chain_id when built)"}),
    "image_layer": ("Image -> its layers, base layer at position 0.", {
        "id": "row id", "image_id": "-> image.id", "position": "0 = base layer",
        "blob_digest": "-> blob.digest (compressed layer)", "diff_id": "-> layer.diff_id",
        "media_type": "layer media type (gzip, zstd, plain tar)"}),
    "tag": ("repository[:tag] -> image. tag NULL = pulled by digest only (docker's <none>).", {
        "id": "row id", "repository": "normalised, e.g. docker.io/library/busybox",
        "tag": "e.g. latest, or NULL", "digest": "what the reference resolved to (index or manifest)",
        "image_id": "-> image.id", "created": "when the tag was set (UTC)"}),
    "snapshot": ("snapshots/<chain_id hex>/: the merged rootfs of a layer chain (hardlinks).", {
        "chain_id": "chain id", "parent": "chain id of the chain minus its top layer, or NULL",
        "top_diff_id": "-> layer.diff_id (top layer)", "size": "bytes", "entries": "entries",
        "created": "built (UTC)", "last_used": "last used by a run (UTC)",
        "disk": "bytes on disk it does not share with its layer trees (its dirs, copies), or NULL",
        "inodes": "inodes it does not share with its layer trees, or NULL until measured",
        "inode": "st_ino of the tree's directory when measured: the record holds while it matches"}),
    "container": ("One container.", {
        "id": "64 hex", "name": "unique name", "image_id": "-> image.id (NULL if created from nothing)",
        "image_ref": "what the user typed, normalised", "chain_id": "-> snapshot.chain_id",
        "command": "JSON argv", "config": "JSON: env, workdir, user, hostname, ...",
        "isolation": "namespaces | chroot", "rootfs_mode": "overlay | copy",
        "status": "created | running | exited", "exit_code": "exit status, NULL until it exits",
        "pid": "pid while running", "created": "(UTC)", "started": "(UTC)", "finished": "(UTC)"}),
    "lease": ("Work in flight (a pull): what its items name is a gc root until it expires and its pid is "
              "gone.", {
        "id": "lease id", "pid": "owner process", "created": "(UTC)", "expires": "(UTC)",
        "host": "host id that took it (a shared store; NULL on a single-host one)"}),
    "lease_item": ("What a lease protects.", {
        "id": "row id", "lease_id": "-> lease.id", "kind": "blob | layer | snapshot | ingest",
        "key": "sha256:<hex> (digest, diff_id, chain id, or ingest digest)"}),
    "volume": ("A volume: volumes/<name>/_data, mounted by -v NAME:/path or --mount type=volume.", {
        "name": "docker's [a-zA-Z0-9][a-zA-Z0-9_.-]+, 64 hex for an anonymous one",
        "driver": "local", "labels": "JSON object", "options": "JSON object (none are used)",
        "mountpoint": "ROOT/volumes/<name>/_data when it was created",
        "anonymous": "made by -v /path: removed by rm -v and at the end of run --rm",
        "created": "(UTC)"}),
    "volume_use": ("Which containers use which volumes (a volume in use is never removed).", {
        "id": "row id", "volume_name": "-> volume.name", "container_id": "-> container.id (deleted with it)",
        "destination": "the mount target inside the container"}),
    "layer_index": ("A layer whose entries are in `file` (indexed at unpack; a layer unpacked before the index "
                    "by `fsck --repair` or on first use).", {
        "diff_id": "-> layer.diff_id", "files": "rows in file",
        "source": "unpack (recorded while unpacking) | tree (walked from layers/<hex>/ later)",
        "created": "when it was indexed (UTC)"}),
    "file": ("Every entry of every layer, as its tar wrote it (whiteout markers included). An image's "
             "tree is these rows merged over its layers: `container files`.", {
        "id": "row id", "diff_id": "-> layer.diff_id", "path": "absolute, cleaned: /etc/passwd",
        "type": "f file, d directory, l symlink, h hardlink, c/b char/block device, p fifo",
        "mode": "permission bits (07777)", "uid": "owner", "gid": "group",
        "size": "bytes of content (regular files and hardlinks to them)", "mtime": "seconds since the epoch",
        "link": "symlink target (verbatim), or the path a hardlink names", "xattrs": "xattr names, comma separated",
        "whiteout": "0, 1 = a .wh.<name> marker (hides <name> below), 2 = .wh..wh..opq (opaque directory)",
        "sha256": "hex sha256 of the content (regular files)"}),
    "layer_package": ("A package database as one layer wrote it (dpkg status, status.d/, apk installed, "
                      "rpmdb.sqlite) and os-release: the source of `package`.", {
        "id": "row id", "diff_id": "-> layer.diff_id", "db_path": "/var/lib/dpkg/status, /etc/os-release, ...",
        "manager": "dpkg | apk | rpm | os-release", "name": "package (os-release: ID)",
        "version": "version (os-release: VERSION_ID)", "arch": "architecture",
        "source": "source package (os-release: PRETTY_NAME)"}),
    "package": ("One package per image, from the package databases of its merged tree. "
                "version_lt(version, '3.0.14', manager) and version_cmp(a, b, manager) compare versions by "
                "the row's package manager's rules (rpm: rpmvercmp, apk: apk's, else dpkg's; without the "
                "manager: dpkg's).", {
        "id": "row id", "image_id": "-> image.id", "manager": "dpkg | apk | rpm | os-release",
        "name": "package (os-release: ID)", "version": "version (os-release: VERSION_ID)",
        "arch": "architecture", "source": "source package (os-release: PRETTY_NAME)",
        "diff_id": "-> layer.diff_id: the layer that last changed it",
        "position": "that layer's image_layer.position (0 = base)"}),
    "host": ("A host using a shared store (docs/shared-store.md): gone, and its state reclaimable, once "
             "its heartbeat is older than the lease expiry.", {
        "id": "host id (/etc/machine-id or CONTAINER_HOST_ID)", "heartbeat": "last sign of life (UTC)",
        "pid": "the process that last beat"}),
}

EXAMPLES = [      # portable: each runs on SQLite and on PostgreSQL (string_agg: see _string_agg)
    ("Images that share a layer", """\
SELECT l.diff_id, l.size, COUNT(DISTINCT il.image_id) AS images,
       (SELECT string_agg(n.name, ',') FROM (SELECT DISTINCT t.repository || ':' || COALESCE(t.tag, '<none>')
          AS name FROM tag t JOIN image_layer x ON x.image_id = t.image_id WHERE x.diff_id = l.diff_id
          ORDER BY name) n) AS tags
FROM layer l JOIN image_layer il ON il.diff_id = l.diff_id
GROUP BY l.diff_id HAVING COUNT(DISTINCT il.image_id) > 1
ORDER BY l.size DESC"""),
    ("Largest layers", """\
SELECT l.diff_id, l.size AS unpacked, MAX(b.size) AS compressed, l.entries, l.refs AS images
FROM layer l JOIN image_layer il ON il.diff_id = l.diff_id JOIN blob b ON b.digest = il.blob_digest
GROUP BY l.diff_id ORDER BY l.size DESC LIMIT 10"""),
    ("Containers by exit code", """\
SELECT COALESCE(CAST(exit_code AS TEXT), '-') AS exit_code, status, COUNT(*) AS containers,
       string_agg(name, ',') AS names
FROM container GROUP BY exit_code, status ORDER BY containers DESC"""),
    ("Images shipping openssl older than 3.0.14 (each by its package manager's ordering)", """\
SELECT t.repository || ':' || COALESCE(t.tag, '<none>') AS image, p.manager, p.version
FROM package p JOIN tag t ON t.image_id = p.image_id
WHERE p.name = 'openssl' AND version_lt(p.version, '3.0.14', p.manager) ORDER BY image"""),
    ("Which layer of an image added a file", """\
SELECT il.image_id, il.position, f.path, f.size FROM file f JOIN image_layer il ON il.diff_id = f.diff_id
WHERE f.path = '/etc/passwd' ORDER BY il.image_id, il.position"""),
    ("Disk per image, from the usage records (unique layers: used by this image only)", """\
SELECT t.repository || ':' || COALESCE(t.tag, '<none>') AS image, COUNT(*) AS layers,
       SUM(l.disk) AS layer_disk, SUM(CASE WHEN l.refs = 1 THEN l.disk ELSE 0 END) AS unique_disk
FROM tag t JOIN image_layer il ON il.image_id = t.image_id JOIN layer l ON l.diff_id = il.diff_id
GROUP BY t.repository, t.tag ORDER BY layer_disk DESC LIMIT 10"""),
]


@dataclass(frozen=True)
class ColumnDoc:
    """One column: its name, SQL type, constraints (primary key, not null, unique) and meaning."""

    name: str
    type: str
    flags: tuple[str, ...]
    meaning: str


@dataclass(frozen=True)
class TableDoc:
    """One table of the documented schema (docs/schema.md is it, drawn by `container sql --schema`)."""

    name: str
    what: str
    columns: tuple[ColumnDoc, ...]


def schema() -> list[TableDoc]:
    """The documented schema: every table of the models, in order, with what each column means."""
    from container.schema import ALL_MODELS

    out = []
    for m in ALL_MODELS:
        table = m._meta.table_name
        what, cols = DOC.get(table, ("", {}))
        columns = []
        for f in m._meta.sorted_fields:
            flags = []
            if f.primary_key:
                flags.append("primary key")
            if not f.null and not f.primary_key:
                flags.append("not null")
            if getattr(f, "unique", False):
                flags.append("unique")
            columns.append(ColumnDoc(f.column_name, f.field_type, tuple(flags), cols.get(f.column_name, "")))
        out.append(TableDoc(table, what, tuple(columns)))
    return out


def _authorizer(action, arg1, arg2, dbname, source):
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _StringAgg:
    """string_agg(X, SEP) for SQLite before 3.44: NULLs skipped, NULL when nothing is left."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.sep = ","

    def step(self, value: Any, sep: Any) -> None:
        if value is not None:
            self.parts.append(str(value))
            self.sep = "" if sep is None else str(sep)

    def finalize(self) -> str | None:
        return self.sep.join(self.parts) if self.parts else None


def _string_agg(conn: sqlite3.Connection) -> None:
    if sqlite3.sqlite_version_info < (3, 44, 0):
        conn.create_aggregate("string_agg", 2, _StringAgg)   # type: ignore[arg-type]


def _version_functions(conn: sqlite3.Connection) -> None:
    """version_cmp(a, b[, manager]) -> -1|0|1 and version_lt(a, b[, manager]) -> 0|1: dpkg's
    ordering, or the manager's (engine/image/versions.py; python-debian imported at the first call)."""
    from container.engine.image import versions

    for n in (2, 3):
        conn.create_function("version_cmp", n, versions.version_cmp, deterministic=True)
        conn.create_function("version_lt", n, versions.version_lt, deterministic=True)


def query(store, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query on a read-only connection: (column names, rows)."""
    url = store.db_url or str(store.db_path)
    is_sqlite = "://" not in url or url.startswith("sqlite")
    if "://" not in url and not store.db_path.exists():
        raise StoreError(f"no metadata database at {store.db_path}: nothing has been stored yet")
    db = store.db(readonly=True)
    import peewee                  # (after container.schema: see its HIDDEN)

    try:
        if isinstance(db, peewee.SqliteDatabase):
            conn = db.connection()
            conn.execute("PRAGMA query_only=1")
            _string_agg(conn)
            _version_functions(conn)
            conn.set_authorizer(_authorizer)
            cur = conn.cursor()
            cur.execute(sql)
            cols = [d[0] for d in cur.description or []]
            rows = cur.fetchall()
            return cols, rows
        if isinstance(db, peewee.PostgresqlDatabase):
            from container.schema.pg import read_only_query

            return read_only_query(db, sql)
        with db.atomic():
            db.execute_sql("SET TRANSACTION READ ONLY")
            cur = db.execute_sql(sql)
            cols = [d[0] for d in cur.description or []]
            rows = cur.fetchall()
            db.rollback()
            return cols, rows
    except (sqlite3.Error, peewee.DatabaseError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "readonly" in msg or "not authorized" in msg or "read-only" in msg.lower():
            raise ContainerError(f"sql: the connection is read-only: {msg}") from None
        raise ContainerError(f"sql: {msg}") from None
    except (ValueError, OverflowError) as e:   # e.g. "You can only execute one statement at a time."
        raise ContainerError(f"sql: {e}") from None
    except sqlite3.Warning as e:
        raise ContainerError(f"sql: {e}") from None
    finally:
        if is_sqlite:
            try:
                db.connection().set_authorizer(None)
            except Exception:
                pass
