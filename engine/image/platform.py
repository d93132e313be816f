"""Platforms: host detection, containerd-style normalisation and ranking, choice from an index.

    normalize("linux/aarch64/v8") == Platform("linux", "arm64", "")   # arm64 == arm64/v8
    choose(index, want)  -> the best descriptor, first in index order among equals
    candidates(index, want) -> every acceptable entry, best first (those without a platform last)
"""

from __future__ import annotations

import platform as _pf
import re

from container.engine.errors import InvalidReference, PlatformMismatch
from container.engine.image.manifest import Descriptor, Index, Platform

_MACHINE = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""), "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"), "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""), "loongarch64": ("loong64", ""),
}


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386",):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(p.os.lower(), arch, variant, p.os_version)


_PLAT_RE = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+){1,2}$", re.I | re.A)   # containerd's specifier: no dots


def parse(s: str) -> Platform:
    """'linux/arm64', 'linux/arm/v7', 'arm64' (os defaults to linux)."""
    s = (s or "").strip()
    if s and "/" not in s:
        s = "linux/" + s
    if not _PLAT_RE.match(s):
        raise InvalidReference(f'invalid platform "{s}": expected os/arch[/variant], e.g. linux/arm64')
    parts = s.split("/")
    return normalize(Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))


def host() -> Platform:
    machine = _pf.machine().lower()
    arch, variant = _MACHINE.get(machine, (machine, ""))
    os_ = _pf.system().lower() or "linux"
    if os_ == "darwin":
        os_ = "linux"  # images for macOS hosts are linux images (run in a VM); pull/inspect still work
    return normalize(Platform(os_, arch, variant))


def _vector(p: Platform) -> list[Platform]:
    """Acceptable platforms for `p`, best first (containerd's platformVector)."""
    out = [p]
    a, v = p.architecture, p.variant
    if a == "amd64":
        n = int(v[1:]) if v.startswith("v") and v[1:].isdigit() else 1
        out += [Platform(p.os, "amd64", f"v{i}" if i > 1 else "") for i in range(n - 1, 0, -1)]
        out.append(Platform(p.os, "386", ""))
    elif a == "arm":
        n = int(v[1:]) if v.startswith("v") and v[1:].isdigit() else 7
        out += [Platform(p.os, "arm", f"v{i}") for i in range(n - 1, 4, -1)]
    elif a == "arm64":
        m = re.match(r"^v(\d+)(?:\.(\d+))?$", v or "v8")
        major, minor = (int(m.group(1)), int(m.group(2) or 0)) if m else (8, 0)
        if major == 9:
            out += [Platform(p.os, "arm64", f"v9.{i}" if i else "v9") for i in range(minor - 1, -1, -1)]
            major, minor = 8, minor + 5
        if major == 8:
            out += [Platform(p.os, "arm64", f"v8.{i}") for i in range(minor - 1, 0, -1)]
            out.append(Platform(p.os, "arm64", ""))
        out += [Platform(p.os, "arm", f"v{i}") for i in (8, 7, 6, 5)]
    seen, uniq = set(), []
    for q in out:
        key = (q.os, q.architecture, q.variant)
        if key not in seen:
            seen.add(key)
            uniq.append(q)
    return uniq


def rank(want: Platform, have: Platform, *, strict: bool = False) -> int | None:
    """0 = exact; larger = worse fallback; None = not acceptable."""
    have = normalize(have)
    vec = [want] if strict else _vector(want)
    for i, q in enumerate(vec):
        if (q.os, q.architecture, q.variant) == (have.os, have.architecture, have.variant):
            return i
    return None


def is_attestation(d: Descriptor) -> bool:
    """An index entry that is not an image: BuildKit's attestation manifests (provenance, SBOM)."""
    return (d.annotation("vnd.docker.reference.type") == "attestation-manifest"
            or (d.platform is not None and d.platform.os == "unknown" and d.platform.architecture == "unknown"))


def candidates(index: Index, want: Platform, *, strict: bool = False) -> tuple[list[Descriptor], list[str]]:
    """(the entries that may be `want`, best first; the platforms the index lists). The explicit
    matches come first (by rank, then index order), then the entries without a `platform`, in index
    order: their config says what they are (containerd, containers/image); the caller checks it."""
    from container.engine.image.manifest import INDEX_TYPES, MANIFEST_TYPES

    ranked: list[tuple[int, int, Descriptor]] = []
    unlabelled: list[Descriptor] = []
    available: list[str] = []
    for pos, d in enumerate(index.manifests):
        if is_attestation(d):
            continue
        if d.media_type and d.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            continue  # unknown entries MUST NOT be an error
        if d.platform is None:
            unlabelled.append(d)
            continue
        available.append(str(normalize(d.platform)))
        r = rank(want, d.platform, strict=strict)
        if r is not None:
            ranked.append((r, pos, d))
    ranked.sort(key=lambda t: t[:2])
    return [d for _r, _p, d in ranked] + unlabelled, available


def mismatch(want: Platform, available: list[str]) -> PlatformMismatch:
    """The error for an index with nothing for `want`, listing what it has."""
    listing = ", ".join(dict.fromkeys(available)) or "none"
    return PlatformMismatch(f"no matching manifest for {want} in the manifest list entries "
                            f"(available: {listing})")


def other_platform(name: str, want: Platform | str, have: Platform | str) -> PlatformMismatch:
    """docker's error for an image found under `name` whose platform is not the one asked for."""
    return PlatformMismatch(f"image with reference {name} was found but does not match the specified "
                            f"platform: wanted {want}, actual: {have}")


def choose(index: Index, want: Platform, *, strict: bool = False) -> Descriptor:
    """Best manifest for `want`; first in index order among equals; an entry without a platform
    after every explicit match. PlatformMismatch lists what exists."""
    found, available = candidates(index, want, strict=strict)
    if not found:
        raise mismatch(want, available)
    return found[0]
