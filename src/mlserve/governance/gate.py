"""The validation gate: ``mlserve validate`` and the check the server makes before routing.

``validate_version`` runs a registry version against an evaluation set (features, labels
and optionally a sensitive-attribute column) and the criteria of its model's
``model.toml [gate]``: quality (accuracy, ROC AUC, or MAE, RMSE), fairness across groups
(demographic parity and equalized odds differences), latency in-process (p99 at batch 1 and
at a stated batch size), golden outputs (``samples.npz``) and agreement with the stable
version. The features go to the model by name (``runtime/columns.py``): the columns of its
one input, or one input per feature (a multi-input export, text features included), named
by the version's ``reference.json`` or lineage. The report goes to ``validation.json`` in
the version directory (written atomically) together with the model's sha256 and the
criteria it was judged against. An evaluation set without labels is refused.

``gate_status`` is what the server reads at load, and again when ``validation.json`` or
``[gate]`` changes: a version passes only when its ``validation.json`` was made for this very
``model.onnx`` and passes the ``[gate]`` now in force (a change of thresholds alone is judged
from the measurements the file records). With ``require_gate = true`` a version that does
not pass serves only as a shadow.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..config import MODEL_CONFIG_FILE, GateConfig, ModelConfig, load_model_config
from ..errors import MLServeError, ModelLoadError
from ..jsonfile import read_json
from ..names import is_valid_model_name
from ..registry.layout import (
    MODEL_FILE,
    SAMPLES_FILE,
    VALIDATION_FILE,
    GateStatus,
    sha256_file,
    write_atomically,
)
from ..routing.state import ROUTING_FILE, RoutingState, read_state, state_dir_of
from ..runtime.columns import FeatureSchema
from . import quality as m

SCHEMA_VERSION = 1
_INT_KINDS = "iub"


class GateError(ValueError):
    """The validation could not run (bad data, unknown version, unusable model)."""


@dataclass
class Criterion:
    """One gate criterion: the measured value against its threshold."""

    name: str
    value: float | None
    threshold: float | None
    op: str  # ">=" or "<=" or "=="
    passed: bool
    note: str = ""


@dataclass
class GateReport:
    """The outcome of ``validate_version`` (also the content of ``validation.json``)."""

    model: str
    version: int
    passed: bool
    criteria: list[Criterion]
    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    model_sha256: str
    gate: dict[str, Any]
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    # Why validation.json was not written although asked (a failing version that serves).
    not_written: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "version": self.version,
            "passed": self.passed,
            "created_at": self.created_at,
            "mlserve_version": __version__,
            "model_sha256": self.model_sha256,
            "gate": self.gate,
            "criteria": [dataclasses.asdict(c) for c in self.criteria],
            "metrics": self.metrics,
            "evaluation": self.evaluation,
        }

    def failed(self) -> list[Criterion]:
        return [c for c in self.criteria if not c.passed]

    def table(self) -> str:
        """A readable table of the criteria and the verdict."""
        rows = [("criterion", "value", "threshold", "result")]
        for c in self.criteria:
            value = "-" if c.value is None else f"{c.value:.4g}"
            threshold = "-" if c.threshold is None else f"{c.op} {c.threshold:.4g}"
            result = ("pass" if c.passed else "FAIL") + (f" ({c.note})" if c.note else "")
            rows.append((c.name, value, threshold, result))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows
        ]
        lines.insert(1, "-" * (sum(widths) + 6 + max(len(r[3]) for r in rows)))
        judged = {c.name.removeprefix("min_").removeprefix("max_") for c in self.criteria}
        measured = [
            f"{k} {v:.4g}"
            for k, v in self.metrics.items()
            if isinstance(v, float) and k not in judged
        ]
        if measured:  # what was measured without a criterion ([gate] sets none for it)
            lines.append("measured (no criterion): " + ", ".join(measured))
        verdict = "PASSED" if self.passed else f"FAILED ({_count(len(self.failed()))})"
        lines.append(f"{self.model} v{self.version}: {verdict}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# What the server reads


def gate_criteria(gate: GateConfig) -> dict[str, Any]:
    """The parts of ``[gate]`` a validation is judged against (all but the switch)."""
    doc = dataclasses.asdict(gate)
    doc.pop("require_gate")
    return doc


def gate_status(version_dir: Path, gate: GateConfig, model_sha256: str | None = None) -> GateStatus:
    """Read ``validation.json`` of a version directory and decide whether it passes.

    Never raises: a missing, unreadable or malformed file is a gate that did not pass.
    """
    path = version_dir / VALIDATION_FILE
    if not path.is_file():
        return GateStatus(False, f"no {VALIDATION_FILE}: run `mlserve validate` on this version")
    try:
        # Size, encoding and nesting are checked before parsing (jsonfile.py).
        doc = read_json(path)
    except OSError as exc:
        return GateStatus(False, f"{VALIDATION_FILE} cannot be read: {exc.strerror or 'I/O error'}")
    except ValueError as exc:  # names the file: "validation.json is not valid JSON: …"
        return GateStatus(False, str(exc))
    try:
        criteria = _checked_criteria(doc)
    except ValueError as exc:
        return GateStatus(False, f"{VALIDATION_FILE} is unreadable or malformed: {exc}")
    failed = [c for c in criteria if not c["passed"]]
    summary = {
        "passed": doc.get("passed") is True,
        "created_at": str(doc.get("created_at")),
        "failed": [c["name"] for c in failed],
        "criteria": {
            c["name"]: {k: c.get(k) for k in ("value", "threshold", "op", "passed")}
            for c in criteria
        },
    }
    try:
        if model_sha256 is None:
            model_sha256 = sha256_file(version_dir / MODEL_FILE)
    except OSError as exc:
        return GateStatus(False, f"{MODEL_FILE} cannot be read: {exc}", summary)
    if doc.get("model_sha256") != model_sha256:
        return GateStatus(
            False,
            f"{VALIDATION_FILE} was made for a different {MODEL_FILE}: validate again",
            summary,
        )
    recorded = doc.get("gate")
    current = gate_criteria(gate)
    # Keys a later mlserve added to [gate] count at their defaults in older files.
    defaults = gate_criteria(GateConfig())
    if not isinstance(recorded, dict) or {**defaults, **recorded} != current:
        rejudged = None
        if isinstance(recorded, dict):
            rejudged = _rejudged(doc, criteria, {**defaults, **recorded}, current)
        if rejudged is None:
            return GateStatus(
                False,
                f"{VALIDATION_FILE} was judged against another [gate] than the one in "
                f"{MODEL_CONFIG_FILE}, which needs new measurements: validate again",
                summary,
            )
        criteria, failed = rejudged, [c for c in rejudged if not c["passed"]]
        summary["failed"] = [c["name"] for c in failed]
        summary["criteria"] = {
            c["name"]: {k: c.get(k) for k in ("value", "threshold", "op", "passed")}
            for c in criteria
        }
        summary["passed"] = not failed
        summary["rejudged"] = True
        if failed:
            return GateStatus(
                False,
                "fails the [gate] now in force, judged from the measurements in "
                f"{VALIDATION_FILE}: " + _describe(failed),
                summary,
            )
        return GateStatus(
            True,
            f"passes the [gate] now in force, judged from the measurements in {VALIDATION_FILE}",
            summary,
        )
    if doc.get("passed") is not True or failed:
        return GateStatus(False, "failed its validation gate: " + _describe(failed), summary)
    return GateStatus(True, "passed its validation gate", summary)


# [gate] keys that only set a threshold on a measurement validation.json records (under the
# key's name less min_/max_): a change to them alone is judged from the file, no new run.
_THRESHOLDS = {
    "min_accuracy": ">=",
    "min_roc_auc": ">=",
    "max_mae": "<=",
    "max_rmse": "<=",
    "max_demographic_parity_difference": "<=",
    "max_equalized_odds_difference": "<=",
    "max_p99_ms_batch1": "<=",
    "max_p99_ms_batch": "<=",
    "min_agreement": ">=",
}


def _rejudged(
    doc: dict[str, Any],
    criteria: list[dict[str, Any]],
    recorded: dict[str, Any],
    current: dict[str, Any],
) -> list[dict[str, Any]] | None:
    """The criteria of ``validation.json`` judged against the ``[gate]`` now in force, when
    only thresholds changed and each changed one's measurement is recorded; else None (the
    validation must run again: a new label output, latency batch size, tolerance, ...)."""
    changed = {k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k)}
    consistent = doc.get("passed") is not any(not c["passed"] for c in criteria)
    if not changed <= _THRESHOLDS.keys() or not consistent:
        return None
    metrics = doc.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    kept = [c for c in criteria if c["name"] not in changed]
    for key in sorted(changed):
        threshold = current.get(key)
        if threshold is None:
            continue  # no longer a criterion
        stem = key.removeprefix("min_").removeprefix("max_")
        value = metrics.get(stem)
        if value is None:  # min_agreement's value is on its criterion
            value = next((c.get("value") for c in criteria if c["name"] == key), None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # not measured when the file was written
        op = _THRESHOLDS[key]
        ok = value >= threshold if op == ">=" else value <= threshold
        kept.append({"name": key, "value": value, "threshold": threshold, "op": op, "passed": ok})
    return kept


def _checked_criteria(doc: Any) -> list[dict[str, Any]]:
    """The criteria of a parsed ``validation.json``, their types checked (``ValueError``)."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    criteria = doc.get("criteria")
    if not isinstance(criteria, list):
        raise ValueError("'criteria' must be a list")
    for c in criteria:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ValueError("each criterion must be an object with a string 'name'")
        if not isinstance(c.get("passed"), bool):
            raise ValueError(f"criterion {c['name'][:64]!r} needs a boolean 'passed'")
        for key in ("value", "threshold"):
            v = c.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"criterion {c['name'][:64]!r}: '{key}' must be a number")
        if not isinstance(c.get("op", ""), str) or not isinstance(c.get("note", ""), str):
            raise ValueError(f"criterion {c['name'][:64]!r}: 'op' and 'note' must be strings")
    return criteria


def _count(n: int) -> str:
    return f"{n} criterion" if n == 1 else f"{n} criteria"


def _describe(failed: list[dict[str, Any]]) -> str:
    parts = []
    for c in failed:
        value, threshold = c.get("value"), c.get("threshold")
        if value is None or threshold is None:
            parts.append(f"{c['name']} ({c.get('note') or 'not measured'})")
        else:
            parts.append(f"{c['name']} {value:.4g} (needs {c.get('op')} {threshold:.4g})")
    return "; ".join(parts) or "no passing criteria recorded"


# ----------------------------------------------------------------------------------------------
# Evaluation data


@dataclass
class Evaluation:
    """Features, labels and sensitive attribute of an evaluation set."""

    X: NDArray[Any]
    y: NDArray[Any] | None
    group: NDArray[Any] | None
    feature_names: list[str] | None
    source: dict[str, Any]


def read_evaluation(
    path: Path,
    *,
    input_key: str | None = None,
    label: str | None = None,
    group: str | None = None,
    feature_names: list[str] | None = None,
) -> Evaluation:
    """Read an evaluation set from ``.npz`` (arrays ``X``, ``y``, ``group``, or the ``_test``
    variants), ``.csv`` or ``.parquet`` (a label column ``y``/``label`` and an optional
    ``group`` column; the other columns are the features, ordered by ``feature_names``
    when given). ``X`` is float64 when every feature is a number, else an object array of
    floats and strings (text columns)."""
    from ..reference_data import read_reference

    path = Path(path)
    source: dict[str, Any] = {
        "file": path.name,
        "sha256": sha256_file(path) if path.is_file() else None,
    }
    if path.suffix.lower() == ".npz":
        if not zipfile.is_zipfile(path):
            raise GateError(f"{path} is not an .npz archive")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        x_key = _pick(arrays, input_key, ("X", "X_test", "X_eval"), "features", path)
        y_key = _pick(arrays, label, ("y", "y_test", "y_eval", "label"), "labels", path, True)
        g_key = _pick(arrays, group, ("group", "group_test", "group_eval"), "groups", path, True)
        X = arrays[x_key]
        if X.ndim != 2:
            raise GateError(f"array {x_key!r} in {path} must be 2-D (rows × features)")
        names = [str(n) for n in arrays["feature_names"]] if "feature_names" in arrays else None
        y = arrays[y_key] if y_key else None
        g = arrays[g_key] if g_key else None
    else:
        try:
            table, names_read = read_reference(path, what="the evaluation set")
        except ValueError as exc:
            raise GateError(str(exc)) from exc
        cols = {n: table[:, j] for j, n in enumerate(names_read)}
        y_key = label or next((k for k in ("y", "label") if k in cols), None)
        if label and label not in cols:
            raise GateError(f"{path} has no label column {label!r}")
        g_key = group or ("group" if "group" in cols else None)
        if group and group not in cols:
            raise GateError(f"{path} has no group column {group!r}")
        rest = [n for n in names_read if n not in (y_key, g_key)]
        if feature_names and set(feature_names) <= set(rest):
            rest = list(feature_names)
        features = [_numbers(cols[n]) for n in rest]
        if all(c.dtype.kind == "f" for c in features):
            X = np.column_stack(features) if features else np.empty((len(table), 0))
        else:  # text columns: kept as text for models with text inputs
            X = np.empty((len(table), len(features)), dtype=object)
            for j, c in enumerate(features):
                X[:, j] = c
        names = rest
        y = _labels(cols[y_key]) if y_key else None
        g = cols[g_key] if g_key else None
    if g is not None:
        g = np.asarray(g)
        if g.ndim == 2 and g.shape[1] == 1:
            g = g[:, 0]
        if g.ndim != 1:
            raise GateError(f"{path}: groups must be one value per row, got shape {g.shape}")
    for what, arr in (("labels", y), ("groups", g)):
        if arr is not None and len(arr) != len(X):
            raise GateError(f"{path}: {len(arr)} {what} for {len(X)} rows")
    if len(X) == 0:
        raise GateError(f"{path} has no rows")
    source.update(rows=len(X), labels=y is not None, groups=g is not None)
    return Evaluation(X, y, g, names, source)


def _pick(
    arrays: dict[str, NDArray[Any]],
    key: str | None,
    defaults: tuple[str, ...],
    what: str,
    path: Path,
    optional: bool = False,
) -> str | None:
    if key is not None:
        if key not in arrays:
            raise GateError(f"{path} has no array {key!r} (arrays: {', '.join(arrays)})")
        return key
    found = next((k for k in defaults if k in arrays), None)
    if found is None and not optional:
        raise GateError(f"{path} has no {what} array ({' / '.join(defaults)})")
    return found


def _numbers(col: NDArray[Any]) -> NDArray[Any]:
    """A column as float64 (None → NaN) unless it holds text."""
    if col.dtype.kind != "O":
        return col.astype(np.float64)
    try:
        return np.array(col.tolist(), dtype=np.float64)
    except (TypeError, ValueError):
        return col


def _labels(col: NDArray[Any]) -> NDArray[Any]:
    """A label column as integers when every value is integral, else floats."""
    try:
        values = col.astype(np.float64)
    except ValueError:
        shown = sorted({str(v) for v in col[:1000]})[:3]
        raise GateError(
            f"the label column holds text ({', '.join(map(repr, shown))}, ...): labels are "
            "compared with the model's predicted labels, which are numbers; encode them as the "
            "model was trained (e.g. 0 and 1)"
        ) from None
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


# ----------------------------------------------------------------------------------------------
# Running a version


def _session(version_dir: Path, config: ModelConfig, model: str, version: int) -> Any:
    from ..runtime.session import ModelSession

    try:
        return ModelSession(
            model, version, version_dir / MODEL_FILE, config.execution, config.inputs, 1 << 40
        )
    except ModelLoadError as exc:
        raise GateError(f"{model} v{version}: {exc}") from exc


def _model_feeds(
    session: Any, names: list[str] | None, ev: Evaluation, policy: str
) -> dict[str, NDArray[Any]]:
    """The model's tensors for the evaluation rows: ``X`` as the one input's columns, or
    one named column per input of a multi-input model (cast by ``policy``)."""
    if len(session.inputs) == 1:
        spec = session.inputs[0]
        width = spec.shape[1] if len(spec.shape) == 2 else None
        if isinstance(width, int) and width > 0 and ev.X.shape[1] != width:
            raise GateError(
                f"the evaluation set has {ev.X.shape[1]} feature columns; "
                f"{session.model} v{session.version} takes {width}"
            )
        try:
            X = ev.X.astype(np.float64) if ev.X.dtype.kind == "O" else ev.X
        except (TypeError, ValueError) as exc:
            raise GateError(f"feature columns must be numeric ({exc})") from exc
        return {spec.name: X.astype(spec.dtype, copy=False)}
    schema = FeatureSchema.from_inputs(session.inputs, names)
    if schema is None:
        inputs = ", ".join(f"{s.name} {s.shape_text()}" for s in session.inputs)
        raise GateError(
            "validation needs a model with one input, or one input of shape [n] or [n, 1] "
            f"per feature; this one has {inputs}"
        )
    given = ev.feature_names
    if given is None:  # an .npz without feature_names: the columns in feature order
        if ev.X.shape[1] != len(schema):
            raise GateError(
                f"the evaluation set has {ev.X.shape[1]} unnamed feature columns; the model "
                f"takes {len(schema)} ({list(schema.names)}): add feature_names"
            )
        given = list(schema.names)
    index = {n: j for j, n in enumerate(given)}
    columns = {n: _numbers(ev.X[:, index[n]]) for n in schema.names if n in index}
    try:
        return schema.feeds(columns, policy)
    except MLServeError as exc:
        raise GateError(f"the evaluation set does not fit the model: {exc}") from exc


def _rows(feeds: dict[str, NDArray[Any]], rows: slice | NDArray[Any]) -> dict[str, NDArray[Any]]:
    return {k: v[rows] for k, v in feeds.items()}


def _predict(session: Any, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """Every output on the evaluation rows, 65,536 rows per run."""
    try:
        return session.run_feeds(feeds)  # type: ignore[no-any-return]
    except MLServeError as exc:
        raise GateError(f"the model fails on the evaluation data: {exc}") from exc


def _outputs(gate: GateConfig, outputs: dict[str, NDArray[Any]]) -> tuple[str, str, str | None]:
    """(task, label output, score output)."""
    names = list(outputs)
    for key in (gate.label_output, gate.score_output):
        if key and key not in outputs:
            raise GateError(f"[gate] names output {key!r}; the model's outputs are {names}")
    label = gate.label_output or next(
        (n for n in ("label", "variable", "output_label") if n in outputs),
        next((n for n in names if outputs[n].dtype.kind in _INT_KINDS), names[0]),
    )
    task = gate.task
    if task == "auto":
        task = "classification" if outputs[label].dtype.kind in _INT_KINDS + "OSU" else "regression"
    score = None
    if task == "classification":
        score = gate.score_output or next(
            (
                n
                for n in ("probabilities", "output_probability", *names)
                if n in outputs
                and outputs[n].dtype.kind == "f"
                and outputs[n].ndim == 2
                and outputs[n].shape[1] >= 2
            ),
            None,
        )
    return task, label, score


def _latency_p99(session: Any, sample: dict[str, NDArray[Any]], batch: int, runs: int) -> float:
    """p99 in milliseconds of ``runs`` session runs on ``batch`` rows (after 5 warm-up runs)."""
    n = len(next(iter(sample.values())))
    reps = -(-batch // n)
    feed = {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch]) for k, v in sample.items()}
    names = session.output_names
    for _ in range(5):
        session.session.run(names, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.session.run(names, feed)
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 99) * 1e3)


def serving_versions(
    model_dir: Path, config: ModelConfig, state_dir: Path | None = None
) -> tuple[int, int]:
    """(stable, canary) as the routing state names them, read offline: the override or
    ``model.toml``'s routing, else the pinned stable version; 0 where none is named."""
    try:
        state = read_state(state_dir_of(model_dir.name, model_dir, state_dir) / ROUTING_FILE)
    except (OSError, ValueError):
        state = RoutingState()
    routing = state.routing(config.routing)
    stable = routing.stable or (state.pinned_stable if routing.auto_promote == "off" else 0)
    return stable, routing.canary if routing.canary_weight > 0 else 0


def _stable_version(
    model_dir: Path, config: ModelConfig, version: int, state_dir: Path | None = None
) -> int | None:
    """The version serving unpinned traffic now (the routing state's, see
    ``serving_versions``), else the highest other version (that passed its gate, when the
    gate is required)."""
    stable, _ = serving_versions(model_dir, config, state_dir)
    if stable and stable != version and (model_dir / str(stable) / MODEL_FILE).is_file():
        return stable
    candidates = sorted(
        (int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.name != "0"),
        reverse=True,
    )
    for v in candidates:
        vdir = model_dir / str(v)
        if v == version or not (vdir / MODEL_FILE).is_file():
            continue
        if not config.gate.require_gate or gate_status(vdir, config.gate).passed:
            return v
    return None


def validate_version(
    registry: Path,
    model: str,
    version: int,
    data: Path | Evaluation,
    *,
    write: bool = True,
    label: str | None = None,
    group: str | None = None,
    input_key: str | None = None,
    force: bool = False,
    state_dir: Path | None = None,
) -> GateReport:
    """Judge ``registry/model/version`` against its ``[gate]``; write ``validation.json``.

    With ``require_gate``, a failing result for a version that serves unpinned traffic (the
    stable version, or a weighted canary: ``serving_versions``) would take it out of
    service at the next scan: it is written only with ``force`` (else ``not_written`` says
    why). ``state_dir`` is the server's ``--state-dir``, where the routing state lives."""
    if not is_valid_model_name(model):
        raise GateError(f"invalid model name {model!r}")
    model_dir = Path(registry) / model
    vdir = model_dir / str(version)
    if not (vdir / MODEL_FILE).is_file():
        raise GateError(f"{model} v{version}: no {MODEL_FILE} in {vdir}")
    try:
        config = load_model_config(model_dir)
    except ValueError as exc:
        raise GateError(str(exc)) from exc
    gate = config.gate
    model_sha256 = sha256_file(vdir / MODEL_FILE)  # before the run: what was judged
    session = _session(vdir, config, model, version)
    names = _feature_names(vdir)
    ev = (
        data
        if isinstance(data, Evaluation)
        else read_evaluation(
            Path(data), input_key=input_key, label=label, group=group, feature_names=names
        )
    )
    if ev.y is None:
        raise GateError(
            f"{ev.source.get('file', 'the evaluation set')} has no labels (a y/label "
            "array or column; --label names another): the gate needs them"
        )
    feeds = _model_feeds(session, names, ev, config.inputs.cast)
    outputs = _predict(session, feeds)
    if sha256_file(vdir / MODEL_FILE) != model_sha256:
        raise GateError(f"{model} v{version}: {MODEL_FILE} changed during validation")
    task, label_out, score_out = _outputs(gate, outputs)
    y_pred = outputs[label_out].reshape(len(ev.X), -1)[:, 0]
    criteria: list[Criterion] = []
    found: dict[str, Any] = {"task": task, "label_output": label_out, "score_output": score_out}

    def judge(
        name: str, value: float | None, threshold: float | None, op: str, note: str = ""
    ) -> None:
        if value is not None:
            found[name.removeprefix("min_").removeprefix("max_")] = value
        if threshold is None:
            return
        ok = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        criteria.append(Criterion(name, value, threshold, op, ok, note))

    y = ev.y = _checked_labels(ev.y, outputs[label_out], task, len(ev.X))
    missing = "the evaluation set has no labels"
    if task == "classification":
        acc = m.accuracy(y, y_pred) if y is not None else None
        judge("min_accuracy", acc, gate.min_accuracy, ">=", "" if y is not None else missing)
        auc, note = None, "" if y is not None else missing
        if y is not None and score_out is not None:
            try:
                auc = m.roc_auc(y, outputs[score_out], gate.positive_label)
            except (ValueError, IndexError) as exc:
                note = str(exc)
        elif score_out is None:
            note = "the model has no class-score output"
        judge("min_roc_auc", auc, gate.min_roc_auc, ">=", note)
        for key in ("max_mae", "max_rmse"):
            judge(key, None, getattr(gate, key), "<=", "not a regression model")
    else:
        for key, fn in (("max_mae", m.mae), ("max_rmse", m.rmse)):
            value = fn(y, y_pred) if y is not None else None
            judge(key, value, getattr(gate, key), "<=", "" if y is not None else missing)
        for key in ("min_accuracy", "min_roc_auc"):
            judge(key, None, getattr(gate, key), ">=", "not a classification model")
    _fairness(gate, task, ev, y_pred, judge, found)
    sample = _rows(feeds, slice(0, max(1, min(len(ev.X), 1024))))
    p1 = _latency_p99(session, sample, 1, gate.latency_runs)
    judge("max_p99_ms_batch1", p1, gate.max_p99_ms_batch1, "<=")
    pb = _latency_p99(session, sample, gate.latency_batch_size, gate.latency_runs)
    found["latency_batch_size"] = gate.latency_batch_size
    judge("max_p99_ms_batch", pb, gate.max_p99_ms_batch, "<=")
    if gate.golden:
        criteria.append(_golden(session, vdir, gate.golden_tolerance))
    criteria.append(
        _agreement(model_dir, config, version, ev, outputs, task, label_out, y_pred, state_dir)
    )
    report = GateReport(
        model,
        version,
        all(c.passed for c in criteria),
        criteria,
        found,
        ev.source,
        model_sha256,
        gate_criteria(gate),
    )
    serving = serving_versions(model_dir, config, state_dir)
    if write and not report.passed and gate.require_gate and version in serving and not force:
        role = "stable" if version == serving[0] else "canary"
        report.not_written = (
            f"{VALIDATION_FILE} not written: {model} v{version} serves unpinned traffic as the "
            f"{role} version, and a failing result would take it out of service "
            "(require_gate = true). Move traffic first, or pass --force to write it anyway"
        )
    elif write:
        write_atomically(vdir / VALIDATION_FILE, json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _checked_labels(
    y: NDArray[Any] | None, predicted: NDArray[Any], task: str, n: int
) -> NDArray[Any] | None:
    """Labels as a 1-D array comparable with the model's predictions (``GateError`` if not)."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise GateError(f"labels must be one per row (shape ({n},)), got shape {y.shape}")
    if predicted.dtype.kind in "OSU":  # string class labels: compare as text
        return y.astype(str)
    if y.dtype.kind in "OSU":
        raise GateError(
            f"the labels are text but the model predicts {predicted.dtype} values: "
            "encode the labels as the model's classes"
        )
    values = y.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise GateError("the labels contain NaN or infinite values: drop those rows")
    if task == "classification":
        if not np.all(values == np.round(values)):
            raise GateError("a classifier's labels must be whole numbers")
        return values.astype(np.int64)
    return values


def _feature_names(vdir: Path) -> list[str] | None:
    """The version's feature names in column order: ``reference.json``, else the lineage's
    ``input.features``; None when neither names them."""
    try:
        path = vdir / "reference.json"
        if path.is_file():
            doc = json.loads(path.read_text())
            entries = sorted(doc["features"], key=lambda f: int(f["column"]))
            return [str(f["name"]) for f in entries]
        path = vdir / "lineage.json"
        if path.is_file():
            found = json.loads(path.read_text())["input"]["features"]
            return [str(n) for n in found] if isinstance(found, list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _fairness(
    gate: GateConfig,
    task: str,
    ev: Evaluation,
    y_pred: NDArray[Any] | None,
    judge: Any,
    found: dict[str, Any],
) -> None:
    keys = ("max_demographic_parity_difference", "max_equalized_odds_difference")
    if task != "classification" or y_pred is None:
        for key in keys:
            judge(key, None, getattr(gate, key), "<=", "fairness needs a classification model")
        return
    if ev.group is None:
        for key in keys:
            judge(key, None, getattr(gate, key), "<=", "the evaluation set has no group column")
        return
    pos = gate.positive_label
    groups = np.asarray(ev.group).astype(str)
    levels, counts = np.unique(groups, return_counts=True)
    found["group_rows"] = {str(g): int(c) for g, c in zip(levels, counts, strict=True)}
    big = int((counts >= gate.min_group_rows).sum())
    problem = None
    if big < 2:
        problem = (
            f"needs at least 2 groups of >= {gate.min_group_rows} rows (min_group_rows); "
            f"found {dict(found['group_rows'])}"
        )
    elif ev.y is not None and not np.any(ev.y == pos):
        problem = f"positive_label {pos} never occurs in the labels"
    elif ev.y is None and not np.any(y_pred == pos):
        problem = f"positive_label {pos} is never predicted and there are no labels"
    if problem is not None:
        for key in keys:
            judge(key, None, getattr(gate, key), "<=", problem)
        return
    rates = m.group_rates(y_pred, groups, pos, ev.y)
    found["groups"] = rates
    judge(
        keys[0],
        m.demographic_parity_difference(y_pred, groups, pos),
        gate.max_demographic_parity_difference,
        "<=",
    )
    if ev.y is None:
        judge(keys[1], None, gate.max_equalized_odds_difference, "<=", "no labels")
        return
    undefined = [
        g
        for g, r in rates.items()
        if r["true_positive_rate"] is None or r["false_positive_rate"] is None
    ]
    if undefined:
        note = f"groups {undefined} lack positive or negative labels: rates undefined"
        judge(keys[1], None, gate.max_equalized_odds_difference, "<=", note)
    else:
        eo = m.equalized_odds_difference(ev.y, y_pred, groups, pos)
        judge(keys[1], eo, gate.max_equalized_odds_difference, "<=")


def _golden(session: Any, vdir: Path, tolerance: float) -> Criterion:
    path = vdir / SAMPLES_FILE
    if not path.is_file():
        return Criterion(
            "golden_outputs", None, None, "==", True, f"no {SAMPLES_FILE}: not checked"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        feeds = {s.name: data[f"inputs.{s.name}"] for s in session.inputs}
        golden = {k[len("outputs.") :]: v for k, v in data.items() if k.startswith("outputs.")}
        actual = dict(
            zip(session.output_names, session.session.run(session.output_names, feeds), strict=True)
        )
    except Exception as exc:  # a bad file or a failing run: the criterion fails with why
        return Criterion("golden_outputs", None, None, "==", False, f"{SAMPLES_FILE}: {exc}")
    worst = 0.0
    for name, expected in golden.items():
        got = np.asarray(actual.get(name))
        if got.shape != expected.shape:
            return Criterion(
                "golden_outputs",
                None,
                None,
                "==",
                False,
                f"{name}: shape {got.shape} != {expected.shape}",
            )
        if expected.dtype.kind == "f":
            scale = np.maximum(np.abs(expected.astype(np.float64)), 1.0)
            err = np.abs(got - expected) / scale
            if np.any(np.isnan(got) != np.isnan(expected)):
                return Criterion("golden_outputs", None, None, "==", False, f"{name}: NaN differs")
            worst = max(worst, float(np.nanmax(err, initial=0.0)))
        elif not np.array_equal(got, expected):
            return Criterion("golden_outputs", None, None, "==", False, f"{name} differs")
    ok = worst <= tolerance
    return Criterion("golden_outputs", worst, tolerance, "<=", ok, "max relative error")


def _agreement(
    model_dir: Path,
    config: ModelConfig,
    version: int,
    ev: Evaluation,
    outputs: dict[str, NDArray[Any]],
    task: str,
    label_out: str | None,
    y_pred: NDArray[Any] | None,
    state_dir: Path | None = None,
) -> Criterion:
    gate = config.gate
    threshold = gate.min_agreement
    stable = _stable_version(model_dir, config, version, state_dir)
    if threshold is None:
        return Criterion("min_agreement", None, None, ">=", True, "not required")
    if stable is None:
        return Criterion(
            "min_agreement", None, threshold, ">=", True, "no stable version to compare with"
        )
    try:
        sdir = model_dir / str(stable)
        theirs_session = _session(sdir, config, model_dir.name, stable)
        feeds = _model_feeds(theirs_session, _feature_names(sdir), ev, config.inputs.cast)
        other = _predict(theirs_session, feeds)
    except Exception as exc:  # a stable version that cannot run: the criterion fails
        return Criterion(
            "min_agreement", None, threshold, ">=", False, f"stable v{stable} failed: {exc}"
        )
    if label_out not in other or y_pred is None:
        return Criterion(
            "min_agreement", None, threshold, ">=", False, f"v{stable} has no output {label_out!r}"
        )
    theirs = other[label_out].reshape(len(ev.X), -1)[:, 0]
    if task == "classification":
        agree = float(np.mean(theirs == y_pred))
    else:
        agree = float(
            np.mean(np.abs(theirs.astype(np.float64) - y_pred) <= gate.agreement_tolerance)
        )
    return Criterion(
        "min_agreement", agree, threshold, ">=", agree >= threshold, f"with stable v{stable}"
    )
