"""The metadata schema. Constraints yes, business rules no, filesystem access no.

    meta        key/value: schema_version
    blob        every blob in blobs/ that something references: manifests, indexes, configs, layers.
                refs = how many edges name it (image.manifest/config/index, image_layer.blob);
                kept in the same transaction as the edges; gc recomputes and reports drift.
    layer       one unpacked tree layers/<diff_id hex>/ (the uncompressed tar's digest).
                refs = image_layer rows naming it.
    image       one pulled image manifest (for one platform). id = manifest digest.
                config_digest is docker's IMAGE ID.
    image_layer image -> (position, compressed blob, diff_id); base layer is position 0.
    tag         repository[:tag] -> image. tag NULL = pulled by digest only (docker's <none>).
    snapshot    snapshots/<chain_id hex>/: the merged rootfs of a layer chain.
                blob/layer/snapshot .disk .inodes .inode: usage records (st_blocks*512, inode counts;
                a snapshot's only what it does not share with its layers), NULL until measured.
    container   one container: its image, snapshot, rootfs backend, isolation, process, status.
    lease       work in flight (a pull): what it names is a gc root until it expires.
    lease_item  (lease, kind, key): kind in blob|layer|snapshot|ingest.
    volume      a named (or anonymous) volume: volumes/<name>/_data on disk.
    volume_use  (volume, container, destination): which containers mount which volumes.
    layer_index, file, layer_package, package: the contents index (engine/image/contents.py).
    host        a host sharing the store (docs/shared-store.md): id, heartbeat; lease.host names
                a lease's host (NULL: a single-host store's, judged by its pid alone).

FKs that point at blobs use on_delete RESTRICT: deleting a referenced blob fails loudly.
"""

from __future__ import annotations

import peewee as pw

from .base import utcnow
from .db import database


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Meta(BaseModel):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()


class Blob(BaseModel):
    digest = pw.CharField(primary_key=True, max_length=71)
    size = pw.BigIntegerField()
    media_type = pw.CharField(default="")
    refs = pw.IntegerField(default=0)
    created = pw.DateTimeField(default=utcnow)
    # usage records (engine/maint/usage.py), filled when first measured; NULL = not measured yet
    disk = pw.BigIntegerField(null=True)          # st_blocks*512 of its inodes, each once
    inode = pw.BigIntegerField(null=True)         # st_ino when measured: the record holds while it matches
    verified = pw.BigIntegerField(null=True)      # st_ctime_ns when fsck last rehashed it and it matched


class Layer(BaseModel):
    diff_id = pw.CharField(primary_key=True, max_length=71)
    size = pw.BigIntegerField(default=0)          # unpacked bytes (regular file contents)
    entries = pw.IntegerField(default=0)          # tar entries
    refs = pw.IntegerField(default=0)
    created = pw.DateTimeField(default=utcnow)
    # usage records (engine/maint/usage.py), filled when first measured; NULL = not measured yet
    disk = pw.BigIntegerField(null=True)          # st_blocks*512 of its inodes, each once
    inode = pw.BigIntegerField(null=True)         # st_ino when measured: the record holds while it matches
    inodes = pw.IntegerField(null=True)           # distinct inodes of the tree


class Image(BaseModel):
    id = pw.CharField(primary_key=True, max_length=71)      # manifest digest
    manifest = pw.ForeignKeyField(Blob, column_name="manifest_digest", on_delete="RESTRICT",
                                  backref="manifest_of")
    config = pw.ForeignKeyField(Blob, column_name="config_digest", on_delete="RESTRICT",
                                backref="config_of")
    # (the field's name shadows Model.index(), a classmethod peewee's stubs declare; never called here)
    index = pw.ForeignKeyField(Blob, column_name="index_digest", null=True, on_delete="RESTRICT",  # type: ignore[assignment]
                               backref="index_of")
    os = pw.CharField(default="linux")
    architecture = pw.CharField(default="")
    variant = pw.CharField(default="")
    created = pw.DateTimeField(null=True)         # from the config
    pulled = pw.DateTimeField(default=utcnow)
    size = pw.BigIntegerField(default=0)          # sum of compressed layer sizes
    chain_id = pw.CharField(max_length=71, default="")   # chain id of the full layer stack


class ImageLayer(BaseModel):
    image = pw.ForeignKeyField(Image, on_delete="CASCADE", backref="layers")
    position = pw.IntegerField()
    blob = pw.ForeignKeyField(Blob, column_name="blob_digest", on_delete="RESTRICT", backref="layer_of")
    layer = pw.ForeignKeyField(Layer, column_name="diff_id", on_delete="RESTRICT", backref="images")
    media_type = pw.CharField(default="")

    class Meta:
        indexes = ((("image", "position"), True),)


class Tag(BaseModel):
    repository = pw.CharField()                   # docker.io/library/busybox
    tag = pw.CharField(null=True)                 # latest; NULL when pulled by digest only
    digest = pw.CharField(max_length=71)          # what the reference resolved to (index or manifest)
    image = pw.ForeignKeyField(Image, on_delete="RESTRICT", backref="tags")
    created = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("repository", "tag", "digest"), True),)


class Snapshot(BaseModel):
    chain_id = pw.CharField(primary_key=True, max_length=71)
    parent = pw.CharField(max_length=71, null=True)
    top = pw.ForeignKeyField(Layer, column_name="top_diff_id", on_delete="RESTRICT", backref="snapshots")
    size = pw.BigIntegerField(default=0)
    entries = pw.IntegerField(default=0)
    created = pw.DateTimeField(default=utcnow)
    last_used = pw.DateTimeField(default=utcnow)
    # usage records: disk/inodes = only what the snapshot does not share with its layers (its dirs, copies)
    disk = pw.BigIntegerField(null=True)
    inodes = pw.IntegerField(null=True)
    inode = pw.BigIntegerField(null=True)


class Container(BaseModel):
    id = pw.CharField(primary_key=True, max_length=64)
    name = pw.CharField(unique=True)
    image = pw.ForeignKeyField(Image, null=True, on_delete="RESTRICT", backref="containers")
    image_ref = pw.CharField(default="")          # what the user typed, normalised
    snapshot = pw.ForeignKeyField(Snapshot, column_name="chain_id", null=True, on_delete="RESTRICT",
                                  backref="containers")
    command = pw.TextField(default="[]")          # JSON argv
    config = pw.TextField(default="{}")           # JSON: env, workdir, user, hostname, ...
    isolation = pw.CharField(default="")          # namespaces | chroot
    rootfs_mode = pw.CharField(default="")        # overlay | copy
    status = pw.CharField(default="created")      # created | running | exited
    exit_code = pw.IntegerField(null=True)
    pid = pw.IntegerField(null=True)
    created = pw.DateTimeField(default=utcnow)
    started = pw.DateTimeField(null=True)
    finished = pw.DateTimeField(null=True)


class Lease(BaseModel):
    id = pw.CharField(primary_key=True)
    pid = pw.IntegerField(null=True)
    created = pw.DateTimeField(default=utcnow)
    expires = pw.DateTimeField()
    host = pw.CharField(null=True)                # the host that took it (shared store); NULL: this one


class LeaseItem(BaseModel):
    lease = pw.ForeignKeyField(Lease, on_delete="CASCADE", backref="items")
    kind = pw.CharField()                         # blob | layer | snapshot | ingest
    key = pw.CharField()

    class Meta:
        indexes = ((("lease", "kind", "key"), True),)


# -- volumes (schema version 2: migrations.up_volumes) ------------------------------------------------

class Volume(BaseModel):
    name = pw.CharField(primary_key=True)
    driver = pw.CharField(default="local")
    labels = pw.TextField(default="{}")           # JSON object
    options = pw.TextField(default="{}")          # JSON object (docker's Options; none are used yet)
    mountpoint = pw.TextField(default="")         # ROOT/volumes/<name>/_data when it was created
    anonymous = pw.BooleanField(default=False)    # made by `-v /path` (rm -v and run --rm remove it)
    created = pw.DateTimeField(default=utcnow)


class VolumeUse(BaseModel):
    volume = pw.ForeignKeyField(Volume, column_name="volume_name", on_delete="RESTRICT", backref="uses")
    container = pw.ForeignKeyField(Container, on_delete="CASCADE", backref="volume_uses")
    destination = pw.TextField()                  # the mount target inside the container

    class Meta:
        indexes = ((("volume", "container", "destination"), True),)


# -- contents index (schema version 3: migrations.up_index; docs/schema.md: file, package) ---------
class LayerIndex(BaseModel):
    """A layer whose entries are in `file` (and package databases in `layer_package`): indexed at
    unpack, or later by fsck --repair / first use for a layer unpacked before the index existed."""
    layer = pw.ForeignKeyField(Layer, column_name="diff_id", primary_key=True, on_delete="CASCADE",
                               backref="index_row")
    files = pw.IntegerField(default=0)            # rows in `file`
    source = pw.CharField(default="unpack")       # unpack | tree (re-walked from layers/<hex>/)
    created = pw.DateTimeField(default=utcnow)


class File(BaseModel):
    """One entry of one layer as its tar wrote it (markers included); the merged view is computed."""
    layer = pw.ForeignKeyField(Layer, column_name="diff_id", on_delete="CASCADE", backref="files",
                               index=False)       # (the unique (diff_id, path) index serves diff_id lookups)
    path = pw.TextField()                         # absolute, cleaned: /etc/passwd
    type = pw.CharField(max_length=1)             # f d l h c b p (file dir symlink hardlink char block fifo)
    mode = pw.IntegerField(default=0)             # permission bits (07777)
    uid = pw.BigIntegerField(default=0)
    gid = pw.BigIntegerField(default=0)
    size = pw.BigIntegerField(default=0)          # bytes of content (regular files, hardlinks to them)
    mtime = pw.BigIntegerField(default=0)         # seconds since the epoch
    link = pw.TextField(null=True)                # symlink target (verbatim) or hardlink target path
    xattrs = pw.TextField(null=True)              # xattr names, comma separated
    whiteout = pw.SmallIntegerField(default=0)    # 1: .wh.<name> marker, 2: .wh..wh..opq (opaque dir)
    sha256 = pw.CharField(max_length=64, null=True)   # hex of the content (regular files)

    class Meta:
        indexes = ((("layer", "path"), True),)


class LayerPackage(BaseModel):
    """A package database as one layer wrote it (whole file: dpkg status, apk installed, one
    status.d/ file, rpmdb.sqlite) or os-release; the image's `package` rows come from these."""
    layer = pw.ForeignKeyField(Layer, column_name="diff_id", on_delete="CASCADE", backref="packages")
    db_path = pw.TextField()                      # /var/lib/dpkg/status, /etc/os-release, ...
    manager = pw.CharField()                      # dpkg | apk | rpm | os-release
    name = pw.TextField()
    version = pw.TextField(default="")
    arch = pw.CharField(default="")
    source = pw.TextField(default="")


class Package(BaseModel):
    """One package per image: the merged tree's package databases, with the layer that last changed it."""
    image = pw.ForeignKeyField(Image, on_delete="CASCADE", backref="packages")
    manager = pw.CharField()                      # dpkg | apk | rpm | os-release
    name = pw.TextField()
    version = pw.TextField(default="")
    arch = pw.CharField(default="")
    source = pw.TextField(default="")
    layer = pw.ForeignKeyField(Layer, column_name="diff_id", null=True, on_delete="SET NULL",
                               backref="package_of")
    position = pw.IntegerField(default=0)         # that layer's image_layer.position

    class Meta:
        indexes = ((("image", "manager", "name", "arch"), False), (("name",), False))



# -- shared store (docs/shared-store.md) ----------------------------------------------------------
class Host(BaseModel):
    id = pw.CharField(primary_key=True)           # engine/locate.host_id()
    heartbeat = pw.DateTimeField(default=utcnow)  # refreshed by its commands and running containers
    pid = pw.IntegerField(null=True)              # the process that last beat (diagnostics)


ALL_MODELS = [Meta, Blob, Layer, Image, ImageLayer, Tag, Snapshot, Container, Lease, LeaseItem, Volume, VolumeUse, Host]
INDEX_MODELS = [LayerIndex, File, LayerPackage, Package]
ALL_MODELS += INDEX_MODELS
