"""Triton's model configuration and statistics extensions as plain data.

``model_config`` answers what ``tritonclient``'s ``get_model_config`` reads (Triton's
``ModelConfig`` as JSON) from a loaded version's signature and runner; ``model_stats``
answers ``get_inference_statistics`` (``ModelStatistics``) from the request counters that
the monitoring hub merges over workers. Transport-free: HTTP and gRPC render the same dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import VersionPolicy
from ..monitoring.request_stats import SUCCESS
from ..monitoring.snapshot import EndpointState, WorkerSnapshot
from ..registry.store import ModelStore
from ..runtime.tensors import TensorSpec
from .endpoint import Endpoint
from .views import PLATFORM

BACKEND = "onnxruntime"
# V2 datatypes as Triton's model configuration names them (BYTES is Triton's TYPE_STRING).
_TRITON_TYPES = {"BYTES": "TYPE_STRING"}


def triton_type(datatype: str) -> str:
    """``FP32`` → ``TYPE_FP32``; ``BYTES`` → ``TYPE_STRING``."""
    return _TRITON_TYPES.get(datatype, f"TYPE_{datatype}")


class TritonViews:
    """Model configuration and statistics in Triton's shapes; reads only."""

    def __init__(self, store: ModelStore[Endpoint], merged: Callable[[], WorkerSnapshot]) -> None:
        self.store = store
        self._merged = merged  # () -> the hub's snapshot summed over workers

    def model_config(self, model: str, version: int | None) -> dict[str, Any]:
        """The configuration of the version (or of the model's default version).

        With dynamic batching on, ``max_batch_size`` is the batcher's and ``dims`` leave
        out the batch dimension (Triton's convention); with it off, ``max_batch_size`` is 0
        and ``dims`` are the whole shape, ``-1`` marking a free dimension."""
        record = self.store.record(model)
        endpoint = self.store.resolve(model, version)
        runner = endpoint.runner
        batch = int(getattr(runner, "max_batch", 0)) if runner.kind == "batch" else 0

        def tensor(spec: TensorSpec) -> dict[str, Any]:
            dims = list(spec.shape[1:] if batch and spec.shape else spec.shape)
            return {"name": spec.name, "data_type": triton_type(spec.datatype), "dims": dims}

        policy = record.config.versions if record.config is not None else VersionPolicy()
        config: dict[str, Any] = {
            "name": model,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": _version_policy(policy),
            "max_batch_size": batch,
            "input": [tensor(s) for s in endpoint.session.inputs],
            "output": [tensor(s) for s in endpoint.session.outputs],
            "parameters": {"mlserve_version": {"string_value": endpoint.version}},
        }
        if batch:
            delay_us = round(float(getattr(runner, "delay", 0.0)) * 1e6)
            # mlserve runs whatever has gathered when the delay ends: no preferred sizes.
            config["dynamic_batching"] = {"max_queue_delay_microseconds": delay_us}
        return config

    def model_stats(self, model: str | None, version: int | None) -> dict[str, Any]:
        """Statistics of every ready version of every model, of one model's ready versions,
        or of one version (any known state); unknown names and versions raise (404)."""
        targets: list[tuple[str, int]] = []
        if model is None:
            for name, record in sorted(list(self.store.models.items()), key=lambda kv: kv[0]):
                targets.extend((name, v) for v in record.ready_versions())
        elif version is None:
            targets.extend((model, v) for v in self.store.record(model).ready_versions())
        else:
            self.store.version_record(model, version)
            targets.append((model, version))
        endpoints = self._merged().endpoints if targets else {}
        return {
            "model_stats": [
                _version_stats(name, v, endpoints.get(f"{name}/{v}")) for name, v in targets
            ]
        }


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.policy == "all":
        return {"all": {}}
    if policy.policy == "specific":
        return {"specific": {"versions": list(policy.specific)}}
    return {"latest": {"num_versions": policy.latest}}


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _version_stats(model: str, version: int, entry: EndpointState | None) -> dict[str, Any]:
    """One version's counters, every traffic role (shadow copies included) summed.

    Triton's fields from mlserve's counters: ``success`` is the successful requests and
    their whole time in the server, ``fail`` the others (mlserve does not time failures:
    0 ns), ``queue`` and ``compute_infer`` the successes' queue and session-run time;
    mlserve does not time input decoding and output encoding apart from the rest, so
    ``compute_input`` and ``compute_output`` count the successes with 0 ns.
    ``inference_count`` is rows inferred; ``execution_count`` is session runs (batches
    with dynamic batching, else one per successful request)."""
    ok = failed = rows = 0
    total_s = queue_s = infer_s = 0.0
    last = 0.0
    if entry is None:
        entry = EndpointState()
    for state in entry.roles.values():
        outcomes = state.outcomes
        ok += outcomes[SUCCESS]
        failed += sum(outcomes) - outcomes[SUCCESS]
        rows += state.rows
        total_s += state.duration.sum
        queue_s += state.queue.sum
        infer_s += state.inference.sum
        last = max([last, *state.last.values()])
    batch = entry.batch
    executions = sum(batch.counts) if batch is not None else ok

    def duration(count: int, seconds: float) -> dict[str, int]:
        return {"count": count, "ns": _ns(seconds)}

    return {
        "name": model,
        "version": str(version),
        "last_inference": round(last * 1e3),
        "inference_count": rows,
        "execution_count": executions,
        "inference_stats": {
            "success": duration(ok, total_s),
            "fail": duration(failed, 0.0),
            "queue": duration(ok, queue_s),
            "compute_input": duration(ok, 0.0),
            "compute_infer": duration(ok, infer_s),
            "compute_output": duration(ok, 0.0),
            "cache_hit": duration(0, 0.0),
            "cache_miss": duration(0, 0.0),
        },
        # mlserve counts batch sizes in buckets (mlserve_batch_size), not per exact size,
        # and does not time runs per size: no per-size entries to give.
        "batch_stats": [],
        "memory_usage": [],
    }
