"""Listeners: how long work tells whoever watches it what is happening (the CLI draws bars from it).

The engine calls these methods and never renders; a listener decides what to show. The base
classes ignore every event, so a listener overrides only what it shows, and `None` anywhere a
listener is taken means NULL (nothing shown).
"""

from __future__ import annotations

TYPE_CHECKING = False        # (typing's own costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any


class PullListener:
    """Events of one pull, in order: resolved, layer (once per layer), layer_status/advance
    (per layer, from the worker threads: implementations lock what they share), done."""

    def info(self, msg: str) -> None:
        """Verbose detail: retries, a registry's Warning header (untrusted text: escape it)."""

    def warning(self, msg: str) -> None:
        """Something the user should know though the pull goes on (a platform that is not the host's,
        a config without os/architecture): one line, shown even when quiet (docker's WARNING:)."""

    def resolved(self, ref: str, digest: str) -> None:
        """The reference resolved to this manifest or index digest."""

    def layer(self, digest: str, size: int, status: str) -> None:
        """A layer of the image is known: status "Already exists" or "Waiting"."""

    def layer_status(self, digest: str, status: str) -> None:
        """Downloading, Extracting, Pull complete, Already exists."""

    def advance(self, digest: str, n: int) -> None:
        """n more compressed bytes of this layer arrived."""

    def done(self, info: Any, updated: bool) -> None:
        """The image is recorded (an ImageInfo); updated = a tag moved or the image is new."""


class RunListener(PullListener):
    """A run that may pull first (docker's `--pull missing`)."""

    def image_missing(self, ref: str) -> None:
        """The image is not in the store and is about to be pulled ("Unable to find image ... locally")."""


NULL = RunListener()
