"""Per-version monitoring on the request path: feature and prediction windows, data quality.

A ``ModelMonitor`` is built at load from the version's reference profile
(``reference.json``) and ``model.toml [monitoring]``: one section for the model's
features and one per profiled model output. The features are the columns of its one 2-D
input, or, for a model with one input per feature (``runtime/columns.py``), the rows ×
features table of its inputs, built at flush for many requests at once. ``observe`` only
queues a request's arrays (one append); they are binned together (one kernel call per
section for many requests) when ``FLUSH_ROWS`` rows are queued, ``FLUSH_SECONDS`` after the
first, or before any read. A request of more than ``[monitoring] sample_rows`` rows queues an
unbiased sample of its rows (``ModelMonitor.sample``), and the windows and tests count those.
``state`` exports plain data that merges across workers by addition; ``report`` turns merged
state into drift statistics, alerts and data-quality figures.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from ..config import MonitoringConfig
from ..errors import ModelLoadError
from ..runtime.columns import FeatureSchema
from ..runtime.tensors import V2_TO_NUMPY, TensorSpec
from .binning import Binning
from .drift import WindowedCounts, drift_report, midranks, section_tests
from .kernel import BinCounts, RowQueue
from .profile import in_precision, profile_warnings

log = logging.getLogger("mlserve.monitoring")

REFERENCE_FILE = "reference.json"
# Binning on the event loop's thread, in batches: small enough that the request which
# triggers a flush waits tens of microseconds, large enough to amortise the kernel calls.
# (A separate thread was measured worse: the GIL hand-offs delayed the event loop.) 128
# rows cost 0.7 µs a request less than 64 at batch 1, 240 little less again.
FLUSH_ROWS = 128
FLUSH_SECONDS = 0.05
INPUTS = "inputs"
_FEEDS, _OUTPUTS = itemgetter(0), itemgetter(2)  # of a queued request
_WINDOW_ARRAYS = ("counts", "out_low", "out_high", "n_finite", "sums", "sumsq")


@dataclass
class Section:
    """One profiled tensor: the model input with the features, or one output."""

    key: str  # "inputs" or the output's name
    source: str  # the tensor's name ("features": the feature table of a multi-input model)
    is_input: bool
    binning: Binning
    window: WindowedCounts
    # Set for the feature table of a multi-input model: its queue holds the requests' feeds.
    schema: FeatureSchema | None = None
    # The tensor's dtype and row width (0: 1-D) when its rows can be copied into a buffer.
    dtype: np.dtype[Any] | None = None
    width: int = 0


OTHER_SEGMENT = "(other)"
MISSING_SEGMENT = "(missing)"
PARAMETER_PREFIX = "parameters."
_SEGMENT_LABEL_CHARS = 64
# Rows of its own traffic a segment's baseline holds before its drift is judged against it.
SEGMENT_BASELINE_ROWS = 1000


class _Segment:
    """One segment: its live window, and the baseline its drift is judged against."""

    __slots__ = ("baseline", "baseline_rows", "window")

    def __init__(self, binning: Binning, config: MonitoringConfig, clock: Any) -> None:
        self.window = WindowedCounts(
            binning,
            bucket_seconds=config.bucket_seconds,
            window_buckets=config.window_buckets,
            clock=clock,
        )
        self.baseline = binning.zeros()
        self.baseline_rows = 0


class Segments:
    """The inputs section counted per segment of the traffic (``[monitoring] segment_by``).

    A segment is the value of one feature in each row, or of one request parameter for
    every row of a request. Segments differ by nature (a region's incomes are not the
    country's), so a segment is never judged against the whole traffic's reference: its
    first ``baseline_rows`` rows become its baseline, and its window is compared with that.
    The first ``limit`` values seen get segments of their own; later ones share ``(other)``
    (counted in ``overflow_rows``); a segment whose window has emptied gives its place up (at
    most one look a bucket), so values seen once at start cannot hold the places for ever.
    """

    def __init__(
        self,
        by: str,
        column: int | None,
        binning: Binning,
        config: MonitoringConfig,
        clock: Callable[[], float],
    ) -> None:
        self.by = by
        self.column = column  # the feature's column in the inputs tensor; None: a parameter
        self.parameter = by[len(PARAMETER_PREFIX) :] if column is None else None
        self.limit = config.max_segments
        self.baseline_rows = max(SEGMENT_BASELINE_ROWS, config.min_window)
        self._binning = binning
        self._counter = binning.clone()  # counts baselines (flushes run one at a time)
        self._config = config
        self._clock = clock
        self._swept: float | None = None
        self.segments: dict[str, _Segment] = {}
        self.overflow_rows = 0

    @staticmethod
    def label(value: Any) -> str:
        """A segment's name: the value as text (whole floats without ".0"); a long one is
        cut and keeps a digest of the whole, so two long values never merge."""
        if value is None or (isinstance(value, float) and value != value):
            return MISSING_SEGMENT
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        text = str(value)
        if len(text) <= _SEGMENT_LABEL_CHARS:
            return text
        digest = hashlib.blake2s(text.encode("utf-8", "replace"), digest_size=4).hexdigest()
        return f"{text[: _SEGMENT_LABEL_CHARS - 9]}~{digest}"

    def _segment(self, key: str, rows: int, now: float) -> _Segment:
        segment = self.segments.get(key)
        if segment is not None:
            return segment
        if key != OTHER_SEGMENT and len(self.segments) >= self.limit + (
            OTHER_SEGMENT in self.segments
        ):
            self._release_idle(now)
        if key != OTHER_SEGMENT and len(self.segments) - (OTHER_SEGMENT in self.segments) >= (
            self.limit
        ):
            self.overflow_rows += rows
            return self._segment(OTHER_SEGMENT, rows, now)
        segment = self.segments[key] = _Segment(self._binning, self._config, self._clock)
        return segment

    def _release_idle(self, now: float) -> None:
        """Give up the places of segments with nothing in their window (one look a bucket)."""
        if self._swept is not None and now - self._swept < self._config.bucket_seconds:
            return
        self._swept = now
        for key in [k for k, seg in self.segments.items() if k != OTHER_SEGMENT]:
            if int(self.segments[key].window.window(now=now).counts[0].sum()) == 0:
                del self.segments[key]

    def add(self, batch: np.ndarray, keys: Sequence[Any] | None, now: float) -> None:
        """Count the rows of ``batch`` into their segments. ``keys``: one per row (a
        parameter's values); None: read the segment feature's column of ``batch``."""
        values = batch[:, self.column].tolist() if keys is None else keys
        groups: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            groups.setdefault(self.label(value), []).append(i)
        for key, rows in groups.items():
            part = batch if len(rows) == len(values) else batch[rows]
            segment = self._segment(key, len(rows), now)
            segment.window.add_batch(part, now)
            need = self.baseline_rows - segment.baseline_rows
            if need > 0:
                self._counter.count(part[:need], out=segment.baseline)
                segment.baseline_rows += min(need, len(part))

    def state(self, now: float | None) -> dict[str, Any]:
        """Per segment: the window's arrays, the baseline's counts and rows."""
        return {
            key: {
                "window": {
                    n: getattr(seg.window.window(now=now), n).tolist() for n in _WINDOW_ARRAYS
                },
                "baseline": seg.baseline.counts.tolist(),
                "baseline_rows": seg.baseline_rows,
            }
            for key, seg in list(self.segments.items())
        } | ({"(overflow)": {"rows": self.overflow_rows}} if self.overflow_rows else {})


class ModelMonitor:
    """Feature and prediction drift and data quality for one loaded version."""

    def __init__(
        self,
        sections: list[Section],
        config: MonitoringConfig,
        output_names: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        segments: Segments | None = None,
    ) -> None:
        self.sections = sections
        self.config = config
        self.segments = segments
        self.segment_error: str | None = None  # why segment_by could not be followed
        # The request parameter that names a request's segment (None: no such parameter).
        self.segment_parameter = segments.parameter if segments is not None else None
        self._clock = clock
        # Requests queued since the last flush: (feeds, names, outputs, segment, rows binned).
        self._pending: list[tuple[Any, Sequence[str], Sequence[Any], Any, int]] = []
        self._rows = 0  # rows queued
        self.flush_rows = FLUSH_ROWS
        self._mixed = False  # a queued request asked for only some outputs
        # Rows of successful requests seen, and how many of them were binned (sample_rows):
        # counted at flush from the rows queued and the rows sampling left out.
        self.rows_seen = 0
        self.rows_binned = 0
        self._unsampled = 0
        self._sample_rows = config.sample_rows
        self._random = random.Random()
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()  # guards the queue (observe vs flush)
        self._flushing = threading.Lock()  # one flush at a time
        # Where a section's arrays come from, worked out once: for inputs, the input's name
        # (None: the feature table, built from the whole feeds); for outputs, the output's
        # name and its position in a response with every output in model order.
        self._all_outputs = output_names
        position = {name: p for p, name in enumerate(output_names)}
        self._plan = [
            (s.is_input, None if s.schema is not None else s.source, position.get(s.source))
            for s in sections
        ]
        self._queue, self._queue_input = _row_queue(sections, self._plan, segments)

    @classmethod
    def build(
        cls,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        config: MonitoringConfig,
        profile: Mapping[str, Any] | None,
        output_names: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        schema: FeatureSchema | None = None,
    ) -> ModelMonitor | None:
        """The monitor for a version, or ``None`` without a profile or when disabled.

        ``output_names`` is the session's list of output names (the very object the
        service passes back when a request asks for every output). ``schema``: the model's
        named features (derived from the inputs and the profile's names when None).
        A profile that does not fit the model (unknown tensors, columns beyond the input's
        width, features named unlike the model's inputs) is a load failure:
        ``ModelLoadError`` says what does not fit.
        """
        if profile is None or not config.enabled:
            return None
        for warning in profile_warnings(profile):  # e.g. an old profile blind to a feature
            log.warning("%s: %s", REFERENCE_FILE, warning)
        entries = profile["features"]
        table = None if config.features else _table_schema(inputs, entries, schema)
        if table is not None:
            dtypes = [V2_TO_NUMPY[f.datatype] for f in table.features]
            sections = [
                cls._table_section(table, _exact(entries, dtypes, table.names), config, clock)
            ]
        else:
            source = _feature_input(inputs, config)
            width = 1 + max((int(e["column"]) for e in entries), default=0)
            exact = _exact(entries, [source.dtype] * width, [source.name])
            sections = [cls._section(INPUTS, source, True, exact, config, clock)]
        names = {s.name: s for s in outputs}
        for name, entries in profile.get("outputs", {}).items():
            spec = names.get(name)
            if spec is None:
                raise ModelLoadError(
                    f"{REFERENCE_FILE}: output {name!r} is not an output of the model "
                    f"({sorted(names)})"
                )
            sections.append(cls._section(name, spec, False, entries, config, clock))
        segments, segment_error = None, None
        if config.segment_by:
            try:
                segments = _segments(sections[0], config, clock)
            except ModelLoadError as exc:  # monitoring's mistake: the version still serves
                segment_error = str(exc)
                log.warning("segments are off for this version: %s", exc)
        monitor = cls(sections, config, output_names, clock, segments)
        monitor.segment_error = segment_error
        return monitor

    @staticmethod
    def _section(
        key: str,
        spec: TensorSpec,
        is_input: bool,
        entries: Any,
        config: MonitoringConfig,
        clock: Callable[[], float],
    ) -> Section:
        try:
            binning = Binning(entries)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{REFERENCE_FILE}: section {key!r}: {exc}") from exc
        width = spec.shape[1] if len(spec.shape) == 2 else 1
        if len(spec.shape) > 2 or (width != -1 and binning.n_columns > width):
            raise ModelLoadError(
                f"{REFERENCE_FILE}: section {key!r} needs {binning.n_columns} columns, tensor "
                f"{spec.name!r} has shape {spec.shape_text()}"
            )
        window = WindowedCounts(
            binning,
            bucket_seconds=config.bucket_seconds,
            window_buckets=config.window_buckets,
            clock=clock,
        )
        section = Section(key, spec.name, is_input, binning, window)
        if spec.datatype != "BYTES" and (len(spec.shape) == 1 or width > 0):
            section.dtype, section.width = spec.dtype, width if len(spec.shape) == 2 else 0
        return section

    @classmethod
    def _table_section(
        cls,
        schema: FeatureSchema,
        entries: Any,
        config: MonitoringConfig,
        clock: Callable[[], float],
    ) -> Section:
        """The inputs section of a multi-input model, counted on ``schema.table``."""
        names = schema.names
        for e in entries:
            column, name = e.get("column"), e.get("name")
            if isinstance(column, int) and 0 <= column < len(names) and names[column] != name:
                raise ModelLoadError(
                    f"{REFERENCE_FILE}: feature {name!r} is column {column} of the feature "
                    f"table, which is the model's input {names[column]!r} (features: "
                    f"{list(names)})"
                )
        spec = TensorSpec("features", "FP64" if schema.numeric else "BYTES", (-1, len(names)))
        section = cls._section(INPUTS, spec, True, entries, config, clock)
        section.schema = schema
        return section

    # ------------------------------------------------------------------ request path
    def observe(
        self,
        feeds: Mapping[str, np.ndarray],
        names: Sequence[str],
        outputs: Sequence[np.ndarray],
        rows: int,
        segment: Any = None,
    ) -> None:
        """Queue one request's features and predictions (``names[i]`` → ``outputs[i]``);
        ``segment``: the request's value of the segment parameter, if segmented by one.

        A request of more than ``sample_rows`` rows queues at most that many of them, the
        same rows of every tensor, each row with the same chance (``sample``)."""
        binned = rows
        if rows > self._sample_rows > 0:
            feeds, outputs, binned = self._sample(feeds, outputs, rows)
        with self._lock:
            queue = self._queue
            if names is not self._all_outputs:
                self._pending.append((feeds, names, outputs, segment, binned))
                self._mixed = True
            elif queue is None or queue.push(feeds[self._queue_input], outputs) < 0:
                self._pending.append((feeds, names, outputs, segment, binned))
            self._rows += binned
            due = self._rows >= self.flush_rows
            if not due and self._timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no event loop (a library caller): bin now
                    due = True
                else:  # one timer at a time: a flush by rows leaves it to find little to do
                    self._timer = loop.call_later(FLUSH_SECONDS, self._timed_flush)
        if due:
            self.flush()

    def sample(self, rows: int) -> slice:
        """The rows of a request of ``rows`` rows that are binned: every k-th row from a
        random start, k = ceil(rows / sample_rows), so at most ``sample_rows`` rows, each row
        taken with probability exactly 1/k whatever its place (the proportions of the rows
        binned are unbiased estimates of the request's). A slice: the arrays are not
        copied."""
        step = -(-rows // self._sample_rows)
        return slice(self._random.randrange(step), None, step)

    def _sample(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[np.ndarray], rows: int
    ) -> tuple[dict[str, np.ndarray], list[np.ndarray], int]:
        taken = self.sample(rows)
        binned = len(range(rows)[taken])
        with self._lock:
            self._unsampled += rows - binned

        def take(a: np.ndarray) -> np.ndarray:
            return a[taken] if a.ndim and a.shape[0] == rows else a

        return {k: take(v) for k, v in feeds.items()}, [take(o) for o in outputs], binned

    def _timed_flush(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Bin everything queued (one kernel call per section) into the current bucket.

        Flushes run one at a time, so a reader's flush also waits for one in progress
        on the monitoring thread and then sees every row observed before it.
        """
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
                mixed, self._mixed = self._mixed, False
                copied = (
                    self._queue.take() if self._queue is not None and self._queue.rows else None
                )
                self.rows_binned += self._rows
                self.rows_seen += self._rows + self._unsampled
                self._rows = self._unsampled = 0
            if not pending and copied is None:
                return
            now = self._clock()
            keys = None
            if self.segment_parameter is not None:
                keys = [key for _, _, _, key, n in pending for _ in range(n)]
            for i, ((is_input, source, position), section) in enumerate(
                zip(self._plan, self.sections, strict=True)
            ):
                arrays = self._gather(pending, mixed, is_input, source, position)
                if copied is not None:
                    arrays.append(copied[i])
                if not arrays:
                    continue
                if section.schema is not None:
                    batch = _table(section.schema, arrays)
                else:
                    batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
                section.window.add_batch(batch, now)
                if self.segments is not None and is_input:
                    self.segments.add(_two_d(batch), keys, now)

    def _gather(
        self,
        pending: list[tuple[Any, Sequence[str], Sequence[Any], Any, int]],
        mixed: bool,
        is_input: bool,
        source: str | None,
        position: int | None,
    ) -> list[Any]:
        """One section's arrays out of the queued requests; ``mixed``: some requests asked
        for only some outputs (else every one has every output, in model order)."""
        if is_input:
            feeds = map(_FEEDS, pending)
            return list(feeds if source is None else map(itemgetter(source), feeds))
        if not mixed:
            if position is None:
                return []
            return list(map(itemgetter(position), map(_OUTPUTS, pending)))
        every = self._all_outputs
        arrays = []
        for _, names, outputs, _, _ in pending:
            if names is every:
                if position is not None:
                    arrays.append(outputs[position])
            elif source is not None and source in names:  # some outputs: those it got
                arrays.append(outputs[list(names).index(source)])
        return arrays

    # ------------------------------------------------------------------ export
    def state(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready counts: running totals and the current window, per section."""
        self.flush()
        out: dict[str, Any] = {}
        for s in self.sections:
            b = s.binning
            total = s.window.total()
            window = s.window.window(now=now)
            vb = [b.value_bins(i) for i in range(b.n_features)]
            ref = b.reference
            ratios, references, ranks = [], [], []
            for i in range(b.n_features):
                row = _value_row(ref[i], vb[i]) if ref is not None else [0] * (vb[i] + 1)
                n = sum(row)
                ratios.append([c / n if n else 0.0 for c in row])
                references.append(row)
                ranks.append(midranks(row).tolist() if i < b.n_numeric else [])
            out[s.key] = {
                "names": list(b.names),
                "reference": references,
                "reference_midrank": ranks,
                "total": [_value_row(total.counts[i], vb[i]) for i in range(b.n_features)],
                "out_of_range": (total.out_low + total.out_high).tolist(),
                "reference_ratio": ratios,
                "window": {name: getattr(window, name).tolist() for name in _WINDOW_ARRAYS},
                "classes": {
                    b.names[b.n_numeric + j]: {
                        "levels": [_level(v) for v in levels],
                        "counts": _value_row(total.counts[b.n_numeric + j], vb[b.n_numeric + j])[
                            :-1
                        ],
                    }
                    for j, levels in enumerate(b.levels)
                }
                if not s.is_input
                else {},
            }
        result: dict[str, Any] = {
            "sections": out,
            "sampling": {"rows": self.rows_seen, "binned": self.rows_binned},
        }
        if self.segments is not None:
            result["segments"] = self.segments.state(now)
        return result

    def report(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Drift and data quality from (merged) ``state``: one report per section."""
        reports: dict[str, Any] = {}
        config = self.config
        # One family for the version: its alert is wrong with probability <= alpha per
        # window length, whichever section alerts (monitoring/drift.py).
        tests = sum(section_tests(s.binning) for s in self.sections)
        for s in self.sections:
            sec = state["sections"].get(s.key)
            if sec is None or "window" not in sec:  # only exited workers' totals
                continue
            window = _counts(sec["window"])
            drift = _judge(s.binning, window, config, tests)
            for feat in drift["features"]:
                row = s.binning.row(feat["name"])
                n = int(window.n_finite[row])
                mean = float(window.sums[row]) / n if n else None
                var = float(window.sumsq[row]) / n - mean * mean if n and mean is not None else None
                feat["window_mean"] = mean
                feat["window_std"] = max(var, 0.0) ** 0.5 if var is not None else None
            drift["section"] = s.key
            drift["tensor"] = s.source
            reports[s.key] = drift
        result = {
            "sections": reports,
            "alert": any(r["alert"] for r in reports.values()),
            "window_seconds": self.config.window_buckets * self.config.bucket_seconds,
            # Rows seen and rows binned into the windows (the tests count the binned ones).
            "sampling": {
                "sample_rows": config.sample_rows,
                **state.get("sampling", {"rows": 0, "binned": 0}),
            },
        }
        if self.segments is not None:
            result["segments"] = self._segment_reports(state.get("segments", {}))
        elif self.segment_error is not None:
            result["segments"] = {"by": self.config.segment_by, "error": self.segment_error}
        return result

    def _segment_reports(self, merged: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs section's drift per segment, each against its own baseline. One
        family for all segments: some segment's alert is false with probability <= alpha
        per window length (beside the version's own alpha)."""
        segments = self.segments
        assert segments is not None
        config, by = self.config, segments.by
        binning = self.sections[0].binning
        tests = section_tests(binning) * (segments.limit + 1)
        overflow = int(merged.get("(overflow)", {}).get("rows", 0))
        entries = _fold({k: v for k, v in merged.items() if k != "(overflow)"}, segments.limit)
        reports: dict[str, Any] = {}
        for key, entry in sorted(entries.items()):
            window = _counts(entry["window"])
            baseline_rows = int(entry["baseline_rows"])
            if baseline_rows < segments.baseline_rows:  # still learning what it looks like
                reports[key] = {
                    "alert": False,
                    "learning": True,
                    "baseline_rows": baseline_rows,
                    "window_rows": int(window.counts[0].sum()) if window.counts.size else 0,
                    "features": [],
                }
                continue
            judged = copy.copy(binning)
            judged.reference = np.asarray(entry["baseline"], dtype=np.int64)
            report = _judge(judged, window, config, tests)
            if segments.column is not None:  # within a segment, its own feature is fixed
                report["features"] = [f for f in report["features"] if f["name"] != by]
                report["alert"] = any(f["alert"] for f in report["features"])
            report["learning"] = False
            report["baseline_rows"] = baseline_rows
            reports[key] = report
        return {
            "by": segments.by,
            "baseline_rows": segments.baseline_rows,
            "overflow_rows": overflow,
            "alert": any(r["alert"] for r in reports.values()),
            "alerting": {
                k: [f["name"] for f in r["features"] if f["alert"]]
                for k, r in reports.items()
                if r["alert"]
            },
            "segments": reports,
        }


def _row_queue(
    sections: Sequence[Section],
    plan: Sequence[tuple[bool, str | None, int | None]],
    segments: Segments | None,
) -> tuple[RowQueue | None, str]:
    """Buffers a request's rows are copied into at ``observe``, so its arrays are not kept
    until the flush (keeping a flush's worth of requests' arrays alive was measured at about
    1 µs a request on the loaded machine), and the flush concatenates nothing. Only for the
    plain case: one input section then outputs, each of a fixed dtype and width, no segments;
    other requests and models queue their arrays."""
    if segments is not None or not sections or not sections[0].is_input:
        return None, ""
    if any(s.dtype is None or s.schema is not None for s in sections):
        return None, ""
    outputs = zip(sections[1:], plan[1:], strict=True)
    if any(s.is_input or position is None for s, (_, _, position) in outputs):
        return None, ""
    capacity = 4 * FLUSH_ROWS
    buffers = [
        np.zeros((capacity, s.width) if s.width else capacity, dtype=s.dtype) for s in sections
    ]
    positions = [int(position) for _, _, position in plan[1:] if position is not None]
    return RowQueue(buffers, positions), sections[0].source


def _fold(entries: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """At most ``limit`` segments and ``(other)``: workers choose their segments apart, so
    the merged state may hold more; the smallest windows fold into ``(other)``."""
    named = [k for k in entries if k != OTHER_SEGMENT]
    if len(named) <= limit:
        return dict(entries)

    def rows(key: str) -> int:
        return int(np.asarray(entries[key]["window"]["counts"], dtype=np.int64)[0].sum())

    keep = sorted(named, key=lambda k: (-rows(k), k))[:limit]
    out = {k: entries[k] for k in keep}
    folded = [entries[k] for k in entries if k not in keep]
    total: dict[str, Any] = {
        "window": {
            n: np.sum([np.asarray(e["window"][n]) for e in folded], axis=0).tolist()
            for n in _WINDOW_ARRAYS
        },
        "baseline": np.sum([np.asarray(e["baseline"]) for e in folded], axis=0).tolist(),
        "baseline_rows": sum(int(e["baseline_rows"]) for e in folded),
    }
    out[OTHER_SEGMENT] = total
    return out


def _judge(
    binning: Binning, window: BinCounts, config: MonitoringConfig, tests: int
) -> dict[str, Any]:
    """``drift_report`` under the model's ``[monitoring]`` rule, over a family of ``tests``
    tests and one evaluation per bucket, as JSON-ready data."""
    return drift_report(
        binning,
        window,
        alpha=config.alpha,
        m_min=config.min_window,
        psi_floor=config.psi_floor,
        auc_floor=config.auc_floor,
        max_rows=config.max_window_rows,
        tests=tests,
        evaluations=config.window_buckets,
    ).to_dict()


def _counts(w: Mapping[str, Any]) -> BinCounts:
    """A window exported by ``state`` as ``BinCounts``."""
    return BinCounts(
        counts=np.asarray(w["counts"], dtype=np.int64),
        out_low=np.asarray(w["out_low"], dtype=np.int64),
        out_high=np.asarray(w["out_high"], dtype=np.int64),
        n_finite=np.asarray(w["n_finite"], dtype=np.int64),
        sums=np.asarray(w["sums"], dtype=np.float64),
        sumsq=np.asarray(w["sumsq"], dtype=np.float64),
    )


def _two_d(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(-1, 1) if batch.ndim == 1 else batch


def _segments(inputs: Section, config: MonitoringConfig, clock: Callable[[], float]) -> Segments:
    """The segments of ``[monitoring] segment_by``: a feature of the inputs section, or
    ``parameters.<name>``; a name that is neither is a load failure that says so."""
    by = config.segment_by
    if by.startswith(PARAMETER_PREFIX):
        return Segments(by, None, inputs.binning, config, clock)
    binning = inputs.binning
    if by not in binning.names:
        raise ModelLoadError(
            f"[monitoring] segment_by = {by!r} is not a feature of the model (features: "
            f"{list(binning.names)}); use {PARAMETER_PREFIX}<name> for a request parameter"
        )
    row = binning.row(by)
    k = binning.n_numeric
    column = int(binning.cols[row]) if row < k else binning.cat_cols[row - k]
    return Segments(by, column, binning, config, clock)


def _table_schema(
    inputs: tuple[TensorSpec, ...], entries: Any, schema: FeatureSchema | None
) -> FeatureSchema | None:
    """The schema whose feature table the inputs section counts, or None when the features
    are the columns of one input (or the model's features are not one input each)."""
    if len(inputs) < 2:  # one input: its columns, as always
        return None
    if schema is None:
        try:
            ordered = sorted(entries, key=lambda e: int(e["column"]))
            names = [str(e["name"]) for e in ordered]
        except (KeyError, TypeError, ValueError):
            return None
        schema = FeatureSchema.from_inputs(inputs, names)
    if schema is None or schema.single:
        return None
    return schema


def _table(schema: FeatureSchema, requests: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """The feature table of many requests' feeds, in one go."""
    if len(requests) == 1:
        return schema.table(requests[0])
    inputs = {f.input for f in schema.features}
    return schema.table({name: np.concatenate([r[name] for r in requests]) for name in inputs})


def _exact(entries: Any, dtypes: list[Any], where: Sequence[str]) -> Any:
    """The profile's input features in the precision the values arrive in (``in_precision``),
    with a warning when the profile was made in a wider one."""
    exact = in_precision(entries, dtypes)
    if exact != [dict(e) for e in entries]:
        log.warning(
            "%s for %s was profiled in float64 but the model takes a narrower float: its edges "
            "and bounds are rounded at load; republish (mlserve publish, mlserve profile "
            "--model) to profile the values as the model receives them",
            REFERENCE_FILE,
            ", ".join(where),
        )
    return exact


def _feature_input(inputs: tuple[TensorSpec, ...], config: MonitoringConfig) -> TensorSpec:
    if config.features:
        for spec in inputs:
            if spec.name == config.features:
                return spec
        raise ModelLoadError(
            f"[monitoring] features = {config.features!r} is not an input of the model "
            f"({[s.name for s in inputs]})"
        )
    candidates = [s for s in inputs if len(s.shape) == 2 and s.datatype != "BYTES"]
    if len(candidates) != 1:
        raise ModelLoadError(
            f"{REFERENCE_FILE} is present but the model has {len(candidates)} 2-D numeric "
            "inputs: set [monitoring] features to the one that holds the features"
        )
    return candidates[0]


def _value_row(counts: Any, value_bins: int) -> list[int]:
    """A counts row without the padding: the value bins, then the missing bin."""
    row = [int(c) for c in counts]
    return [*row[:value_bins], row[-1]]


def _level(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
