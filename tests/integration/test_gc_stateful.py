"""Hypothesis stateful test: random pull/tag/rmi/run/rm/prune/gc sequences on a few real images.

After every step: everything a tag or a container references is present and verifies (blobs rehash,
layer trees and snapshots exist, container dirs exist). After gc: nothing unreferenced remains
(a second sweep would find nothing: no unreachable row, no file without a row).
"""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

KEYS = ("busybox", "shared-a", "shared-b", "layered")


def check_referenced(store) -> None:
    from container.cas import Digest
    from container.engine.image.identity import chain_ids
    from container.schema import Container, Image, ImageLayer, Tag

    images = {t.image_id for t in Tag.select()} | {c.image_id for c in Container.select() if c.image_id}
    for iid in images:
        im = Image.get_by_id(iid)
        for d in (im.manifest_digest, im.config_digest, im.index_digest):
            if d:
                assert store.blobs.has(Digest.parse(d)) and store.blobs.verify(Digest.parse(d)), d
        diffs = []
        for il in ImageLayer.select().where(ImageLayer.image == iid).order_by(ImageLayer.position):
            assert store.blobs.verify(Digest.parse(il.blob_digest)), il.blob_digest
            assert store.layer_path(il.diff_id).is_dir(), il.diff_id
            diffs.append(il.diff_id)
        assert chain_ids(diffs)[-1] == im.chain_id
    for c in Container.select():
        assert (store.containers_dir / c.id).is_dir(), c.name
        if c.chain_id:
            assert store.snapshot_path(c.chain_id).is_dir(), c.name


@pytest.fixture
def machine_env(cli, root, pushed):
    return cli, root, pushed


def test_stateful(machine_env):
    cli, root, pushed = machine_env

    class GcMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            from container.engine.store import Store

            # a fresh store per example
            if root.exists():
                subprocess.run(["rm", "-rf", str(root)], check=True)
            root.mkdir()
            self.store = Store(root)
            self.store.db()
            self.pulled: set[str] = set()
            self.containers: list[str] = []
            self.extra_tags: list[str] = []
            self.n = 0

        def teardown(self):
            self.store.close()

        @rule(key=st.sampled_from(KEYS))
        def pull(self, key):
            from container.engine.image.reference import parse
            from container.engine.pull import pull

            pull(self.store, parse(pushed[key].ref))
            self.pulled.add(key)

        @precondition(lambda self: self.pulled)
        @rule(data=st.data())
        def tag(self, data):
            from container.engine.errors import ImageNotFound
            from container.engine.image.catalog import tag_image

            key = data.draw(st.sampled_from(sorted(self.pulled)))
            self.n += 1
            t = f"local/t{self.n % 3}:v"
            try:
                tag_image(self.store, pushed[key].ref, t)
            except ImageNotFound:          # it was removed since: what docker says too
                return
            self.extra_tags.append(t)

        @precondition(lambda self: self.pulled or self.extra_tags)
        @rule(data=st.data(), force=st.booleans())
        def rmi(self, data, force):
            from container.engine.errors import ContainerError
            from container.engine.image.catalog import remove_image

            refs = [pushed[k].ref for k in sorted(self.pulled)] + self.extra_tags
            ref = data.draw(st.sampled_from(refs))
            try:
                remove_image(self.store, ref, force=force)
            except ContainerError:
                pass

        @precondition(lambda self: self.pulled)
        @rule(data=st.data())
        def run(self, data):
            key = data.draw(st.sampled_from(sorted(self.pulled)))
            r = cli("run", pushed[key].ref, "/bin/sh", "-c", "echo x > /f")
            if r.returncode == 0:
                self.containers.append(key)

        @precondition(lambda self: self.containers)
        @rule()
        def rm(self):
            r = cli("ps", "-a", "-q")
            ids = r.stdout.split()
            if ids:
                cli("rm", ids[0], check=True)

        @rule(all=st.booleans(), what=st.sampled_from(["image", "container", "system"]))
        def prune(self, all, what):
            from container.engine.maint import prune as P

            if what == "image":
                P.prune(self.store, images="all" if all else "dangling")
            elif what == "container":
                P.prune(self.store, containers=True)
            else:
                P.prune(self.store, containers=True, images="all" if all else "dangling")
            self._nothing_unreferenced()

        @rule()
        def gc(self):
            from container.engine.maint import gc as G

            G.gc(self.store)
            self._nothing_unreferenced()

        def _nothing_unreferenced(self):
            from container.engine.maint import gc as G

            again = G.make_plan(self.store)
            assert again.empty(), (again.units, again.blobs, again.layers, again.images)

        @invariant()
        def referenced_present(self):
            check_referenced(self.store)

    GcMachine.TestCase.settings = settings(max_examples=10, stateful_step_count=12, deadline=None,
                                           suppress_health_check=list(HealthCheck))
    GcMachine.TestCase().runTest()
