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


class LeaseItem(BaseModel):
    lease = pw.ForeignKeyField(Lease, on_delete="CASCADE", backref="items")
    kind = pw.CharField()                         # blob | layer | snapshot | ingest
    key = pw.CharField()

    class Meta:
        indexes = ((("lease", "kind", "key"), True),)


ALL_MODELS = [Meta, Blob, Layer, Image, ImageLayer, Tag, Snapshot, Container, Lease, LeaseItem]
