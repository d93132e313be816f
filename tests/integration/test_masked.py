"""docker's default masked and read-only paths (moby oci/defaults.go), read from inside a container:
a masked dir lists empty, a masked file reads empty, a read-only path refuses writes; in both
isolation modes (chroot mounts no /proc nor /sys at all: the host's kernel files are not there)."""

from __future__ import annotations

import os

import pytest

MASKED = ("/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
          "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
          "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

PROBE = r"""
for p in %s; do
  if [ -d "$p" ]; then echo "$p dir $(ls -A "$p" | wc -l)"
  elif [ -e "$p" ]; then echo "$p file $(head -c 4096 "$p" 2>/dev/null | wc -c)"
  else echo "$p absent"; fi
done
for p in %s; do
  if [ -e "$p" ]; then
    ro=$(awk -v p="$p" '$5 == p { split($6, o, ","); print o[1] }' /proc/self/mountinfo | tail -1)
    echo "$p present ${ro:-none}"
  else echo "$p absent"; fi
done
if echo x > /proc/sysrq-trigger 2>/dev/null; then echo "sysrq written"; else echo "sysrq refused"; fi
if echo pwned > /proc/sys/kernel/hostname 2>/dev/null; then echo "hostname written"; else echo "hostname refused"; fi
[ -e /proc/self ] && echo "procfs" || echo "no procfs"
"""


def probe(cli, pushed, isolation: str) -> dict[str, str]:
    script = PROBE % (" ".join(MASKED), " ".join(READONLY))
    r = cli("run", "--rm", "--isolation", isolation, pushed["busybox"].ref, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        out[k] = v
    return out


def test_namespaces_mask_docker_default_paths(cli, pushed):
    out = probe(cli, pushed, "namespaces")
    for p in MASKED:
        assert out[p] in ("dir 0", "file 0", "absent"), (p, out[p])
    if os.listdir("/sys/firmware"):            # the host has firmware tables: the container does not see them
        assert out["/sys/firmware"] == "dir 0"
    if os.path.exists("/proc/kcore"):
        assert out["/proc/kcore"] == "file 0"
    for p in READONLY:
        if os.path.exists(p):
            assert out[p] == "present ro", (p, out[p])
    assert out["sysrq"] == "refused" and out["hostname"] == "refused"
    assert "procfs" in out                     # /proc itself is there


def test_chroot_shows_no_host_kernel_files(cli, pushed):
    from container.engine.runtime import isolate

    if isolate.unavailable_reason("chroot"):
        pytest.skip("chroot isolation unavailable here")
    out = probe(cli, pushed, "chroot")
    assert "no" in out and out["no"] == "procfs"
    for p in MASKED:
        assert out[p] in ("dir 0", "file 0", "absent"), (p, out[p])
    for p in READONLY:
        assert out[p] == "absent", (p, out[p])
    assert out["hostname"] == "refused"
