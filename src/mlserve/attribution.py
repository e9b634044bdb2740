"""Per-row feature attributions by occlusion against the reference profile's baseline.

Owns the baseline taken from a version's reference profile (``baseline_from_profile``), the
one occlusion batch run through the version's runner (``occlusion_batch``) and the attributions
from its outputs (``attributions``), for a model whose features are one 2-D floating-point
input or one input per feature, and what a version needs, decided once at load (``plan``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .config import MonitoringConfig
from .errors import InferenceFailed, InvalidInput
from .execution.base import Runner
from .monitoring.monitor import REFERENCE_FILE
from .runtime.columns import FeatureSchema, cast_column
from .runtime.session import ModelSession
from .runtime.tensors import InputLimits, TensorSpec

__all__ = [
    "METHOD",
    "NO_PROFILE",
    "Baseline",
    "Explanation",
    "Occlusion",
    "attributions",
    "baseline_from_profile",
    "check_cost",
    "occlusion_batch",
    "plan",
]

METHOD = "occlusion"
NO_PROFILE = (
    f"explanations need a reference profile ({REFERENCE_FILE}) for the baseline; "
    "this version has none"
)
_FLOAT = frozenset({"FP16", "FP32", "FP64"})


@dataclass(frozen=True)
class Baseline:
    """The value each feature column is occluded with, and where it came from."""

    values: NDArray[Any]  # float64; an object array (floats, strings) with text features
    feature_names: tuple[str, ...]
    # Per feature: "median", "mean" (older profiles) or "mode" (categorical).
    statistics: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "source": "reference profile",
            "feature_names": list(self.feature_names),
            "statistics": list(self.statistics),
            "values": self.values.tolist(),
        }


# The baseline comes from the version's reference profile (``reference.json``): a numeric
# feature's median (its mean in profiles written before medians were stored), a categorical
# feature's most frequent level (numeric levels only: a string cannot go into a floating-point
# tensor; for a model with one input per feature, a text feature's baseline is its most
# frequent level).
def baseline_from_profile(
    profile: Mapping[str, Any], width: int | None = None, schema: FeatureSchema | None = None
) -> Baseline:
    """The baseline of a (validated) profile's features, one per input column.

    ``width`` is the input's column count (None: free, taken from the profile). With the
    ``schema`` of a multi-input model, one per feature of its table, each cast to its
    input's datatype (text levels for text inputs). Raises ``ValueError`` saying why there
    is none: a column without a feature, a feature without finite reference values, a
    categorical feature with string levels for a numeric input, a feature named unlike the
    model's input in its column.
    """
    if schema is not None:
        width = len(schema)
    entries = {int(e["column"]): e for e in profile["features"]}
    n = width if width is not None else (max(entries) + 1 if entries else 0)
    if n == 0:
        raise ValueError("the profile has no features")
    wide = sorted(c for c in entries if c >= n)
    if wide:
        raise ValueError(f"the profile has a feature for column {wide[0]}; the input has {n}")
    absent = [j for j in range(n) if j not in entries]
    if absent:
        raise ValueError(f"no feature for column(s) {absent[:10]} of the input's {n}")
    values: list[float | str] = []
    names: list[str] = []
    statistics: list[str] = []
    for j in range(n):
        e = entries[j]
        name = str(e["name"])
        if schema is not None and schema.names[j] != name:
            raise ValueError(
                f"the profile's feature {name!r} is column {j}, where the model takes "
                f"input {schema.names[j]!r}"
            )
        if e["kind"] == "numeric":
            value: float | str
            if e.get("median") is not None:
                value, statistic = float(e["median"]), "median"
            elif e.get("mean") is not None:
                value, statistic = float(e["mean"]), "mean"
            else:
                raise ValueError(f"feature {name!r} has no finite reference values")
        else:
            levels = e.get("levels") or []
            if not levels:
                raise ValueError(f"categorical feature {name!r} has no reference levels")
            top = levels[0]  # the commonest (profile.py keeps levels by count)
            text = schema is not None and schema.features[j].datatype == "BYTES"
            if isinstance(top, str) and not text:
                raise ValueError(
                    f"categorical feature {name!r} has string levels (most frequent "
                    f"{top[:32]!r}): a string cannot be fed to a numeric input as its baseline"
                )
            value, statistic = float(top) if not isinstance(top, str) else top, "mode"
        if schema is not None:  # the value the model's input takes (the one cast rule)
            try:
                cast = cast_column(name, np.array([value]), schema.features[j].datatype)
            except InvalidInput as exc:
                raise ValueError(f"baseline of {exc}") from None
            value = cast.tolist()[0]
        values.append(value)
        names.append(name)
        statistics.append(statistic)
    if schema is not None and not schema.numeric:
        array = np.empty(n, dtype=object)
        array[:] = values
    else:
        array = np.array(values, dtype=np.float64)
    return Baseline(array, tuple(names), tuple(statistics))


# For a version whose features are the columns of its one input, a 2-D floating-point tensor
# ``[rows, F]``, an explanation runs ONE batch through the version's runner: each row ``x_r``
# followed by F copies of it with feature ``j`` set to the baseline value ``b_j``, then the
# baseline itself, ``rows × (F + 1) + 1`` rows in all. A model with one input per feature
# (``runtime/columns.py``: e.g. skl2onnx's ColumnTransformer with ``[n, 1]`` inputs, text ones
# included) is explained the same way over its feature table (``FeatureSchema.table``: rows ×
# features in the profile's column order); the occlusion rows are split back into the model's
# inputs (``FeatureSchema.split``) for the one batched run.
def occlusion_batch(x: NDArray[Any], baseline: NDArray[Any]) -> NDArray[Any]:
    """The rows to run for ``x`` [rows, F]: per row, the row itself then F copies with
    feature j at ``baseline[j]`` (block ``r`` is rows ``r·(F+1) … r·(F+1)+F``); last, the
    baseline. Shape ``[rows·(F+1)+1, F]``, ``x``'s dtype."""
    rows, f = x.shape
    b = np.asarray(baseline).astype(x.dtype)
    blocks = np.empty((rows, f + 1, f), dtype=x.dtype)
    blocks[:] = x[:, None, :]
    j = np.arange(f)
    blocks[:, j + 1, j] = b  # copy j of every row gets feature j at the baseline
    return np.concatenate([blocks.reshape(rows * (f + 1), f), b[None, :]])


# For every floating-point output ``f`` (or those the request names),
#     a[r, j, ...] = f(x_r)[...] − f(x_r with x_j := b_j)[...]
# in float64, from the outputs the model computed in its own precision.
def attributions(
    y: NDArray[Any], rows: int, f: int
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[Any]]:
    """From the outputs ``y`` of ``occlusion_batch`` rows: the predictions [rows, ...]
    (the model's dtype), the attributions [rows, F, ...] (float64) and the prediction at
    the baseline [...]."""
    blocks = y[: rows * (f + 1)].reshape(rows, f + 1, *y.shape[1:])
    prediction = np.ascontiguousarray(blocks[:, 0])  # contiguous: orjson serialises it
    wide = blocks.astype(np.float64)
    return prediction, wide[:, :1] - wide[:, 1:], y[-1]


def check_cost(rows: int, f: int, limits: InputLimits) -> int:
    """The rows an explanation of ``rows`` rows runs; ``InvalidInput`` over the limits,
    saying how many rows fit."""
    needed = rows * (f + 1) + 1
    fit = max(0, min((limits.max_rows - 1) // (f + 1), (limits.max_elements // f - 1) // (f + 1)))
    if needed > limits.max_rows:
        raise InvalidInput(
            f"explaining {rows} rows of {f} features runs {rows}×({f}+1)+1 = {needed} rows "
            f"through the model, over the limit of {limits.max_rows} rows ([inputs] max_rows); "
            f"at most {fit} rows fit in one explain request",
            reason="rows",
        )
    if needed * f > limits.max_elements:
        raise InvalidInput(
            f"explaining {rows} rows of {f} features runs {needed}×{f} = {needed * f} "
            f"elements through the model, over the limit of {limits.max_elements} elements; "
            f"at most {fit} rows fit in one explain request",
            reason="size",
        )
    return needed


@dataclass(slots=True)
class Explanation:
    """An explain response document and the facts the transport puts in headers."""

    body: dict[str, Any]
    version: str
    role: str
    queue_s: float
    infer_s: float


@dataclass(frozen=True)
class Occlusion:
    """How one loaded version is explained; built at load by ``plan``."""

    input: TensorSpec  # the features' input ("features" for a multi-input model's table)
    baseline: Baseline
    outputs: tuple[TensorSpec, ...]  # the floating-point outputs, in model order
    # A multi-input model's features: rows are its feature table, split back to run.
    schema: FeatureSchema | None = None
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.outputs})

    def table(self, feeds: Mapping[str, NDArray[Any]]) -> NDArray[Any]:
        """The rows × features to explain from a request's validated feeds."""
        if self.schema is not None:
            return self.schema.table(feeds)
        return feeds[self.input.name]

    def chosen(self, parameters: Any, all_outputs: Sequence[str]) -> list[TensorSpec]:
        """The outputs to explain: ``parameters.explain_outputs`` or every float output."""
        names = parameters.get("explain_outputs") if isinstance(parameters, dict) else None
        if names is None:
            return list(self.outputs)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InvalidInput(
                "'parameters.explain_outputs' must be a non-empty list of output names",
                reason="json",
            )
        chosen: list[TensorSpec] = []
        for name in names:
            spec = self._by_name.get(name)
            if spec is None:
                if name in all_outputs:
                    raise InvalidInput(
                        f"output {name!r} cannot be explained: explanations cover the "
                        f"floating-point outputs {[s.name for s in self.outputs]}",
                        reason="name",
                    )
                raise InvalidInput(
                    f"unknown output {name[:64]!r}; the model's outputs are {list(all_outputs)}",
                    reason="name",
                )
            if spec in chosen:
                raise InvalidInput(f"output {name!r} is named more than once", reason="name")
            chosen.append(spec)
        return chosen

    async def explain(
        self,
        runner: Runner,
        x: NDArray[Any],
        outputs: Sequence[TensorSpec],
        limits: InputLimits,
    ) -> tuple[dict[str, Any], float, float]:
        """Attributions for the validated rows ``x`` (``table(feeds)``): the response's
        explanation fields, and the seconds queued and running."""
        rows, f = x.shape
        if f != len(self.baseline.values):  # only where the input's width is free
            raise InvalidInput(
                f"input {self.input.name!r} has {f} columns; the reference profile describes "
                f"{len(self.baseline.values)} features",
                reason="shape",
            )
        needed = check_cost(rows, f, limits)
        names = [s.name for s in outputs]
        batch = occlusion_batch(x, self.baseline.values)
        feeds = {self.input.name: batch} if self.schema is None else self.schema.split(batch)
        ys, queue_s, infer_s = await runner.run(feeds, names)
        explained = []
        for spec, y in zip(outputs, ys, strict=True):
            if y.ndim == 0 or y.shape[0] != needed:
                raise InferenceFailed(
                    f"output {spec.name!r} has shape {list(y.shape)} for {needed} input rows: "
                    "the model does not keep rows apart, so occlusion cannot explain it"
                )
            prediction, attribution, at_baseline = attributions(y, rows, f)
            explained.append(
                {
                    "name": spec.name,
                    "datatype": spec.datatype,
                    "shape": list(prediction.shape),
                    "prediction": prediction,
                    "baseline_prediction": at_baseline,
                    "attributions": attribution,
                }
            )
        body = {
            "method": METHOD,
            "rows_evaluated": needed,
            "baseline": self.baseline.describe(),
            "outputs": explained,
        }
        return body, queue_s, infer_s


# Everything that does not depend on the request is decided once, at load: the input, the
# baseline cast to the input's dtype, the outputs, or the reason the version cannot be
# explained, which is what an explain request for it is answered.
def plan(
    session: ModelSession,
    config: MonitoringConfig,
    profile: Mapping[str, Any] | str | None,
    schema: FeatureSchema | None = None,
) -> Occlusion | str:
    """How to explain a freshly loaded version, or why it cannot be (``profile``: the loaded
    reference profile, None without one, or the message of one that failed to load;
    ``schema``: the model's named features, derived from its inputs and the profile when
    None)."""
    if profile is None:
        return NO_PROFILE
    if isinstance(profile, str):
        return f"explanations need a valid reference profile: {profile}"
    if len(session.inputs) > 1:
        if schema is None:
            columns = sorted(profile["features"], key=lambda e: int(e["column"]))
            names = [str(e["name"]) for e in columns]
            schema = FeatureSchema.from_inputs(session.inputs, names)
        if schema is not None and not schema.single:
            return _plan_table(session, config, profile, schema)
    if len(session.inputs) != 1:
        return (
            "explanations support models with one input (the features); this model has "
            f"{[s.name for s in session.inputs]}"
        )
    spec = session.inputs[0]
    if config.features and config.features != spec.name:
        return f"[monitoring] features = {config.features!r} is not the model's input"
    if len(spec.shape) != 2 or spec.datatype not in _FLOAT or spec.shape[0] != -1:
        return (
            "explanations need the features as a floating-point input of shape [rows, "
            f"features]; input {spec.name!r} is {spec.datatype} {spec.shape_text()}"
        )
    outputs = _float_outputs(session)
    if not outputs:
        return "the model has no floating-point output with a row dimension to explain"
    try:
        baseline = baseline_from_profile(profile, spec.shape[1] if spec.shape[1] != -1 else None)
    except ValueError as exc:
        return f"explanations cannot take a baseline from {REFERENCE_FILE}: {exc}"
    return Occlusion(spec, baseline, outputs)


def _float_outputs(session: ModelSession) -> tuple[TensorSpec, ...]:
    return tuple(
        s for s in session.outputs if s.datatype in _FLOAT and s.shape and s.shape[0] == -1
    )


def _plan_table(
    session: ModelSession,
    config: MonitoringConfig,
    profile: Mapping[str, Any],
    schema: FeatureSchema,
) -> Occlusion | str:
    """``plan`` for a model with one input per feature: occlusion over its feature table."""
    if config.features:
        return (
            f"[monitoring] features = {config.features!r} names one input; explanations of a "
            "model with one input per feature cover all of them (leave it unset)"
        )
    outputs = _float_outputs(session)
    if not outputs:
        return "the model has no floating-point output with a row dimension to explain"
    try:
        baseline = baseline_from_profile(profile, schema=schema)
    except ValueError as exc:
        return f"explanations cannot take a baseline from {REFERENCE_FILE}: {exc}"
    table = TensorSpec("features", "FP64" if schema.numeric else "BYTES", (-1, len(schema)))
    return Occlusion(table, baseline, outputs, schema)
