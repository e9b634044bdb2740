"""What a runner is: the protocol the request path awaits and the outputs it returns.

Both kinds of runner (``runners.py``: inline and thread; ``batcher.py``: dynamic batching)
implement it, and everything above that calls a runner (endpoints, shadows, explanations)
types it by this module alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # OpenTelemetry is an extra: spans.py is imported only when tracing is on
    from ..tracing.spans import RequestTrace

Outputs = list[np.ndarray]


class Runner(Protocol):
    """Runs validated feeds for one loaded version; with a ``trace`` (tracing on), its
    queue wait and session run become spans under it."""

    kind: str

    async def run(
        self,
        feeds: dict[str, np.ndarray],
        output_names: Sequence[str] | None,
        trace: RequestTrace | None = None,
    ) -> tuple[Outputs, float, float]: ...
