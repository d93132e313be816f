"""Hostile images end to end (issue 5): malicious OCI images pushed to the real loopback registry (or
served by the fault proxy where a registry would refuse to store them), then `container pull` and
`container run` through the installed CLI with a fresh --root, as a new user would.

For every case:
  * nothing outside ROOT changes: a host sentinel dir next to ROOT (content, mode, mtime, inode,
    link count of everything in it), the /tmp/container-pwned-* paths the attacks aim at, the host's
    /etc/passwd and /etc/shadow, /proc/sys/kernel/core_pattern;
  * no traceback; a failing command prints exactly one "Error:" line, last, and exits non-zero;
  * a failed pull leaves the store as it was (no image, tag, layer or blob).

Layers are raw tars from tests/tarmaker.py on top of the busybox test image's base layer, so the
container has a shell. One registry push per module; each case is a pull + (maybe) a run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import tarmaker as tm  # noqa: E402

from checks import no_traceback, one_error, store_state  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run needs root")

FAST = {"CONTAINER_REGISTRY_BACKOFF": "0.01", "CONTAINER_REGISTRY_ATTEMPTS": "2"}
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"

TOKEN = secrets.token_hex(4)
TARGET = f"/tmp/container-pwned-{TOKEN}"          # what the escapes aim at; must never appear
EVIL_PASSWD = "evil:x:4242:4242:evil:/evilhome:/bin/sh\n"


# -------------------------------------------------------------------------------------------- helpers



def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def listing(base: Path, skip: Path | None = None) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if skip is None or Path(dirpath) / d != skip]
        for n in dirs + files:
            p = Path(dirpath) / n
            st = os.lstat(p)
            data = b""
            if os.path.isfile(p) and not os.path.islink(p):
                data = p.read_bytes()
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, st.st_uid,
                           hashlib.sha256(data).hexdigest())
    return out


def host_state(sentinel: Path) -> dict:
    st = {"sentinel": listing(sentinel)}
    for f in ("/etc/passwd", "/etc/shadow", "/etc/group"):
        try:
            s = os.lstat(f)
            st[f] = (s.st_mode, s.st_size, s.st_mtime_ns, s.st_nlink, Path(f).read_bytes())
        except OSError:
            st[f] = None
    for f in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe"):
        try:
            st[f] = Path(f).read_text()
        except OSError:
            st[f] = None
    st["pwned"] = sorted(str(p) for p in Path("/tmp").glob("container-pwned-*"))
    try:        # the kernel log: an image's device node must not reach /dev/kmsg
        import subprocess
        st["kmsg"] = f"pwned-{TOKEN}" in subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    except OSError:
        st["kmsg"] = None
    return st


@dataclass
class Img:
    blobs: dict = field(default_factory=dict)         # digest -> bytes (config + layers)
    manifest: bytes = b""
    config: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def build(base_blob: bytes, base_diff: str, layers: list[bytes], *, cfg: dict | None = None,
          config_edit=None, manifest_edit=None, base: bool = True) -> Img:
    img = Img()
    descs, diff_ids = [], []
    if base:
        img.blobs[sha(base_blob)] = base_blob
        descs.append({"mediaType": MT_GZ, "digest": sha(base_blob), "size": len(base_blob)})
        diff_ids.append(base_diff)
    for t in layers:
        blob = gzip.compress(t, mtime=0)
        img.blobs[sha(blob)] = blob
        descs.append({"mediaType": MT_GZ, "digest": sha(blob), "size": len(blob)})
        diff_ids.append(sha(t))
    config = {"architecture": host_arch(), "os": "linux",
              "config": {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["sh"], **(cfg or {})},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    if config_edit:
        config_edit(config)
    raw = json.dumps(config).encode()
    img.config = config
    img.blobs[sha(raw)] = raw
    m = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
         "config": {"mediaType": MT_CONFIG, "digest": sha(raw), "size": len(raw)}, "layers": descs}
    if manifest_edit:
        manifest_edit(m)
    img.manifest = json.dumps(m).encode()
    return img


def host_arch() -> str:
    from tools.images import host_platform
    return host_platform()[1]


def push(host: str, repo: str, tag: str, img: Img) -> None:
    from tools.images import _http

    base = f"http://{host}/v2/{repo}"
    for digest, data in img.blobs.items():
        if _http("HEAD", f"{base}/blobs/{digest}").status == 200:
            continue
        r = _http("POST", f"{base}/blobs/uploads/", b"", {"Content-Length": "0"})
        assert r.status == 202, r.status
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = f"http://{host}{loc}"
        r = _http("PUT", loc + ("&" if "?" in loc else "?") + f"digest={digest}", data,
                  {"Content-Type": "application/octet-stream"})
        assert r.status == 201, (r.status, r.read()[:300])
    r = _http("PUT", f"{base}/manifests/{tag}", img.manifest, {"Content-Type": MT_MANIFEST})
    assert r.status == 201, (r.status, r.read()[:300])


# -------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    layers: object                     # callable(S: Path) -> list[bytes]
    cfg: object = None                 # callable(S) -> dict (image config.config additions)
    config_edit: object = None
    manifest_edit: object = None
    pull: str = "ok"                   # "ok", or a substring of the one-line error
    run: list | None = None            # argv after the image; None: no run
    run_opts: list = field(default_factory=list)
    run_expect: str = "any"            # "ok", "any" (ok or one-line error), or an error substring
    stdout_has: str | None = None


def up(n: int = 14) -> str:
    return "../" * n


T_REL = TARGET.lstrip("/")


CASES = [
    # -- writes through symlinks across layers ------------------------------------------------------
    Case("symlink-abs-then-write", lambda S: [tm.tar(tm.symlink("evil", TARGET)),
                                             tm.tar(tm.file("evil/pwned", b"x"))],
         run=["cat", "/evil/pwned"], run_expect="ok", stdout_has="x"),
    Case("symlink-rel-then-write", lambda S: [tm.tar(tm.symlink("evil", up() + T_REL)),
                                             tm.tar(tm.dir("evil"), tm.file("evil/pwned", b"x"))],
         run=["true"]),
    Case("symlink-to-sentinel-then-overwrite", lambda S: [tm.tar(tm.symlink("evil", str(S))),
                                                         tm.tar(tm.file("evil/keep", b"OVERWRITTEN"))],
         run=["cat", "/evil/keep"], run_expect="ok", stdout_has="OVERWRITTEN"),
    Case("dir-then-symlink-to-root-then-write",
         lambda S: [tm.tar(tm.dir("d"), tm.file("d/x", b"1")), tm.tar(tm.symlink("d", "/")),
                    tm.tar(tm.file(f"d/{T_REL}/pwned", b"x"))], run=["true"]),
    Case("dir-replaced-by-symlink-to-sentinel-then-chmod",
         lambda S: [tm.tar(tm.dir("d")), tm.tar(tm.symlink("d", str(S))),
                    tm.tar(tm.dir("d", mode=0o777), tm.file("d/keep", b"x", mode=0o6777))], run=["true"]),
    Case("symlink-chain-then-write", lambda S: [tm.tar(tm.symlink("a", "b"), tm.symlink("b", TARGET)),
                                               tm.tar(tm.file("a/pwned", b"x"))], run=["true"]),
    Case("symlink-loop-then-write", lambda S: [tm.tar(tm.symlink("l1", "l2"), tm.symlink("l2", "l1")),
                                              tm.tar(tm.file("l1/x", b"x"))], run=["true"]),
    # a symlink of the same layer in a parent path is resolved inside the rootfs (umoci, docker)
    Case("same-layer-symlink-then-write", lambda S: [tm.tar(tm.symlink("evil", str(S)),
                                                            tm.file("evil/keep", b"OVERWRITTEN"))],
         run=["cat", "/evil/keep"], run_expect="ok", stdout_has="OVERWRITTEN"),
    Case("same-layer-symlink-dotdot-beyond-root", lambda S: [tm.tar(tm.symlink("evil", up() + T_REL),
                                                                    tm.file("evil/pwned", b"inside"))],
         run=["cat", TARGET + "/pwned"], run_expect="ok", stdout_has="inside"),
    Case("same-layer-symlink-chain-to-later-link",
         lambda S: [tm.tar(tm.symlink("a", "b"), tm.file("x", b"0"), tm.symlink("b", "c/" + up()),
                           tm.symlink("c", TARGET), tm.file(f"a/{T_REL}/pwned", b"chain"))],
         run=["cat", TARGET + "/pwned"], run_expect="ok", stdout_has="chain"),
    Case("same-layer-symlink-loop", lambda S: [tm.tar(tm.symlink("l1", "l2"), tm.symlink("l2", "/l1"),
                                                      tm.file("l1/x", b"x"))], pull="symbolic links"),
    # -- hardlinks --------------------------------------------------------------------------------
    Case("hardlink-to-etc-shadow", lambda S: [tm.tar(tm.hardlink("shadow", "/etc/shadow"))], run=["true"]),
    Case("hardlink-dotdot", lambda S: [tm.tar(tm.hardlink("h", up() + "etc/passwd"))], run=["true"]),
    Case("hardlink-to-sentinel-abs", lambda S: [tm.tar(tm.hardlink("h", str(S / "keep")))], run=["true"]),
    Case("hardlink-through-lower-symlink",
         lambda S: [tm.tar(tm.symlink("d", str(S))), tm.tar(tm.hardlink("h", "d/keep"))],
         run=["cat", "/h"]),
    Case("hardlink-to-outside-symlink",
         lambda S: [tm.tar(tm.symlink("s", str(S / "keep"))), tm.tar(tm.hardlink("h", "s"))],
         run=["true"]),
    # -- whiteouts and opaque markers --------------------------------------------------------------
    Case("whiteout-dotdot", lambda S: [tm.tar(tm.file(up() + ".wh.keep"),
                                              tm.file(up() + str(S).lstrip("/") + "/.wh.keep"))],
         run=["true"], run_expect="ok"),
    Case("whiteout-bare", lambda S: [tm.tar(tm.file("bin/.wh."))], pull="whiteout"),
    Case("whiteout-dot", lambda S: [tm.tar(tm.file(".wh.."))], pull="whiteout"),
    Case("whiteout-dotdotdot", lambda S: [tm.tar(tm.file("bin/.wh..."))], pull="whiteout"),
    Case("whiteout-through-lower-symlink",
         lambda S: [tm.tar(tm.symlink("d", str(S))), tm.tar(tm.file("d/.wh.keep"))], run=["true"]),
    Case("opaque-through-lower-symlink",
         lambda S: [tm.tar(tm.symlink("d", str(S))), tm.tar(tm.file("d/.wh..wh..opq"))], run=["true"]),
    Case("opaque-at-root", lambda S: [tm.tar(tm.file(".wh..wh..opq"), tm.file("only", b"x"))],
         run=["true"], run_expect="not found"),
    Case("opaque-as-directory", lambda S: [tm.tar(tm.dir("a/.wh..wh..opq"))], pull="whiteout"),
    Case("opaque-used-as-parent", lambda S: [tm.tar(tm.file("a/.wh..wh..opq/b", b"x"))], pull="whiteout"),
    Case("whiteout-symlink-to-sentinel", lambda S: [tm.tar(tm.symlink(".wh.keep", str(S / "keep")))],
         pull="whiteout"),
    # -- config values that point outside ----------------------------------------------------------
    Case("etc-passwd-symlink-abs-CVE-2024-9676",
         lambda S: [tm.tar(tm.dir("etc"), tm.symlink("etc/passwd", str(S / "passwd")))],
         cfg=lambda S: {"User": "evil"}, run=["id"], run_expect="unable to find user evil"),
    Case("etc-passwd-symlink-rel-CVE-2024-9676",
         lambda S: [tm.tar(tm.dir("etc"), tm.symlink("etc/passwd", up() + str(S / "passwd").lstrip("/")))],
         cfg=lambda S: {"User": "evil"}, run=["id"], run_expect="unable to find user evil"),
    Case("etc-group-symlink", lambda S: [tm.tar(tm.dir("etc"), tm.symlink("etc/group", str(S / "passwd")))],
         cfg=lambda S: {"User": "0:evil"}, run=["id"], run_expect="unable to find group evil"),
    Case("user-dotdot", lambda S: [], cfg=lambda S: {"User": "../../etc/passwd"}, run=["id"],
         run_expect="unable to find user"),
    Case("workdir-dotdot", lambda S: [], cfg=lambda S: {"WorkingDir": up() + T_REL}, run=["pwd"],
         run_expect="ok", stdout_has=TARGET),
    Case("workdir-through-symlink", lambda S: [tm.tar(tm.symlink("w", TARGET))],
         cfg=lambda S: {"WorkingDir": "/w/sub"}, run=["pwd"]),
    Case("workdir-through-rel-symlink", lambda S: [tm.tar(tm.symlink("w", up() + T_REL))],
         cfg=lambda S: {"WorkingDir": "/w/sub"}, run=["pwd"]),
    Case("run-w-through-symlink", lambda S: [tm.tar(tm.symlink("w", TARGET))],
         run=["pwd"], run_opts=["-w", "/w/other"]),
    Case("workdir-into-proc-sys", lambda S: [], cfg=lambda S: {"WorkingDir": "/proc/sys/kernel/pwned"},
         run=["pwd"]),
    # -- files the runtime writes into the rootfs (/etc/hosts, hostname, resolv.conf) ----------------
    Case("etc-hostname-symlink-to-core-pattern",
         lambda S: [tm.tar(tm.dir("etc"), tm.symlink("etc/hostname", "/proc/sys/kernel/core_pattern"),
                           tm.symlink("etc/hosts", "/proc/sys/kernel/core_pattern"),
                           tm.symlink("etc/resolv.conf", "/proc/sys/kernel/modprobe"))],
         run=["true"], run_opts=["--hostname", "pwned"]),
    Case("etc-hostname-symlink-to-image-chardev-kmsg",
         lambda S: [tm.tar(tm.dir("dev"), tm.chardev("dev/kmsg2", 1, 11), tm.dir("etc"),
                           tm.symlink("etc/hostname", "/dev/kmsg2"), tm.chardev("etc/hosts", 1, 11))],
         run=["true"], run_opts=["--hostname", f"pwned-{TOKEN}"], run_expect="ok"),
    Case("image-chardev-not-openable", lambda S: [tm.tar(tm.dir("dev"), tm.chardev("kmsg2", 1, 11))],
         run=["sh", "-c", f"echo pwned-{TOKEN} > /kmsg2 || echo denied"], run_expect="ok", stdout_has="denied"),
    Case("etc-hosts-is-a-fifo", lambda S: [tm.tar(tm.dir("etc"), tm.fifo("etc/hosts"), tm.fifo("etc/hostname"))],
         run=["true"], run_expect="ok"),
    Case("etc-symlink-to-proc-sys-kernel",
         lambda S: [tm.tar(tm.symlink("etc", "/proc/sys/kernel"))], run=["true"]),
    Case("etc-hosts-symlink-to-sentinel",
         lambda S: [tm.tar(tm.dir("etc"), tm.symlink("etc/hosts", str(S / "keep")),
                           tm.symlink("etc/resolv.conf", up() + str(S / "keep").lstrip("/")))],
         run=["true"], run_expect="ok"),
    # -- odd config types (docker's JSON decoder refuses them) -----------------------------------
    Case("user-is-a-number", lambda S: [], cfg=lambda S: {"User": 1000}, pull="config.User must be a string"),
    Case("cmd-is-a-string", lambda S: [], cfg=lambda S: {"Cmd": "id"}, pull="config.Cmd must be a list"),
    Case("entrypoint-is-a-number", lambda S: [], cfg=lambda S: {"Entrypoint": 5},
         pull="config.Entrypoint must be a list"),
    Case("env-not-strings", lambda S: [], cfg=lambda S: {"Env": [1, {"a": 2}]}, pull="config.Env must be a list"),
    Case("workdir-is-a-list", lambda S: [], cfg=lambda S: {"WorkingDir": ["/"]},
         pull="config.WorkingDir must be a string"),
    Case("env-with-nul", lambda S: [], cfg=lambda S: {"Env": ["A=b\u0000c"]}, pull="NUL"),
    Case("cmd-with-nul", lambda S: [], cfg=lambda S: {"Cmd": ["i\u0000d"]}, pull="NUL"),
    Case("created-before-year-1", lambda S: [], config_edit=lambda c: c.__setitem__("created", "0001-01-01T00:00:00+01:00"),
         run=["true"], run_expect="ok"),
    Case("created-after-year-9999", lambda S: [],
         config_edit=lambda c: c.__setitem__("created", "9999-12-31T23:59:59-01:00"), run=["true"], run_expect="ok"),
    Case("created-not-a-string", lambda S: [], config_edit=lambda c: c.__setitem__("created", {"x": [1]}),
         run=["true"], run_expect="ok"),
    # -- config/manifest mismatches --------------------------------------------------------------
    Case("diff-ids-mismatch", lambda S: [tm.tar(tm.file("a", b"1"))],
         config_edit=lambda c: c["rootfs"]["diff_ids"].__setitem__(-1, sha(b"other")),
         pull="does not match the image config"),
    Case("more-diff-ids-than-layers", lambda S: [tm.tar(tm.file("a", b"1"))],
         config_edit=lambda c: c["rootfs"]["diff_ids"].append(sha(b"other")), pull="diff_ids"),
    Case("fewer-diff-ids-than-layers", lambda S: [tm.tar(tm.file("a", b"1"))],
         config_edit=lambda c: c["rootfs"]["diff_ids"].pop(), pull="diff_ids"),
    Case("rootfs-type-not-layers", lambda S: [],
         config_edit=lambda c: c["rootfs"].__setitem__("type", "../../x"), pull="rootfs.type"),
    Case("diff-id-traversal", lambda S: [],
         config_edit=lambda c: c["rootfs"]["diff_ids"].__setitem__(0, "sha256:../../../" + T_REL),
         pull="invalid digest"),
    # -- bombs (limits lowered through the environment, as docs/security.md says) ------------------
    Case("bytes-bomb", lambda S: [tm.tar(tm.file("zeros", bytes(8 << 20)))], pull="too large"),
]


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    s = tmp_path_factory.mktemp("host") / "sentinel"
    s.mkdir()
    (s / "keep").write_text("host sentinel\n")
    (s / "passwd").write_text(EVIL_PASSWD)
    (s / "sub").mkdir()
    (s / "sub" / "inner").write_text("inner\n")
    os.chmod(s / "keep", 0o644)
    return s


@pytest.fixture(scope="module")
def hostile(registry, built_images, sentinel):
    """{case name: (ref, Img)}: every case pushed once to the session registry (repo hostile/<name>)."""
    bb = built_images["busybox"]
    base = bb.layers[0]
    base_blob = (Path(bb.oci_dir) / "blobs" / "sha256" / base.digest[7:]).read_bytes()
    out = {}
    for c in CASES:
        img = build(base_blob, base.diff_id, c.layers(sentinel), cfg=c.cfg(sentinel) if c.cfg else None,
                    config_edit=c.config_edit, manifest_edit=c.manifest_edit)
        repo = f"hostile/{c.name.lower()}"
        push(registry.host, repo, TOKEN, img)
        out[c.name] = (f"{registry.host}/{repo}:{TOKEN}", img)
    return out


@pytest.fixture
def guard(sentinel, tmp_path):
    """Host state before the test; after it, nothing may have changed outside ROOT."""
    def outside_root():    # tmp_path minus ROOT and the config file a test may write
        return {k: v for k, v in listing(tmp_path, skip=tmp_path / "root").items()
                if not k.endswith("container-config.toml")}
    before = host_state(sentinel)
    outside = outside_root()
    yield
    after = host_state(sentinel)
    # restore what an escape may have changed before failing, so one bad run does not hurt the machine
    for f in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe"):
        if before[f] is not None and after[f] != before[f]:
            Path(f).write_text(before[f])
    for p in after["pwned"]:
        if p not in before["pwned"]:
            os.system(f"rm -rf '{p}'")
    assert after == before, "a host file changed"
    assert not os.path.lexists(TARGET)
    assert outside_root() == outside


def check_store_unchanged_after_failed_pull(root: Path) -> None:
    blobs, layers, rows = store_state(root)
    assert rows.get("Image", 0) == 0 and rows.get("Tag", 0) == 0, rows
    assert [x for x in layers if not x.startswith(".tmp")] == [] or rows.get("Layer", 0) == 0, layers
    assert not [x for x in layers if x.startswith(".tmp")], layers


def pull_verdict(case, hostile, cli, root, **extra_env):
    """Pull the case's image and check its verdict: a refusal is one error line naming the case's
    reason with the store as it was; a success has no traceback and a store fsck --deep agrees
    with. (ref, env) after a success, None after a refusal."""
    ref, _img = hostile[case.name]
    env = dict(FAST, **extra_env)
    if case.name == "bytes-bomb":
        env["CONTAINER_LAYER_MAX_BYTES"] = "4M"
    r = cli("pull", ref, env=env)
    if case.pull != "ok":
        line = one_error(r)
        assert case.pull in line, line
        check_store_unchanged_after_failed_pull(root)
        assert not list((root / "layers").glob("*")) if (root / "layers").exists() else True
        return None
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    r = cli("fsck", "--deep")                  # fsck's replay agrees with what the extractor made
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout
    return ref, env


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_image(case, hostile, cli, root, guard):
    got = pull_verdict(case, hostile, cli, root)
    if got is None or case.run is None:
        return
    ref, env = got
    r = cli("run", "--rm", *case.run_opts, ref, *case.run, env=env, timeout=60)
    no_traceback(r)
    if case.run_expect == "ok":
        assert r.returncode == 0, r.stderr
    elif case.run_expect == "any":
        if r.returncode != 0:
            one_error(r)
    else:
        line = one_error(r)
        assert case.run_expect in line, line
    if case.stdout_has is not None and r.returncode == 0:
        assert case.stdout_has in r.stdout, r.stdout
    # listing/inspecting an image with odd config values works (the other cases: see the store tests)
    for args in (["images"], ["inspect", ref]) if case.name.startswith("created") else ():
        r = cli(*args, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_image_unpacked_in_processes(case, hostile, cli, root, guard):
    """The same pulls with each layer unpacked by a process of its own (engine/layer/worker.py,
    CONTAINER_UNPACK_PROCESS_MIN=0): the same verdict and error line, the same defences (the guard),
    the store as it was after a refusal, and what fsck --deep agrees with after a success."""
    pull_verdict(case, hostile, cli, root, CONTAINER_UNPACK_PROCESS_MIN="0")


# ==================================================================================================
# Registry-side attacks: manifests, indexes and descriptors a registry would refuse to store, served
# by the fault proxy in front of the real registry (which serves the blobs they point at).
# ==================================================================================================
@pytest.fixture(scope="module")
def good(registry, built_images):
    """A plain image (busybox base + one layer) in hostile/good; canned manifests point at its blobs."""
    bb = built_images["busybox"]
    base = bb.layers[0]
    base_blob = (Path(bb.oci_dir) / "blobs" / "sha256" / base.digest[7:]).read_bytes()
    img = build(base_blob, base.diff_id, [tm.tar(tm.file("hello", b"hi\n"))])
    push(registry.host, "hostile/good", "latest", img)
    return img


def serve(p, repo: str, ref: str, body: bytes, ctype: str = MT_MANIFEST, digest: str | None = None):
    headers = {"Content-Type": ctype}
    if digest is not None:
        headers["Docker-Content-Digest"] = digest
    p.replace(f"/v2/{repo}/manifests/{ref}$", status=200, body=body, headers=headers, count=None)


def edited(good: Img, fn) -> bytes:
    m = json.loads(good.manifest)
    fn(m)
    return json.dumps(m).encode()


def index_of(*children: bytes, mt=MT_MANIFEST) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {"mediaType": mt, "digest": sha(c), "size": len(c),
         "platform": {"os": "linux", "architecture": host_arch()}} for c in children]}).encode()


def _set_layer(key, value):
    return lambda m: m["layers"][-1].__setitem__(key, value)


def _set_config(key, value):
    return lambda m: m["config"].__setitem__(key, value)


BAD_MANIFESTS = [
    ("layer-digest-traversal", _set_layer("digest", "sha256:../../../../" + T_REL), "invalid digest"),
    ("config-digest-traversal", _set_config("digest", "sha256:../../../../" + T_REL), "invalid digest"),
    ("layer-digest-uppercase", lambda m: m["layers"][-1].__setitem__("digest", m["layers"][-1]["digest"].upper()),
     "invalid digest"),
    ("layer-digest-sha512", _set_layer("digest", "sha512:" + "a" * 128), "sha512"),
    ("layer-size-negative", _set_layer("size", -1), "invalid size"),
    ("layer-size-bool", _set_layer("size", True), "invalid size"),
    ("layer-size-float", _set_layer("size", 1e3), "invalid size"),
    ("layer-size-absurd", _set_layer("size", 1 << 62), None),
    ("layer-size-too-small", _set_layer("size", 10), None),
    ("config-size-absurd", _set_config("size", 1 << 40), "too large"),
    ("config-not-an-image", _set_config("mediaType", "application/vnd.cncf.helm.config.v1+json"),
     "not a container image"),
    ("layer-media-type-unknown", _set_layer("mediaType", "application/x-evil"), "unsupported layer media type"),
    ("layers-not-a-list", lambda m: m.__setitem__("layers", {"0": m["layers"][0]}), "without config and layers"),
    ("manifest-and-index", lambda m: m.__setitem__("manifests", []), "ambiguous"),
    ("descriptor-not-object", lambda m: m["layers"].append("sha256:" + "0" * 64), "not an object"),
    ("urls-not-strings", _set_layer("urls", [1, 2]), "urls"),
]


@pytest.mark.parametrize("name,edit,expect", BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
def test_hostile_manifest(name, edit, expect, good, cli, root, proxy, guard):
    p = proxy()
    body = edited(good, edit)
    serve(p, "hostile/good", "evil", body)
    r = cli("pull", f"{p.host}/hostile/good:evil", env=FAST, timeout=60)
    line = one_error(r)
    if expect:
        assert expect in line, line
    check_store_unchanged_after_failed_pull(root)


@pytest.mark.parametrize("procs", ["", "0"], ids=["in-process", "worker"])
def test_links_to_lower_files_pull_and_run(procs, registry, built_images, cli, root, guard):
    """A base layer with a hardlink to a file it does not hold: the pull is refused, one line, the
    store as it was (docker and podman refuse it too). A layer linking to a lower file and then
    whiting that file out: the pull takes it without a warning and the link holds the lower file."""
    env = dict(FAST, CONTAINER_UNPACK_PROCESS_MIN=procs) if procs else FAST
    bad_base = gzip.compress(tm.tar(tm.file("a", b"a"), tm.hardlink("h", "no/such")), mtime=0)
    bad = build(bad_base, sha(tm.tar(tm.file("a", b"a"), tm.hardlink("h", "no/such"))),
                [tm.tar(tm.file("b", b"b"))])
    push(registry.host, "hostile/base-link", TOKEN, bad)
    line = one_error(cli("pull", f"{registry.host}/hostile/base-link:{TOKEN}", env=env))
    assert "base layer" in line and "hardlink" in line, line
    check_store_unchanged_after_failed_pull(root)
    bb = built_images["busybox"]
    base_blob = (Path(bb.oci_dir) / "blobs" / "sha256" / bb.layers[0].digest[7:]).read_bytes()
    img = build(base_blob, bb.layers[0].diff_id,
                [tm.tar(tm.dir("etc"), tm.file("etc/conf", b"lower conf\n")),
                 tm.tar(tm.hardlink("h", "etc/conf"), tm.dir("etc"), tm.file("etc/.wh.conf"))])
    push(registry.host, "hostile/link-then-whiteout", TOKEN, img)
    ref = f"{registry.host}/hostile/link-then-whiteout:{TOKEN}"
    r = cli("pull", ref, env=env)
    assert r.returncode == 0 and "WARNING" not in r.stderr.upper(), r.stderr
    r = cli("run", "--rm", ref, "sh", "-c", "cat /h; test -e /etc/conf || echo gone", env=env)
    assert (r.returncode, r.stdout) == (0, "lower conf\ngone\n"), r.stderr
    # that stored layer as another image's base: refused too, though it is "Already exists"
    top = tm.tar(tm.hardlink("h", "etc/conf"), tm.dir("etc"), tm.file("etc/.wh.conf"))
    reuse = build(gzip.compress(top, mtime=0), sha(top), [tm.tar(tm.file("c", b"c"))])
    push(registry.host, "hostile/stored-link-base", TOKEN, reuse)
    before = store_state(root)
    line = one_error(cli("pull", f"{registry.host}/hostile/stored-link-base:{TOKEN}", env=env))
    assert "base layer" in line, line
    assert store_state(root) == before


def test_json_nesting_bombs(good, registry, cli, root, proxy, guard):
    """Deeply nested JSON in a manifest, a config and an error body: an error line, not a RecursionError."""
    p = proxy()
    serve(p, "hostile/good", "deep", b"[" * 200_000)
    line = one_error(cli("pull", f"{p.host}/hostile/good:deep", env=FAST))
    assert "nested too deeply" in line or "not valid JSON" in line, line
    # a 404 with a nested error body
    p.replace("/v2/hostile/good/manifests/gone$", status=404, body=b'{"errors":' + b"[" * 200_000,
              headers={"Content-Type": "application/json"}, count=None)
    line = one_error(cli("pull", f"{p.host}/hostile/good:gone", env=FAST))
    assert "not found" in line, line
    # a config blob that is a nesting bomb (registries store any blob)
    cfg = b'{"rootfs":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    img = Img(blobs={**good.blobs, sha(cfg): cfg})
    m = json.loads(good.manifest)
    m["config"] = {"mediaType": MT_CONFIG, "digest": sha(cfg), "size": len(cfg)}
    img.manifest = json.dumps(m).encode()
    push(registry.host, "hostile/deepcfg", "latest", img)
    line = one_error(cli("pull", f"{p.host}/hostile/deepcfg:latest", env=FAST))
    assert "image config" in line, line
    check_store_unchanged_after_failed_pull(root)


def test_index_digest_traversal_and_recursion(good, cli, root, proxy, guard):
    p = proxy()
    # an index entry whose digest is a path
    bad = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [
        {"mediaType": MT_MANIFEST, "digest": "sha256:../../../../" + T_REL, "size": 10,
         "platform": {"os": "linux", "architecture": host_arch()}}]}).encode()
    serve(p, "hostile/good", "idx-traversal", bad, MT_INDEX)
    assert "invalid digest" in one_error(cli("pull", f"{p.host}/hostile/good:idx-traversal", env=FAST))
    # an index that points at "itself": the child digest is served the index's own bytes
    other = b'{"schemaVersion": 2}'
    loop = index_of(other)
    serve(p, "hostile/good", "loop", loop, MT_INDEX)
    serve(p, "hostile/good", sha(other), loop, MT_INDEX)
    assert "digest mismatch" in one_error(cli("pull", f"{p.host}/hostile/good:loop", env=FAST))
    # a chain of indexes, each valid, deeper than anyone needs
    node = good.manifest
    mt = MT_MANIFEST
    for _ in range(8):
        serve(p, "hostile/good", sha(node), node, mt)
        node, mt = index_of(node, mt=mt), MT_INDEX
    serve(p, "hostile/good", "deep-index", node, MT_INDEX)
    assert "too deep" in one_error(cli("pull", f"{p.host}/hostile/good:deep-index", env=FAST))
    # Docker-Content-Digest naming a path: refused, never used as a file name
    serve(p, "hostile/good", "hdr", good.manifest, MT_MANIFEST, digest="sha256:../../../../" + T_REL)
    r = cli("pull", f"{p.host}/hostile/good:hdr", env=FAST)
    one_error(r)
    check_store_unchanged_after_failed_pull(root)


# -- stalls -------------------------------------------------------------------------------------------
STALL = {**FAST, "CONTAINER_REGISTRY_READ_TIMEOUT": "1"}


def test_stalled_blob_body_is_resumed_within_bounded_time(good, cli, root, proxy, guard):
    import time
    p = proxy()
    layer = json.loads(good.manifest)["layers"][0]
    p.stall(f"/blobs/{layer['digest']}", seconds=20, after=4096, count=1)
    t0 = time.monotonic()
    r = cli("pull", f"{p.host}/hostile/good:latest", env=STALL)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 12
    gets = [x for x in p.records(f"/blobs/{layer['digest']}") if x.method == "GET"]
    assert len(gets) == 2 and gets[1].headers.get("range", "").startswith("bytes="), [g.headers for g in gets]


def test_registry_that_stalls_forever_is_one_line_error(good, cli, root, proxy, guard):
    import time
    p = proxy()
    layer = json.loads(good.manifest)["layers"][0]
    p.stall(f"/blobs/{layer['digest']}", seconds=20, after=4096, count=None)
    t0 = time.monotonic()
    r = cli("pull", f"{p.host}/hostile/good:latest", env={**STALL, "CONTAINER_PULL_RECONNECTS": "2"})
    assert "gave up" in one_error(r)
    assert time.monotonic() - t0 < 15
    check_store_unchanged_after_failed_pull(root)
    p.clear()
    p.stall("/manifests/", seconds=20, count=None)          # no headers at all
    t0 = time.monotonic()
    line = one_error(cli("pull", f"{p.host}/hostile/good:latest", env=STALL))
    assert "timed out" in line, line
    assert time.monotonic() - t0 < 15


# -- foreign layers -------------------------------------------------------------------------------------
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


@pytest.mark.parametrize("config", ["", "allow_foreign_layers = true\n"], ids=["default", "allowed-public-only"])
def test_foreign_layer_urls_to_loopback_are_not_fetched(config, good, cli, root, proxy, guard):
    p = proxy()
    foreign = proxy()                  # would serve the bytes; must never be asked
    cli.write_config(config)

    def edit(m):
        m["mediaType"] = MT_DOCKER_MANIFEST
        m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
        m["layers"][-1]["mediaType"] = MT_FOREIGN
        d = m["layers"][-1]["digest"]
        m["layers"][-1]["urls"] = [f"https://{foreign.host}/v2/hostile/good/blobs/{d}",
                                   f"https://localhost:{foreign.port}/x", f"http://{foreign.host}/plain",
                                   "https://[::1]:1/x", "https://169.254.169.254/latest/meta-data", "file:///etc/shadow"]
    body = edited(good, edit)
    serve(p, "hostile/good", "foreign", body, MT_DOCKER_MANIFEST)
    r = cli("pull", f"{p.host}/hostile/good:foreign", env=FAST)
    assert r.returncode == 0, r.stderr                     # from the registry instead
    assert foreign.count() == 0, foreign.paths()
    layer = json.loads(good.manifest)["layers"][-1]["digest"]
    assert p.count(f"/blobs/{layer}", method="GET") == 1


# -- what the image's own command tries as root (the isolation's share of "nothing outside ROOT") --------
@pytest.mark.parametrize("isolation", ["namespaces", "chroot"])
def test_container_root_cannot_reach_the_host_kernel_or_disks(isolation, good, registry, cli, root, guard):
    """A hostile image's command, run as root in the container: writing the kernel's core_pattern,
    mknod of the host's root disk (read 1 byte only), mounts, unmasking /proc, a chroot escape.
    None may succeed; the caps left are podman's default set."""
    st = os.stat("/")
    script = "; ".join([
        f"echo '|{TARGET}' > /proc/sys/kernel/core_pattern && echo ESCAPE-core-pattern",
        f"mknod /dev/hostdisk b {os.major(st.st_dev)} {os.minor(st.st_dev)} && head -c 1 /dev/hostdisk "
        ">/dev/null && echo ESCAPE-disk",
        "mkdir -p /m && mount -t tmpfs t /m && echo ESCAPE-mount",
        "umount /proc/sys && echo ESCAPE-umount",
        "mount -o remount,rw /proc/sys && echo ESCAPE-remount",
        # the classic escape from a chroot needs chroot(2) again (namespaces keep it: pivot_root)
        "chroot / /bin/true && echo ESCAPE-chroot" if isolation == "chroot" else "true",
        "grep CapBnd /proc/self/status 2>/dev/null || echo no-proc",
        "echo done",
    ])
    r = cli("run", "--rm", "--isolation", isolation, f"{registry.host}/hostile/good:latest", "sh", "-c", script,
            env=FAST, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ESCAPE" not in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("done"), r.stdout
    if isolation == "namespaces":
        bnd = int(r.stdout.split("CapBnd:")[1].split()[0], 16)
        assert bnd == sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31)), hex(bnd)


# -- hostile auth challenges ----------------------------------------------------------------------------
CHALLENGES = ['Bearer realm="file:///etc/shadow",service="x"', 'Bearer realm="http://[::1",service="x"',
              'Bearer realm=""', 'Bearer realm="ftp://127.0.0.1/x"', 'Bearer', 'Basic', 'Basic realm=',
              'Bearer realm="http://127.0.0.1:1/token",scope="' + "x" * 10000 + '"',
              'Bearer realm="http://127.0.0.1:1/token", Bearer realm="\x1b[2J"', '"""', 'Negotiate abc',
              'Bearer realm="http://user:pw@127.0.0.1:1/t\r\nX-Injected: 1"']


@pytest.mark.parametrize("challenge", CHALLENGES, ids=lambda c: repr(c)[:30])
def test_hostile_auth_challenge_is_one_line(challenge, good, cli, root, proxy, guard):
    p = proxy()
    p.replace("/v2/", status=401, body=b'{"errors":[{"code":"UNAUTHORIZED","message":"\\u001b[2J"}]}',
              headers={"WWW-Authenticate": challenge, "Content-Type": "application/json"}, count=None)
    r = cli("pull", f"{p.host}/hostile/good:latest", env=FAST, timeout=60)
    one_error(r)
    assert "\x1b" not in r.stderr, r.stderr
    check_store_unchanged_after_failed_pull(root)


@pytest.mark.parametrize("location", ["/v2/", "http://[::1/x", "file:///etc/shadow", "http://127.0.0.1:1/x", "\x1b[2J"],
                         ids=["loop", "bad-ipv6", "file", "refused", "esc"])
def test_hostile_redirects_are_one_line(location, good, cli, root, proxy, guard):
    p = proxy()
    p.replace("/v2/", status=302, headers={"Location": location}, count=None)
    r = cli("pull", f"{p.host}/hostile/good:latest", env=FAST, timeout=60)
    one_error(r)
    assert "\x1b" not in r.stderr, r.stderr
    check_store_unchanged_after_failed_pull(root)


TOKEN_BODIES = [b'{"token":"t","expires_in":Infinity}', b'{"token":"t","expires_in":-1e309}',
                b'{"token":"t","expires_in":NaN}', b'{"token":' + b"[" * 100_000, b'{"token":"t\\r\\nX: y"}',
                b'{"token":"' + b"t" * 200_000 + b'"}', b'{"token":["t"]}', b"[]", b"\xff\xfe"]


@pytest.mark.parametrize("body", TOKEN_BODIES, ids=lambda b: repr(b)[:30])
def test_hostile_token_server_is_one_line(body, good, cli, root, proxy, guard):
    p = proxy()
    p.replace("/token", status=200, body=body, headers={"Content-Type": "application/json"}, count=None)
    p.replace("/v2/", status=401, body=b"{}", count=None,
              headers={"WWW-Authenticate": f'Bearer realm="http://{p.host}/token",service="s"'})
    r = cli("pull", f"{p.host}/hostile/good:latest", env=FAST, timeout=60)
    one_error(r)
    check_store_unchanged_after_failed_pull(root)


@pytest.mark.parametrize("headers", [{"Content-Length": "abc"}, {"Content-Length": "-1"},
                                     {"Content-Length": "99999999999999999999999"},
                                     {"Retry-After": "99999999999999999999"}, {"Retry-After": "-5"},
                                     {"Retry-After": "Infinity"}, {"Docker-Content-Digest": "\x1b[2J"},
                                     {"Content-Type": "\x1b[2J"}],
                         ids=lambda h: repr(h)[:40])
def test_hostile_response_headers_are_one_line_or_ignored(headers, good, cli, root, proxy, guard):
    p = proxy()
    status = 429 if "Retry-After" in headers else 200
    body = good.manifest if status == 200 else b"{}"
    p.replace("/v2/hostile/good/manifests/latest$", status=status, body=body, count=None,
              headers={"Content-Type": MT_MANIFEST, **headers})
    r = cli("pull", f"{p.host}/hostile/good:latest", env=FAST, timeout=60)
    assert "\x1b" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if r.returncode != 0:
        one_error(r)
        check_store_unchanged_after_failed_pull(root)


def test_escape_sequences_from_an_image_never_reach_the_terminal_raw(registry, built_images, cli, root, guard):
    """Cmd, Env and Labels with ESC/OSC sequences: ps, images and inspect print them escaped
    (docker quotes the command in ps)."""
    bb = built_images["busybox"]
    base = bb.layers[0]
    base_blob = (Path(bb.oci_dir) / "blobs" / "sha256" / base.digest[7:]).read_bytes()
    img = build(base_blob, base.diff_id, [], cfg={"Cmd": ["sh", "-c", "true # \x1b[2J\x1b]0;pwned\x07"],
                                                  "Labels": {"a": "\x1b[31mred"}, "Env": ["X=\x1b[2J"]})
    push(registry.host, "hostile/escapes", "latest", img)
    ref = f"{registry.host}/hostile/escapes:latest"
    assert cli("pull", ref, env=FAST).returncode == 0
    assert cli("run", "--name", "esc", ref, env=FAST).returncode == 0
    for args in (["ps", "-a"], ["ps", "-a", "--no-trunc"], ["images"], ["inspect", ref], ["inspect", "esc"]):
        r = cli(*args)
        assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr, (args, r.stdout)


def test_verbose_pull_relays_registry_text_escaped(good, cli, root, proxy, guard):
    p = proxy()
    p.replace("/v2/hostile/good/manifests/latest$", status=200, body=good.manifest, count=None,
              headers={"Content-Type": MT_MANIFEST, "Warning": '299 - "\x1b]0;pwned\x07\x1b[2J"'})
    r = cli("-v", "pull", f"{p.host}/hostile/good:latest", env=FAST)
    assert r.returncode == 0, r.stderr
    assert "registry warning" in r.stderr and "\x1b" not in r.stderr, r.stderr


def full_store_state(root: Path) -> dict:
    from container.engine.store import Store
    from container.schema import Blob, Image, ImageLayer, Layer, Snapshot, Tag
    files = {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_ino)
             for sub in ("blobs", "layers", "snapshots") for p in (root / sub).rglob("*")}
    s = Store(root)
    s.db()
    rows = {m.__name__: sorted(tuple(str(v) for v in r.values()) for r in m.select().dicts())
            for m in (Blob, Layer, Image, ImageLayer, Tag, Snapshot)}
    s.close()
    return {"files": files, "rows": rows}


@pytest.mark.parametrize("bad", ["same-layer-symlink-loop", "diff-ids-mismatch", "bytes-bomb",
                                 "whiteout-bare"])
def test_failed_pull_leaves_an_existing_store_as_it_was(bad, hostile, good, registry, cli, root, guard):
    """A store holding an image (and its snapshot) that shares the base layer with a hostile image:
    the hostile pull fails and the store is byte-for-byte and row-for-row what it was; fsck is clean."""
    ok_ref = f"{registry.host}/hostile/good:latest"
    assert cli("run", "--rm", ok_ref, "cat", "/hello", env=FAST).stdout == "hi\n"
    before = full_store_state(root)
    env = {**FAST, "CONTAINER_LAYER_MAX_BYTES": "4M"} if bad == "bytes-bomb" else FAST
    one_error(cli("pull", hostile[bad][0], env=env))
    assert full_store_state(root) == before
    r = cli("fsck")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert cli("run", "--rm", ok_ref, "cat", "/hello", env=FAST).stdout == "hi\n"


@pytest.mark.parametrize("isolation", ["namespaces", "chroot"])
def test_device_nodes_shipped_by_an_image_cannot_be_opened(isolation, registry, built_images, cli, root, guard):
    """An image carrying a block node for the host's root disk (read 1 byte only) and /dev/kmsg: neither
    opens in the container, on the overlay (nodev) or in chroot's private copy (not copied)."""
    bb = built_images["busybox"]
    base = bb.layers[0]
    base_blob = (Path(bb.oci_dir) / "blobs" / "sha256" / base.digest[7:]).read_bytes()
    st = os.stat("/")
    layer = tm.tar(tm.dir("hd"), tm.blockdev("hd/disk", os.major(st.st_dev), os.minor(st.st_dev)),
                   tm.chardev("hd/kmsg", 1, 11), tm.chardev("hd/null", 1, 3))
    img = build(base_blob, base.diff_id, [layer])
    push(registry.host, "hostile/devices", "latest", img)
    ref = f"{registry.host}/hostile/devices:latest"
    script = (f"[ -b /hd/disk ] && head -c 1 /hd/disk >/dev/null 2>&1 && echo ESCAPE-disk; "
              f"[ -c /hd/kmsg ] && echo pwned-{TOKEN} 2>/dev/null > /hd/kmsg && echo ESCAPE-kmsg; "
              "[ -c /hd/null ] && echo x > /hd/null && echo null-ok; echo done")
    r = cli("run", "--rm", "--isolation", isolation, ref, "sh", "-c", script, env=FAST)
    assert r.returncode == 0, r.stderr
    assert "ESCAPE" not in r.stdout and r.stdout.strip().endswith("done"), r.stdout
