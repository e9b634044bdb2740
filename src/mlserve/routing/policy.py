"""Version choice for requests that do not name a version: stable plus a weighted canary.

Pure and per model: a ``Split`` is built when the store publishes (from ``model.toml
[routing]`` and the ready versions) and ``pick`` runs per request. A request with a
routing key (header ``mlserve-routing-key`` or ``parameters.routing_key``) lands on the
side its key hashes to, the same on every replica (CRC-32, not Python's salted ``hash``);
a request without one is split at random. A URL that names a version is ``pinned`` and
never comes here.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Generic, TypeVar

E = TypeVar("E")

STABLE = "stable"
CANARY = "canary"
PINNED = "pinned"
_SCALE = 10_000  # weights resolve to 0.01 %


@dataclass(frozen=True)
class Split(Generic[E]):
    """The stable endpoint, an optional canary and its weight in percent (0–100)."""

    stable: E
    canary: E | None = None
    weight: float = 0.0
    shadows: tuple[E, ...] = ()  # ready shadow versions, mirrored after the answer
    shadow_sample: float = 1.0
    shadow_queue: int = 256  # mirrored copies waiting at most

    def __post_init__(self) -> None:
        object.__setattr__(self, "_threshold", round(self.weight * _SCALE / 100))

    def pick(self, key: str | None) -> tuple[E, str]:
        """The endpoint for a request and its role (``stable`` or ``canary``)."""
        canary = self.canary
        if canary is None:
            return self.stable, STABLE
        threshold: int = self._threshold  # type: ignore[attr-defined]
        draw = random.randrange(_SCALE) if key is None else bucket(key)
        return (canary, CANARY) if draw < threshold else (self.stable, STABLE)


def bucket(key: str) -> int:
    """The sticky bucket of a routing key in [0, 10000): below weight × 100 is the canary."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % _SCALE
