"""engine/runtime/mounts.py's parsers: docker's -v, --mount and --tmpfs spellings, and their errors."""

from __future__ import annotations

import pytest

from container.engine.errors import RunError
from container.engine.runtime.mounts import parse_all, parse_mount_flag, parse_tmpfs, parse_volume
from container.engine.runtime.options import RunOptions


def pick(m: dict, *keys: str) -> tuple:
    return tuple(m[k] for k in keys)


@pytest.mark.parametrize("spec, want", [
    ("/data", ("volume", "", "/data", False, True)),
    ("/data:ro", ("volume", "", "/data", True, True)),
    ("/host:/data", ("bind", "/host", "/data", False, False)),
    ("/host/../host//x/:/data/./sub/", ("bind", "/host/x", "/data/sub", False, False)),
    ("/host:/data:ro", ("bind", "/host", "/data", True, False)),
    ("/host:/data:rw,z", ("bind", "/host", "/data", False, False)),
    ("name:/data", ("volume", "", "/data", False, False)),
    ("my_vol.1-x:/data:ro,nocopy", ("volume", "", "/data", True, False)),
])
def test_volume_specs(spec, want):
    m = parse_volume(spec)
    assert pick(m, "type", "source", "target", "readonly", "anonymous") == want


@pytest.mark.parametrize("spec, says", [
    ("", "invalid volume specification"),
    ("a:b:c:d", "invalid volume specification"),
    ("/a::/b", "invalid volume specification"),
    ("data", "mount path must be absolute"),
    ("/host:data", "mount path must be absolute"),
    ("./x:/data", "includes invalid characters for a local volume name"),
    ("x:/data", "includes invalid characters"),                 # one character: docker wants two
    ("/host:/data:rx", "invalid mode: rx"),
    ("/host:/data:ro,rw", "invalid mode: ro,rw"),
    ("/host:/", "destination can't be '/'"),
    ("/host:/proc/x", "not supported"),
    ("/host:/dev", "not supported"),
])
def test_bad_volume_specs(spec, says):
    with pytest.raises(RunError) as e:
        parse_volume(spec)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_mount_specs():
    m = parse_mount_flag("type=bind,source=/h,target=/c,readonly")
    assert pick(m, "type", "source", "target", "readonly") == ("bind", "/h", "/c", True)
    m = parse_mount_flag("type=bind,src=/h,dst=/c,ro=false,bind-propagation=rprivate")
    assert pick(m, "type", "readonly") == ("bind", False)
    m = parse_mount_flag("src=vol,dst=/c,volume-nocopy")
    assert pick(m, "type", "name", "nocopy", "anonymous") == ("volume", "vol", True, False)
    m = parse_mount_flag("type=volume,destination=/c")
    assert m["anonymous"]
    m = parse_mount_flag("type=tmpfs,dst=/run,tmpfs-size=64m,tmpfs-mode=1777")
    assert pick(m, "type", "data") == ("tmpfs", "size=64m,mode=1777")
    m = parse_mount_flag('"type=bind","src=/a,b",dst=/c')            # CSV quoting, as docker's
    assert m["source"] == "/a,b"


@pytest.mark.parametrize("spec, says", [
    ("type=nfs,dst=/x", "invalid type 'nfs'"),
    ("type=bind,src=/h", "field Target must not be empty"),
    ("type=bind,dst=/x", "field Source must not be empty"),
    ("type=bind,src=rel,dst=/x", "mount path must be absolute"),
    ("type=tmpfs,src=/h,dst=/x", "field Source must not be specified"),
    ("type=tmpfs,dst=/x,tmpfs-mode=99", "invalid tmpfs-mode"),
    ("type=tmpfs,dst=/x,tmpfs-size=big", "invalid tmpfs-size"),
    ("type=bind,src=/h,dst=/x,colour=red", "unexpected key 'colour'"),
    ("type=bind,src=/h,dst=/x,readonly=maybe", "invalid value for readonly"),
    ("type=volume,src=a/b,dst=/x", "invalid characters"),
])
def test_bad_mount_specs(spec, says):
    with pytest.raises(RunError) as e:
        parse_mount_flag(spec)
    assert says in str(e.value)


def test_tmpfs_specs():
    m = parse_tmpfs("/run")
    assert pick(m, "target", "flags", "data", "readonly") == ("/run", 2 | 4 | 8, "", False)
    m = parse_tmpfs("/run:size=1m,mode=0700,exec,ro")
    assert pick(m, "flags", "data", "readonly") == (1 | 2 | 4, "size=1m,mode=0700", True)
    with pytest.raises(RunError, match="invalid tmpfs option"):
        parse_tmpfs("/run:frobnicate")
    with pytest.raises(RunError, match="must be absolute"):
        parse_tmpfs("run")


def test_all_mounts_checked_together_parents_first():
    opts = RunOptions(image="x", volumes=["/h:/a/b/c", "/a"], mounts=["type=tmpfs,dst=/a/b"])
    assert [m["target"] for m in parse_all(opts)] == ["/a", "/a/b", "/a/b/c"]
    with pytest.raises(RunError, match="Duplicate mount point: /a"):
        parse_all(RunOptions(image="x", volumes=["/h:/a"], tmpfs=["/a/"]))
