"""runtime/users.py reading a rootfs a running container may have rewritten (exec resolves -u there)."""

import os
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_a_fifo_is_not_read_and_does_not_block(tmp_path):
    from container.engine.runtime.users import read_in_root, resolve_user

    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc" / "passwd")
    assert read_in_root(tmp_path, "/etc/passwd") is None          # returns at once: no writer needed
    assert resolve_user(tmp_path, "1000").uid == 1000


def test_symlinks_resolve_inside_the_root(tmp_path):
    from container.engine.runtime.users import resolve_user

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "p").write_text("app:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "passwd").symlink_to("/../../../etc/p")
    u = resolve_user(tmp_path, "app")
    assert (u.uid, u.home) == (1000, "/home/app")
