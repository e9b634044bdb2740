"""One model version's onnxruntime session: providers, threads, IO schema, warm-up.

Sessions are built and warmed up entirely at load, within a deadline; a version is
ready only after warm-up passed (and, when ``samples.npz`` holds golden outputs,
matched them). The execution mode (inline on the event loop, or on a worker thread)
and IO binding are decided here, once, from warm-up timing. Every run of a session
can be told to stop (``terminate_runs``, for shutdown), and a run on a worker thread is
stopped at ``[execution] run_timeout_s`` (``run_bounded``; one thread watches the deadlines).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..config import ExecutionConfig, InputPolicy
from ..errors import InferenceFailed, InvalidInput, ModelLoadError, RunTimeout, ServerNotReady
from .external_data import (
    FileSignature,
    check_external_data,
    inline_external_data,
    read_external_data,
)
from .tensors import ONNX_TO_V2, InputLimits, TensorSpec

log = logging.getLogger("mlserve.runtime")

_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

try:  # onnxruntime's exception classes, translated at this boundary
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail as _OrtFail,
    )
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        InvalidArgument as _OrtInvalidArgument,
    )
except ImportError:  # pragma: no cover - layout of very old onnxruntime builds
    _OrtInvalidArgument = _OrtFail = RuntimeError


# Providers whose sessions run on a device, and onnxruntime's name for that device.
_DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}

_CPU = "CPUExecutionProvider"
# The warm-up profile read for the node provider report, at most.
PROFILE_MAX_BYTES = 16 << 20

# How long a load whose deadline passed may take to stop after its runs were told to.
STOP_GRACE_S = 1.0

# Every session of this process, so that shutdown can stop their runs.
_LIVE: weakref.WeakSet[ModelSession] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def terminate_runs() -> int:
    """Tell every run of every session in this process, in flight or to come, to stop at
    onnxruntime's next operator boundary (a ``Loop`` checks before each iteration); the
    run raises ``ServerNotReady`` (503). For shutdown. Returns how many sessions were told."""
    with _LIVE_LOCK:
        sessions = list(_LIVE)
    for session in sessions:
        session.run_options.terminate = True
    _DEADLINES.terminate_all()  # after the sessions: a run starting now sees either
    return len(sessions)


class _Run:
    """One run under a deadline: its own ``RunOptions`` (whose ``terminate`` stops only it)."""

    __slots__ = ("deadline", "expired", "options")

    def __init__(self, options: ort.RunOptions, deadline: float) -> None:
        self.options = options
        self.deadline = deadline
        self.expired = False


class _Deadlines:
    """The runs under a deadline in this process, and the one thread that stops each run
    still going at its deadline. It sleeps until the nearest deadline and is woken only by
    a run due before that; a run that ends first is simply forgotten. A run's start and end
    take no lock (a dict's item set and pop are atomic under the GIL; the watcher scans a
    copy): the watcher may stop a run that has just ended, whose options are its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._runs: dict[int, _Run] = {}
        self._wake_at = math.inf  # inf while the watcher scans: every start wakes it
        self._thread: threading.Thread | None = None

    def start(self, options: ort.RunOptions, timeout_s: float) -> _Run:
        run = _Run(options, time.monotonic() + timeout_s)
        self._runs[id(run)] = run
        if run.deadline < self._wake_at:  # read after the run is in: a scan sees one of them
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="mlserve run deadlines", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
        return run

    def end(self, run: _Run) -> None:
        self._runs.pop(id(run), None)

    def terminate_all(self) -> None:
        for run in list(self._runs.values()):
            run.options.terminate = True

    def _watch(self) -> None:
        with self._cond:
            while True:
                self._wake_at = math.inf
                now = time.monotonic()
                nearest = math.inf
                for key, run in list(self._runs.items()):
                    if run.deadline <= now:
                        run.expired = True  # before terminate: the run's thread reads it after
                        run.options.terminate = True
                        self._runs.pop(key, None)
                    else:
                        nearest = min(nearest, run.deadline)
                self._wake_at = nearest
                self._cond.wait(None if nearest == math.inf else nearest - now)


_DEADLINES = _Deadlines()


@dataclass(frozen=True)
class WarmupReport:
    """What warm-up measured: runs, median and worst seconds per call at one row."""

    source: str
    runs: int
    median_s: float
    max_s: float
    golden_checked: bool


class ModelSession:
    """A loaded, warmed-up version: call ``run`` with validated numpy feeds."""

    def __init__(
        self,
        model: str,
        version: int,
        path: Path,
        execution: ExecutionConfig,
        inputs_policy: InputPolicy,
        server_max_elements: int,
        *,
        run_options: ort.RunOptions | None = None,
        node_report: str = "off",
    ) -> None:
        """``run_options`` go with every run (setting its ``terminate`` stops them).
        ``node_report`` (``describe()["node_providers"]``): "on" profiles the first warm-up
        run to learn which execution provider ran each node; "auto" does so only when the
        session has a provider besides the CPU's (with the CPU provider alone, every node
        runs on it, and a profile of a ``Loop`` can grow by the million events)."""
        self.model = model
        self.version = version
        self.path = path
        self.execution = execution
        self.run_options = run_options if run_options is not None else ort.RunOptions()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self.requested_providers = tuple(execution.providers)
        providers, self.provider_note = choose_providers(execution.providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = execution.intra_op_threads
        options.inter_op_num_threads = execution.inter_op_threads
        options.graph_optimization_level = _OPT_LEVELS[execution.graph_optimization]
        options.log_severity_level = 4  # failures are translated and logged by us
        self._profile_dir: str | None = None
        self.node_providers: dict[str, dict[str, Any]] | None = None
        if node_report == "on" or (node_report == "auto" and providers != [_CPU]):
            self._profile_dir = tempfile.mkdtemp(prefix="mlserve-profile-")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self._profile_dir) / "warmup")
        # The external data files the model names, as read (location, signature): the
        # registry watches them and fingerprints the version with them.
        self.external_files: tuple[tuple[str, FileSignature], ...] = ()
        source: str | bytes = str(path)
        try:
            # Checked before onnxruntime opens any file the model names, then read into
            # memory: the main graph's initializers are handed over from memory (copied
            # at session creation), every other external tensor is written into the model
            # (onnxruntime would map it from its file, and a file truncated under a
            # mapping kills the process).
            locations = check_external_data(path)
            if locations:
                files = read_external_data(path, locations)
                options.add_external_initializers_from_files_in_memory(
                    [f.location for f in files],
                    [f.data for f in files],
                    [len(f.data) for f in files],
                )
                self.external_files = tuple((f.location, f.signature) for f in files)
                source = inline_external_data(
                    path.read_bytes(), {f.location: f.data for f in files}
                )
        except OSError as exc:
            self._end_profile()
            raise ModelLoadError(f"{path.name} cannot be read: {exc.strerror}") from None
        except ModelLoadError:
            self._end_profile()
            raise
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated classes here
            self._end_profile()
            # Its messages name absolute paths: make them relative before cutting them short.
            text = str(exc)
            for directory in {str(path.parent.resolve()), str(path.parent)}:
                text = text.replace(directory, f"{model}/{version}")
            raise ModelLoadError(
                f"onnxruntime could not load the model: {_short(RuntimeError(text))}"
            ) from exc
        self.providers = tuple(self.session.get_providers())
        if self.providers == (_CPU,) and node_report != "off" and self._profile_dir is None:
            self.node_providers = {_CPU: {"nodes": "all"}}
        # A provider this build has can still fail to start (no driver, missing CUDA
        # libraries): onnxruntime then runs on the next one without raising. Say so.
        dropped = [p for p in providers if p not in self.providers]
        if dropped:
            note = (
                f"{', '.join(dropped)} could not be initialised (driver or libraries missing?); "
                f"running on {', '.join(self.providers)}"
            )
            log.warning("%s v%s: %s", model, version, note)
            self.provider_note = f"{self.provider_note}; {note}" if self.provider_note else note
        try:
            self.inputs = tuple(_spec(arg, "input") for arg in self.session.get_inputs())
            self.outputs = tuple(_spec(arg, "output") for arg in self.session.get_outputs())
        except ModelLoadError:
            self._end_profile()
            raise
        self.input_specs = {s.name: s for s in self.inputs}
        self.output_names = [s.name for s in self.outputs]
        self.output_set = frozenset(self.output_names)
        max_elements = inputs_policy.max_elements or server_max_elements
        self.limits = InputLimits(
            max_elements=min(max_elements, server_max_elements),
            max_rows=inputs_policy.max_rows,
            allow_nan=inputs_policy.allow_nan,
            cast=inputs_policy.cast,
        )
        # IO binding: inputs bound from host memory, outputs allocated on the provider's
        # device and copied back once, instead of onnxruntime's per-run feed handling.
        # "auto" times both ways at warm-up and keeps the faster (until then: bound on a
        # GPU provider only).
        gpu = _DEVICES.get(self.providers[0])
        self.binding_device = gpu or "cpu"
        setting = execution.io_binding
        self.io_device: str | None = (
            self.binding_device if setting == "on" else gpu if setting == "auto" else None
        )
        # What warm-up timed: median µs per one-row run bound and plain (auto only).
        self.binding_timing: dict[str, float] | None = None
        self.binding_unusable: str | None = None  # why a bound run failed at warm-up
        self.binding_fallbacks = 0  # bound runs that failed and were rerun unbound
        self.inline = True
        self.warmup: WarmupReport | None = None
        # Facts decided at load that users should see in the metadata (e.g. batching off).
        self.notes: list[str] = []

    def run(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Run the session; onnxruntime failures become ``InvalidInput``/``InferenceFailed``,
        a run stopped for shutdown ``ServerNotReady``. No deadline (see ``run_bounded``)."""
        return self._run(feeds, output_names or self.output_names, self.run_options)

    def run_bounded(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """``run``, stopped at ``[execution] run_timeout_s`` (``RunTimeout``), for runs on a
        worker thread: a runaway run would keep its thread from every other model. Each run
        has its own ``RunOptions`` (creating one costs less than a microsecond)."""
        limit = self.execution.run_timeout_s
        if not limit:
            return self.run(feeds, output_names)
        options = ort.RunOptions()
        watched = _DEADLINES.start(options, limit)
        try:
            if self.run_options.terminate:  # after start: terminate_runs reaches it either way
                options.terminate = True
            return self._run(feeds, output_names or self.output_names, options)
        except InferenceFailed as exc:
            if watched.expired:
                raise RunTimeout(
                    f"the run exceeded [execution] run_timeout_s = {limit:g} s and was stopped; "
                    "send fewer rows, or raise run_timeout_s in the model's model.toml"
                ) from exc
            raise
        finally:
            _DEADLINES.end(watched)

    def _run(
        self, feeds: dict[str, np.ndarray], names: Sequence[str], options: ort.RunOptions
    ) -> list[np.ndarray]:
        try:
            if self.io_device is not None:
                try:
                    return self._run_bound(feeds, names, options)
                except Exception:
                    if options.terminate:
                        raise  # stopped, not a binding problem: no unbound rerun
                    # Bound runs report every failure as a generic RuntimeError; rerun
                    # unbound (failures only) so a bad input is still a 400, not a 500.
                    self.binding_fallbacks += 1
            return self.session.run(names, feeds, options)  # type: ignore[no-any-return]
        except Exception as exc:
            if self.run_options.terminate:
                raise ServerNotReady(
                    "the server is shutting down: this run was stopped at the end of the "
                    "drain; retry (another instance serves it)"
                ) from exc
            if isinstance(exc, _OrtInvalidArgument) and not options.terminate:
                raise InvalidInput(
                    f"the model rejected the input: {_short(exc)}", reason="runtime"
                ) from exc
            raise InferenceFailed(f"inference failed in onnxruntime: {_short(exc)}") from exc

    def run_feeds(
        self, feeds: Mapping[str, np.ndarray], chunk: int = 65536
    ) -> dict[str, np.ndarray]:
        """Every output on the rows of ``feeds`` (one row per row of each input), ``chunk``
        rows at a time (offline use: publishing, profiling, validation). Errors as ``run``."""
        parts: dict[str, list[np.ndarray]] = {n: [] for n in self.output_names}
        rows = len(next(iter(feeds.values())))
        for start in range(0, rows, chunk):
            values = self.run({k: v[start : start + chunk] for k, v in feeds.items()})
            for n, v in zip(self.output_names, values, strict=True):
                if np.ndim(v) == 0:
                    raise InferenceFailed(f"output {n!r} is a scalar, not one value per row")
                parts[n].append(np.asarray(v))
        return {n: np.concatenate(p) for n, p in parts.items()}

    def _run_bound(
        self,
        feeds: dict[str, np.ndarray],
        names: Sequence[str],
        options: ort.RunOptions | None = None,
    ) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in names:
            binding.bind_output(name, self.io_device)
        self.session.run_with_iobinding(binding, options or self.run_options)
        return binding.copy_outputs_to_cpu()  # type: ignore[no-any-return]

    def warm_up(self, samples: Path | None) -> WarmupReport:
        """Run the model a few times; check golden outputs when the samples hold them.

        Raises ``ModelLoadError`` when a run fails or golden outputs differ.
        """
        try:
            return self._warm_up(samples)
        finally:
            self._end_profile()

    def _warm_up(self, samples: Path | None) -> WarmupReport:
        feeds, golden, source = self._warmup_feeds(samples)
        if self.execution.io_binding != "off":  # binding that fails here is switched off
            try:
                self.io_device = self.binding_device
                self._run_bound(feeds, self.output_names)
            except Exception as exc:
                if self.run_options.terminate:
                    raise ModelLoadError(f"warm-up stopped: {_short(exc)}") from exc
                self.io_device = None
                self.binding_unusable = f"a bound run failed at warm-up ({_short(exc)})"
                if self.execution.io_binding == "on":  # asked for: say so
                    self.notes.append(f"io_binding off: {self.binding_unusable}")
                    log.warning("%s v%s: %s", self.model, self.version, self.notes[-1])
        runs = max(1, self.execution.warmup_runs)
        outputs: list[np.ndarray] = []
        try:
            for _ in range(runs):
                outputs = self.run(feeds)
                self._end_profile()  # one profiled run tells the providers; no more cost
        except Exception as exc:
            raise ModelLoadError(f"warm-up failed on {source} inputs: {_short(exc)}") from exc
        for name, value in zip(self.output_names, outputs, strict=True):
            expected = golden.get(name)
            if expected is None:
                continue
            if not _close(np.asarray(value), expected):
                raise ModelLoadError(
                    f"warm-up output {name!r} differs from the golden output in samples.npz"
                )
        # Timing at one row decides the mode (what runs on the event loop must be short)
        # and, with io_binding = "auto", whether runs are bound.
        single = {
            s.name: feeds[s.name][:1] if s.shape and s.shape[0] == -1 else feeds[s.name]
            for s in self.inputs
        }
        try:
            one_row = self._time_one_row(single, runs)
        except Exception as exc:
            raise ModelLoadError(f"warm-up failed on {source} inputs: {_short(exc)}") from exc
        median = float(np.median(one_row))
        mode = self.execution.mode
        self.inline = mode == "inline" or (
            mode == "auto" and median * 1e6 <= self.execution.inline_threshold_us
        )
        self.warmup = WarmupReport(source, runs, median, float(max(one_row)), bool(golden))
        return self.warmup

    def _time_one_row(self, single: dict[str, np.ndarray], runs: int) -> list[float]:
        """Seconds per one-row run, ``runs`` times, on the path requests will take. With
        ``io_binding = "auto"`` (and binding working), bound and plain runs alternate and
        the faster median is kept."""
        if self.execution.io_binding != "auto" or self.io_device is None:
            once = []
            for _ in range(runs):
                start = time.perf_counter()
                self.run(single)
                once.append(time.perf_counter() - start)
            return once
        timings: dict[bool, list[float]] = {True: [], False: []}
        for i in range(2 * runs):
            bind = i % 4 in (0, 3)  # bound, plain, plain, bound, …: neither always first
            start = time.perf_counter()
            if bind:
                self._run_bound(single, self.output_names)
            else:
                self.session.run(self.output_names, single, self.run_options)
            timings[bind].append(time.perf_counter() - start)
        bound, plain = timings[True], timings[False]
        bound_s, plain_s = float(np.median(bound)), float(np.median(plain))
        self.binding_timing = {"bound_us": bound_s * 1e6, "plain_us": plain_s * 1e6}
        if plain_s <= bound_s:
            self.io_device = None
            return plain
        return bound

    def _end_profile(self) -> None:
        """End warm-up profiling (once): which provider ran each node, then delete the file."""
        if self._profile_dir is None:
            return
        directory, self._profile_dir = self._profile_dir, None
        try:
            if hasattr(self, "session"):
                path = Path(self.session.end_profiling())
                size = path.stat().st_size
                if size > PROFILE_MAX_BYTES:
                    raise ValueError(f"its profile holds {size >> 20} MiB (control flow?)")
                self.node_providers = _node_providers(path)
        except Exception as exc:  # the report is informative: never fail a load for it
            log.warning("%s v%s: no node provider report (%s)", self.model, self.version, exc)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _warmup_feeds(
        self, samples: Path | None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
        """Warm-up inputs (and golden outputs): from ``samples.npz`` when there is one,
        else generated from the declared shapes (free dimensions at 1). Neither holds more
        elements per input than a request may (``limits.max_elements``): samples are cut to
        the rows that fit, and an input whose fixed dimensions alone are over the limit
        fails the version (no request could ever be served; warm-up would allocate it)."""
        limit = self.limits.max_elements
        for spec in self.inputs:
            at_one_row = math.prod(1 if d == -1 else d for d in spec.shape)
            if at_one_row > limit:
                raise ModelLoadError(
                    f"input {spec.name!r} declares the shape {list(spec.shape)}: "
                    f"{at_one_row} elements at one row, over the element limit {limit} "
                    "(--max-elements, [inputs] max_elements): no request could be served, "
                    "and warm-up does not allocate it"
                )
        if samples is None or not samples.is_file():
            return {spec.name: _generated(spec) for spec in self.inputs}, {}, "generated"
        wanted = [f"inputs.{s.name}" for s in self.inputs]
        wanted += [f"outputs.{name}" for name in self.output_names]
        data = read_samples(samples, wanted)
        feeds = {}
        for spec in self.inputs:
            value = data.get(f"inputs.{spec.name}")
            if value is None:
                raise ModelLoadError(f"samples.npz has no 'inputs.{spec.name}'")
            if spec.datatype == "BYTES":
                value = value.astype(object)
            try:
                feeds[spec.name] = value.astype(spec.dtype, copy=False)
            except (TypeError, ValueError) as exc:
                raise ModelLoadError(
                    f"samples.npz: 'inputs.{spec.name}' cannot be cast to {spec.datatype}: "
                    f"{_short(exc)}"
                ) from exc
        golden = {k[len("outputs.") :]: v for k, v in data.items() if k.startswith("outputs.")}
        feeds, golden = self._fit_rows(feeds, golden, limit)
        return feeds, golden, "samples.npz"

    def _fit_rows(
        self, feeds: dict[str, np.ndarray], golden: dict[str, np.ndarray], limit: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The samples' first rows that keep every input within ``limit`` elements (and the
        golden outputs' same rows); all of them when they fit."""
        rows = None
        for spec in self.inputs:
            value = feeds[spec.name]
            if value.size <= limit:
                continue
            if not (spec.shape and spec.shape[0] == -1 and value.ndim and len(value)):
                raise ModelLoadError(
                    f"samples.npz: 'inputs.{spec.name}' holds {value.size} elements, over the "
                    f"element limit {limit} (--max-elements, [inputs] max_elements)"
                )
            per_row = value.size // len(value)
            if per_row > limit:
                raise ModelLoadError(
                    f"samples.npz: one row of 'inputs.{spec.name}' holds {per_row} elements, "
                    f"over the element limit {limit} (--max-elements, [inputs] max_elements)"
                )
            rows = min(rows or len(value), limit // per_row)
        if rows is None:
            return feeds, golden
        total = len(next(v for v in feeds.values() if v.ndim))
        cut = {k: v[:rows] if v.ndim and len(v) == total else v for k, v in feeds.items()}
        kept = {k: v[:rows] if v.ndim and len(v) == total else v for k, v in golden.items()}
        self.notes.append(
            f"warm-up on the first {rows} of the {total} samples.npz rows: more would exceed "
            f"the element limit {limit}"
        )
        return cut, kept

    def _binding_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "setting": self.execution.io_binding,
            "chosen": "on" if self.io_device is not None else "off",
            "device": self.binding_device,
        }
        if self.binding_timing is not None:
            info.update({k: round(v, 1) for k, v in self.binding_timing.items()})
        if self.binding_unusable is not None:
            info["unusable"] = self.binding_unusable
        return info

    def describe(self) -> dict[str, Any]:
        """Runtime facts for model metadata ``parameters``."""
        info: dict[str, Any] = {
            "providers": list(self.providers),
            "requested_providers": list(self.requested_providers),
            "execution_mode": "inline" if self.inline else "thread",
            "io_binding": self._binding_info(),
        }
        if self.node_providers is not None:
            info["node_providers"] = self.node_providers
        if self.binding_fallbacks:
            info["io_binding_fallbacks"] = self.binding_fallbacks
        if self.provider_note:
            info["provider_note"] = self.provider_note
        if self.notes:
            info["notes"] = list(self.notes)
        if self.warmup is not None:
            info["warmup"] = {
                "source": self.warmup.source,
                "runs": self.warmup.runs,
                "median_us": round(self.warmup.median_s * 1e6, 1),
                "golden_checked": self.warmup.golden_checked,
            }
        return info


def choose_providers(requested: Sequence[str]) -> tuple[list[str], str | None]:
    """Keep the requested providers that this onnxruntime build has; CPU is always last.

    Returns the list and a note describing any fallback (also logged as a warning).
    """
    available = set(ort.get_available_providers())
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    note = None
    if missing:
        note = (
            f"{', '.join(missing)} not available in this onnxruntime build "
            f"(available: {', '.join(sorted(available))}); falling back to "
            f"{', '.join(chosen)}"
        )
        log.warning(note)
    return chosen, note


def load_version(
    model: str,
    version: int,
    version_dir: Path,
    execution: ExecutionConfig,
    inputs_policy: InputPolicy,
    server_max_elements: int,
) -> ModelSession:
    """Build and warm up ``version_dir/model.onnx`` within ``execution.load_timeout_s``;
    raises ``ModelLoadError`` with the reason.

    The work runs on its own thread, so that the caller is free at the deadline whatever
    onnxruntime does. At the deadline the warm-up's runs are told to stop (a ``Loop``
    stops before its next iteration); what onnxruntime cannot stop (graph optimisation at
    session creation, one long operator) is left to end on its own thread, and the
    version is failed either way.
    """
    run_options = ort.RunOptions()
    outcome: list[ModelSession | BaseException] = []

    def build() -> None:
        try:
            session = ModelSession(
                model,
                version,
                version_dir / "model.onnx",
                execution,
                inputs_policy,
                server_max_elements,
                run_options=run_options,
                node_report="auto",
            )
            session.warm_up(version_dir / "samples.npz")
            outcome.append(session)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=build, name=f"load {model} v{version}", daemon=True)
    worker.start()
    worker.join(execution.load_timeout_s)
    if worker.is_alive():
        run_options.terminate = True
        worker.join(STOP_GRACE_S)
        limit = f"{execution.load_timeout_s:g} s"
        if worker.is_alive():
            log.error(
                "%s v%s: onnxruntime did not stop %g s after the load deadline (session "
                "creation or one long operator): its thread is left to finish",
                model,
                version,
                STOP_GRACE_S,
            )
            stopped = (
                "onnxruntime could not stop it (session creation or a single long operator "
                "still runs); it is abandoned"
            )
        else:
            stopped = "its runs were stopped"
        raise ModelLoadError(
            f"warm-up exceeded {limit} (session creation and warm-up runs; raise "
            f"[execution] load_timeout_s if this model needs longer): {stopped}"
        )
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    session, report = result, result.warmup
    assert report is not None  # set by warm_up
    log.info(
        "loaded %s v%s on %s: %s warm-up, %.1f µs at one row, %s mode",
        model,
        version,
        session.providers[0],
        report.source,
        report.median_s * 1e6,
        "inline" if session.inline else "thread",
    )
    return session


# samples.npz: the arrays warm-up reads, uncompressed, in all (each member's size is taken
# from the zip directory before it is read), and the archive itself.
SAMPLES_MAX_BYTES = 256 << 20


def read_samples(
    path: Path, wanted: Sequence[str], max_bytes: int = SAMPLES_MAX_BYTES
) -> dict[str, np.ndarray]:
    """The arrays of ``samples.npz`` named in ``wanted`` (those present; nothing else is
    read), without pickles. Each member's uncompressed size comes from the zip directory and
    its .npy header is checked against it before any data is inflated: a member declaring
    more than it holds, or the wanted members together over ``max_bytes``, fail the version
    (``ModelLoadError`` naming the member) instead of allocating it."""
    mib = 1 << 20
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ModelLoadError(
                f"samples.npz is {size / mib:.1f} MiB, over the limit of {max_bytes // mib} MiB"
            )
        out: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            total = 0
            for key in wanted:
                info = members.get(key + ".npy")
                if info is None:
                    continue
                total += info.file_size
                if total > max_bytes:
                    raise ModelLoadError(
                        f"samples.npz: '{key}' holds {info.file_size / mib:.1f} MiB "
                        f"uncompressed; the arrays warm-up reads may hold {max_bytes // mib} "
                        "MiB in all (not read)"
                    )
                with archive.open(info) as fh:
                    needed = _npy_bytes(fh, key)
                if needed > info.file_size:
                    raise ModelLoadError(
                        f"samples.npz: '{key}' declares {needed} bytes of data but holds "
                        f"{info.file_size} in all"
                    )
                with archive.open(info) as fh:
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False)
        return out
    except ModelLoadError:
        raise
    except Exception as exc:  # a bad zip, a bad .npy, a CRC error, a truncated member, …
        raise ModelLoadError(f"samples.npz could not be read: {_short(exc)}") from exc


def _npy_bytes(fh: Any, key: str) -> int:
    """The data size a .npy header declares (read from its first bytes only)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ModelLoadError(f"samples.npz: '{key}' is a .npy of version {version}: 1.0 or 2.0")
    if dtype.hasobject:
        raise ModelLoadError(f"samples.npz: '{key}' holds Python objects (pickles are refused)")
    return math.prod(shape) * dtype.itemsize


def _node_providers(profile: Path) -> dict[str, dict[str, Any]]:
    """Which execution provider ran each node, from an onnxruntime profile: per provider,
    the number of nodes and their operator types."""
    events = json.loads(profile.read_bytes())
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") if isinstance(event, dict) else None
        if event.get("cat") == "Node" and isinstance(args, dict) and "provider" in args:
            name = str(event.get("name", "")).removesuffix("_kernel_time")
            nodes[name] = (str(args["provider"]), str(args.get("op_name", "")))
    report: dict[str, dict[str, Any]] = {}
    for provider, op in nodes.values():
        entry = report.setdefault(provider, {"nodes": 0, "ops": set()})
        entry["nodes"] += 1
        entry["ops"].add(op)
    return {p: {"nodes": e["nodes"], "ops": sorted(e["ops"])} for p, e in sorted(report.items())}


def _spec(arg: Any, kind: str) -> TensorSpec:
    datatype = ONNX_TO_V2.get(arg.type)
    if datatype is None:
        hint = (
            " (for scikit-learn classifiers export with zipmap=False)" if "map" in arg.type else ""
        )
        raise ModelLoadError(
            f"{kind} {arg.name!r} has type {arg.type}: only tensors of V2 "
            f"datatypes are supported{hint}"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _generated(spec: TensorSpec) -> np.ndarray:
    shape = tuple(1 if d == -1 else d for d in spec.shape)
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    rng = np.random.default_rng(0)
    if spec.dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return np.zeros(shape, dtype=np.bool_)
    return np.zeros(shape, dtype=spec.dtype)


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    if actual.shape != expected.shape:
        return False
    if actual.dtype.kind == "f" or expected.dtype.kind == "f":
        return bool(np.allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(actual, expected))


def _short(exc: BaseException) -> str:
    """onnxruntime messages start with a bracketed code and may run long: keep the gist."""
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(":", 3)[-1].strip()
    # Kernel failures name onnxruntime's source file and C++ function
    # ("/onnxruntime_src/…/reshape_helper.h:61 onnxruntime::ReshapeHelper::ReshapeHelper(…)
    # <the check that failed>"): no server paths in an answer, keep the check.
    text = _ORT_SOURCE.sub("", text)
    return text.splitlines()[0][:300]


# "Status Message: " then a source path with line, a C++ signature, and the message.
_ORT_SOURCE = re.compile(r"(?:/\S+\.(?:h|cc|cpp|hpp):\d+ )(?:[\w:~<>]+\(.*?\)(?: const)? )?")
