"""Running the application under uvicorn, with one or several worker processes."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import tempfile
import warnings
from types import FrameType

import uvicorn

from .config import ServerSettings
from .http.fast_lane import FastLaneProtocol
from .http.head_timeout import TimedHeadProtocol

log = logging.getLogger("mlserve")


def serve(settings: ServerSettings) -> int:
    """Serve until SIGINT/SIGTERM; in-flight requests get ``drain_seconds`` to finish.

    Workers rebuild the settings from ``MLSERVE_*`` variables, so the parent exports them.
    """
    worker_dir = None
    if settings.workers > 1 and not settings.worker_dir:
        # Workers publish monitoring snapshots here; /metrics on any worker sums them.
        worker_dir = tempfile.mkdtemp(prefix="mlserve-workers-")
        settings = dataclasses.replace(settings, worker_dir=worker_dir)
    os.environ.update(settings.to_environ())
    os.environ["MLSERVE_REGISTRY"] = str(settings.registry.resolve())
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # `mlserve demo` configured logging for the build already
    )
    # JSON numbers beyond FP32/FP16 range overflow when cast; the request is refused by the
    # NaN policy (or accepted as ±Inf where allowed), so numpy's warning is noise here.
    warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # installed before it; make that handler a clean exit so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        "mlserve.http.app:app_from_environ",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        loop="uvloop",
        # httptools with limits on request heads (size: protocol.py, time: head_timeout.py)
        # that answers whole infer requests itself (fast_lane.py).
        http=FastLaneProtocol if settings.fast_lane == "on" else TimedHeadProtocol,
        # The request-head size limit of protocol.py: uvicorn's own setting (h11 only) carries
        # it to every worker process.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        lifespan="on",
        access_log=False,
        server_header=False,
        # No X-Forwarded-* rewriting: mlserve logs no client addresses, and the middleware
        # costs every request a layer.
        proxy_headers=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_seconds),  # 0: no drain
    )
    if worker_dir is not None:
        shutil.rmtree(worker_dir, ignore_errors=True)
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
