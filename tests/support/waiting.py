"""``wait_for``: the one way the suite waits for something to happen.

It polls a condition until it returns something truthy and returns that, or fails naming
what it waited for (``what``) with whatever ``detail()`` adds (a server's log, say).
Everything else that waits says what for in its own name (``ServerProcess.wait_ready`` in
``conftest``, ``wait_metric`` in :mod:`.metrics`).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

# For ``ignore``: a server or Prometheus not answering yet is "not yet", not a failure.
NOT_YET: tuple[type[BaseException], ...] = (httpx.HTTPError,)


def wait_for(
    condition: Callable[[], T],
    timeout: float = 15.0,
    *,
    what: str | None = None,
    detail: Callable[[], str] | None = None,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns a truthy value, and
    return that value. Exceptions of the types in ``ignore`` count as "not yet". After
    ``timeout`` seconds, fail with ``AssertionError`` naming ``what`` (default: the
    condition's source) and the last value seen, then ``detail()``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        with contextlib.suppress(*ignore):
            last = result = condition()
            if result:
                return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if what is None:
        try:
            what = inspect.getsource(condition).strip()
        except (OSError, TypeError):
            what = repr(condition)
    message = f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
    if detail is not None:
        message += "\n" + detail()
    raise AssertionError(message)
