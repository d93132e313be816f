"""The domain: references, registry, manifests, pull, unpack, snapshots, containers, gc.

cli/ talks to this package only; no peewee model leaves it.
"""
