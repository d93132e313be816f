"""docker's `--filter` for `images` and `ps`: parse KEY=VALUE filters, then keep what matches.

    images: dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE, label=KEY[=VALUE]
    ps:     status=created|running|exited|..., name=REGEX, id=PREFIX, ancestor=IMAGE,
            label=KEY[=VALUE], exited=CODE
    volume ls: dangling=true|false, driver=local, label=KEY[=VALUE], name=REGEX

docker's semantics: values of one key OR, different keys AND. reference= is Go's path.Match on
the familiar name (`busybox:latest`, and `busybox` alone), `*` never crossing a '/'; a matching
image lists only its matching tags. A bad key or value is an InvalidFilter (one line, exit 1).
"""

from __future__ import annotations

import dataclasses
import re

from container.engine.errors import ContainerError, ImageNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from container.engine.image.catalog import ImageInfo

IMAGE_KEYS = ("dangling", "reference", "before", "since", "label")
PS_KEYS = ("status", "name", "id", "ancestor", "label", "exited")
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


class InvalidFilter(ContainerError):
    """A --filter docker would refuse: unknown key, malformed value."""


def parse(filters: list[str] | None, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """{key: [values]} of KEY=VALUE strings; InvalidFilter for a key not in `keys`."""
    out: dict[str, list[str]] = {}
    for f in filters or []:
        k, sep, v = f.partition("=")
        k = k.strip().lower()
        if not sep:
            raise InvalidFilter(f"bad format of filter (expected name=value): {f!r}")
        if k not in keys:
            raise InvalidFilter(f"invalid filter '{k}': valid filters are {', '.join(keys)}")
        out.setdefault(k, []).append(v)
    return out


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` never match '/', [...] classes ([^...] negated), \\ escapes."""
    rx, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            rx.append("[^/]*")
        elif c == "?":
            rx.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            rx.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                raise InvalidFilter(f"invalid reference pattern {pattern!r}: syntax error in pattern")
            body = pattern[i + 1:j]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            rx.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
            i = j
        else:
            rx.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), name) is not None


def _labels(config: dict) -> dict[str, str]:
    return dict((config or {}).get("Labels") or (config or {}).get("labels") or {})


def _label_ok(labels: dict[str, str], wanted: list[str]) -> bool:
    """Every label= value must hold (docker ANDs label filters)."""
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _bool(key: str, v: str) -> bool:
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise InvalidFilter(f"invalid filter '{key}={v}': use true or false")


def filter_images(images: list[ImageInfo], filters: list[str] | None,
                  resolve: Callable[[str], ImageInfo]) -> list[ImageInfo]:
    """The images `docker images --filter ...` lists; `resolve` names an image (before=, since=)."""
    f = parse(filters, IMAGE_KEYS)
    if not f:
        return images
    dangling = {_bool("dangling", v) for v in f.get("dangling", [])}
    if len(dangling) > 1:
        raise InvalidFilter("conflicting filters: dangling=true and dangling=false")

    def when(name: str, key: str) -> Any:
        try:
            t = resolve(name).created
        except ImageNotFound:
            raise InvalidFilter(f"invalid filter '{key}={name}': No such image: {name}") from None
        return t

    before = [when(v, "before") for v in f.get("before", [])]
    since = [when(v, "since") for v in f.get("since", [])]
    patterns = f.get("reference", [])
    out = []
    for img in images:
        if dangling and (not img.repo_tags) not in dangling:
            continue
        if before and not (img.created and any(b and img.created < b for b in before)):
            continue
        if since and not (img.created and any(s and img.created > s for s in since)):
            continue
        if f.get("label") and not _label_ok(_labels((img.config or {}).get("config") or {}), f["label"]):
            continue
        if patterns:
            def hit(r: str) -> bool:
                name = r.split("@", 1)[0] if "@" in r else r.rsplit(":", 1)[0]
                return any(path_match(p, r) or path_match(p, name) for p in patterns)
            tags = tuple(t for t in img.repo_tags if hit(t))
            digests = tuple(d for d in img.repo_digests if hit(d))
            if not tags and not digests:
                continue
            img = dataclasses.replace(img, repo_tags=tags, repo_digests=digests)
        out.append(img)
    return out


def wants_all(filters: list[str] | None) -> bool:
    """docker ps lists stopped containers too when a status= or exited= filter asks for them."""
    f = parse(filters, PS_KEYS)
    return "status" in f or "exited" in f


def filter_containers(cs: list[Any], filters: list[str] | None,
                      resolve: Callable[[str], ImageInfo]) -> list[Any]:
    """The containers (engine ContainerInfo) `docker ps --filter ...` lists."""
    f = parse(filters, PS_KEYS)
    if not f:
        return cs
    for s in f.get("status", []):
        if s not in STATUSES:
            raise InvalidFilter(f"invalid filter 'status={s}': use one of {', '.join(STATUSES)}")
    codes = set()
    for v in f.get("exited", []):
        try:
            codes.add(int(v))
        except ValueError:
            raise InvalidFilter(f"invalid filter 'exited={v}': an exit code (integer)") from None
    names = []
    for v in f.get("name", []):
        try:
            names.append(re.compile(v.lstrip("/")))
        except re.error:
            raise InvalidFilter(f"invalid filter 'name={v}': not a regular expression") from None
    ancestors: set[str] = set()
    for v in f.get("ancestor", []):
        ancestors.add(v)
        try:
            img = resolve(v)
            ancestors.update((img.id, img.config_digest))
        except ImageNotFound:
            pass
    out = []
    for c in cs:
        if f.get("status") and c.status not in f["status"]:
            continue
        if codes and not (c.status == "exited" and c.exit_code in codes):
            continue
        if names and not any(rx.search(c.name) for rx in names):
            continue
        if f.get("id") and not any(c.id.startswith(v) for v in f["id"]):
            continue
        if ancestors and c.image not in ancestors and c.image_id not in ancestors:
            continue
        if f.get("label") and not _label_ok(dict(c.config.get("labels") or {}), f["label"]):
            continue
        out.append(c)
    return out


VOLUME_KEYS = ("dangling", "driver", "label", "name")


def filter_volumes(volumes: list, filters: list[str] | None) -> list:
    """`docker volume ls --filter`: dangling=true|false (no container uses it), driver=, label=KEY[=VALUE],
    name=REGEX (a match anywhere in the name); volumes are engine/volumes.VolumeInfo."""
    f = parse(filters, VOLUME_KEYS)
    if not f:
        return list(volumes)
    try:
        names = [re.compile(p) for p in f.get("name", [])]
    except re.error as e:
        raise InvalidFilter(f"invalid filter 'name': {e}") from None
    dangling = [_bool("dangling", v) for v in f.get("dangling", [])]
    out = []
    for v in volumes:
        if dangling and (not v.containers) not in dangling:
            continue
        if f.get("driver") and v.driver not in f["driver"]:
            continue
        if names and not any(rx.search(v.name) for rx in names):
            continue
        if f.get("label") and not _label_ok(v.labels, f["label"]):
            continue
        out.append(v)
    return out
