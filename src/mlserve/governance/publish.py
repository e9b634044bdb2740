"""``mlserve publish``: a fitted estimator or an ONNX file becomes the next registry version.

From a scikit-learn estimator (an object, or a joblib/pickle file loaded only from the path
the caller names — unpickling runs code, so only publish files you trust) or an existing
ONNX file, plus reference data: the model, its drift profile, golden samples and lineage,
checked and written as one new version that readers never see half-written (``publish``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..errors import MLServeError, ModelLoadError
from ..monitoring.profile import build_profile, save_profile
from ..names import is_valid_model_name
from ..registry.layout import (
    LINEAGE_FILE,
    MODEL_FILE,
    SAMPLES_FILE,
    fsync_dir,
)

__all__ = ["PublishError", "Published", "publish"]

N_SAMPLES = 32  # golden rows in samples.npz
MAX_CHECK_ROWS = 10_000  # reference rows compared between onnxruntime and the estimator
LOCK_FILE = ".publish.lock"
_LIBRARIES = ("numpy", "onnxruntime", "onnx", "skl2onnx", "scikit-learn")


class PublishError(ValueError):
    """Publishing was refused; the message says why (nothing was written)."""


@dataclass(frozen=True)
class Published:
    """Where a published version went and what its lineage says."""

    model: str
    version: int
    path: Path
    lineage: dict[str, Any]
    max_error: float | None


def publish(
    registry: str | os.PathLike[str],
    model: str,
    *,
    reference: Any,
    estimator: Any = None,
    onnx_model: str | os.PathLike[str] | None = None,
    input_name: str = "X",
    input_key: str | None = None,
    feature_names: Sequence[str] | None = None,
    categorical: Collection[str] = (),
    tolerance: float = 1e-4,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    parent: int | None = None,
    code_dir: str | os.PathLike[str] | None = None,
    target_opset: int = 17,
) -> Published:
    """Publish the next version of ``model`` in ``registry``.

    From the estimator or ONNX file and the reference data (``.npz``, ``.csv``, ``.parquet``, a
    pandas DataFrame, a dict of columns, or a 2-D array with ``feature_names``):

    1. match the data's columns to the features the estimator was fitted on
       (``feature_names_in_``) or the model's named inputs, by name (reordering; missing and
       unknown columns are refused, named), and cast them to the model's input datatypes (the
       rule requests go through), so the profile holds the values the server will see;
    2. convert with skl2onnx (plain tensor outputs: no ZipMap) unless an ONNX file is given:
       one 2-D float input ``X``, or, when the estimator selects columns by name
       (``ColumnTransformer``), one ``[n, 1]`` input per column named as the column
       (float for numbers, string for text). A converter failure is a short ``PublishError``
       naming the step and the converter's own last message;
    3. check that onnxruntime's outputs equal the estimator's on the reference data within
       ``tolerance`` (refuse otherwise);
    4. write ``model.onnx``, ``reference.json`` (the drift profile of the data and of the
       model's outputs on it), ``samples.npz`` (golden inputs and outputs) and
       ``lineage.json`` (hashes, code revision, parent version, metrics, tags, library
       versions) into a hidden temporary directory of the model, then rename it to the next
       version number under a lock file, so readers never see half a version and two
       publishers never take the same number.

    ``reference`` is a path (.npz/.csv/.parquet), a pandas DataFrame, a mapping of column
    name → values, or a 2-D array (named by ``feature_names``, else by the estimator's
    ``feature_names_in_`` when the count matches). ``estimator`` is a fitted scikit-learn
    object or a path to a joblib/pickle file.
    With ``onnx_model`` given too, the file is used as is and compared with the estimator;
    alone, it is checked to run on the reference data. ``parent`` defaults to the highest
    existing version. Raises ``PublishError`` and leaves the registry untouched on refusal.
    """
    from ..reference_data import match_columns, model_feeds, read_data

    if not is_valid_model_name(model):
        raise PublishError(
            f"invalid model name {model!r}: letters, digits, '_', '.', '-' (not starting with '.')"
        )
    if estimator is None and onnx_model is None:
        raise PublishError("publish needs an estimator or an ONNX model")
    if not tolerance >= 0:
        raise PublishError(f"tolerance must be >= 0, got {tolerance}")
    if parent is not None and parent < 1:
        raise PublishError(f"parent must be a version (>= 1), got {parent}")
    for key, number in (metrics or {}).items():
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise PublishError(f"metric {key!r} must be a finite number, got {number!r}")
    path_given = isinstance(reference, (str, os.PathLike))
    try:
        ref = read_data(
            Path(reference) if path_given else reference,
            input_key=input_key,
            feature_names=feature_names,
        )
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    source: dict[str, Any] = {}
    if isinstance(estimator, (str, os.PathLike)):
        path = Path(estimator)
        estimator = _load_estimator(path)
        source["estimator_file"] = path.name
        source["estimator_sha256"] = _sha256_file(path)
    if estimator is not None and not callable(getattr(estimator, "predict", None)):
        raise PublishError(
            f"the estimator is a {type(estimator).__name__}, not a fitted scikit-learn "
            "estimator (no predict method)"
        )
    trained = _trained_names(estimator)
    try:
        if trained is not None:  # reorder by name, or refuse naming the difference
            match_columns(ref, trained, "the estimator's features (feature_names_in_)")
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    text = ref.text()
    for name in text:  # numbers with a few words among them: a data error, not a category
        _refuse_mixed(name, ref.columns[name])
    if onnx_model is not None:
        path = Path(onnx_model)
        if not path.is_file():
            raise PublishError(f"ONNX model {path} does not exist")
        blob = path.read_bytes()
        source["onnx_file"] = path.name
    else:
        per_column = _selects_by_name(estimator)
        if text and not per_column:
            raise PublishError(
                f"{ref.source} has text columns {text}; this estimator takes numbers only "
                "(encode them in the pipeline: a ColumnTransformer with a OneHotEncoder)"
            )
        blob = _convert(estimator, model, ref, input_name, per_column, target_opset)
    with tempfile.TemporaryDirectory() as scratch:  # outside the registry: nothing appears
        session = _session(blob, Path(scratch))
    try:
        schema, feeds = model_feeds(session.inputs, ref, trained, "the model")
        outputs = session.run_feeds(feeds)
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    except MLServeError as exc:
        raise PublishError(f"the model fails on the reference data: {exc}") from exc
    table = schema.table(feeds)
    names = list(schema.names)
    max_error = None
    if estimator is not None:
        rows = min(len(table), MAX_CHECK_ROWS)
        x_est = _estimator_input(estimator, table[:rows], names, trained)
        check = {k: v[:rows] for k, v in outputs.items()}
        try:
            max_error = _compare(estimator, x_est, check, tolerance)
        except PublishError:
            raise
        except Exception as exc:  # the estimator's own refusal (NaN, types): say where
            missing = [
                n for j, n in enumerate(names)
                if (table.dtype.kind == "f" and np.isnan(table[:, j]).any())
                or (table.dtype == object and any(v is None or v != v for v in table[:, j]))
            ]  # fmt: skip
            where = f" (columns with missing values: {missing})" if missing else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PublishError(
                f"the estimator fails on the reference data{where}: {first[:300]}"
            ) from exc
    for name, value in outputs.items():
        if not np.all(np.isfinite(value)) and value.dtype.kind == "f":
            raise PublishError(f"output {name!r} is not finite on some reference rows")
    try:
        profile = build_profile(
            table, names, categorical=set(categorical) | set(text), outputs=outputs, bins=10
        )
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    first = next(iter(session.inputs))
    lineage: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "reference_data_sha256": (
            _sha256_file(Path(reference)) if path_given else _sha256_feeds(feeds)
        ),
        "reference_data": {
            "file": Path(reference).name if path_given else None,
            "source": "file" if path_given else ref.source,
            "rows": int(table.shape[0]),
        },
        "code_revision": _git_revision(Path(code_dir) if code_dir else Path.cwd()),
        "parent_version": None,  # set under the lock, once the version number is known
        "source": "estimator" if onnx_model is None else "onnx",
        **source,
        "estimator": _estimator_name(estimator) if estimator is not None else None,
        "verification": {
            "rows": int(min(len(table), MAX_CHECK_ROWS)) if estimator is not None else 0,
            "max_abs_error": max_error,
            "tolerance": tolerance,
        },
        "input": {
            "name": first.name if schema.single else None,
            "features": list(trained) if trained is not None else names,
            "columns": [{"name": f.name, "datatype": f.datatype} for f in schema.features],
        },
        "metrics": dict(metrics or {}),
        "tags": dict(tags or {}),
        "libraries": _libraries(),
    }
    golden_feeds = {k: v[:N_SAMPLES] for k, v in feeds.items()}
    model_dir = Path(registry) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the version from other users
    try:
        (tmp / MODEL_FILE).write_bytes(blob)
        save_profile(profile, tmp / "reference.json")
        # Text inputs as numpy strings: samples.npz is read without pickle.
        golden = {
            f"inputs.{k}": v.astype(str) if v.dtype.kind == "O" else v
            for k, v in golden_feeds.items()
        }
        golden.update({f"outputs.{k}": v for k, v in session.run_feeds(golden_feeds, 64).items()})
        np.savez(tmp / SAMPLES_FILE, **golden)  # type: ignore[arg-type]
        with _locked(model_dir):
            existing = _versions(model_dir)
            version = max(existing, default=0) + 1
            lineage["parent_version"] = (
                parent if parent is not None else max(existing, default=None)
            )
            lineage["version"] = version
            (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
            _fsync_tree(tmp)
            os.rename(tmp, model_dir / str(version))  # fails if that number exists
            fsync_dir(model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Published(model, version, model_dir / str(version), lineage, max_error)


# ----------------------------------------------------------------------------------------------


def _load_estimator(path: Path) -> Any:
    if not path.exists():
        raise PublishError(f"estimator file {path} does not exist")
    if not path.is_file():
        raise PublishError(f"estimator file {path} is not a file")
    try:
        import joblib

        return joblib.load(path)  # runs pickle: only files the user named and trusts
    except ImportError as exc:
        raise PublishError(
            "loading an estimator needs scikit-learn: pip install 'mlserve[demo]'"
        ) from exc
    except Exception as exc:  # unpickling raises anything
        raise PublishError(f"cannot load estimator {path.name}: {exc}") from exc


def _is_classifier(estimator: Any) -> bool:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return hasattr(final, "predict_proba") and hasattr(final, "classes_")


def _estimator_name(estimator: Any) -> str:
    if hasattr(estimator, "steps"):
        return " → ".join(type(step).__name__ for _, step in estimator.steps)
    return type(estimator).__name__


def _steps(estimator: Any) -> list[tuple[str, Any]]:
    """(name, estimator) of each step of a Pipeline, or of the estimator alone."""
    steps = getattr(estimator, "steps", None)
    return list(steps) if isinstance(steps, list) else [("", estimator)]


def _trained_names(estimator: Any) -> list[str] | None:
    """The column names the estimator was fitted on (``feature_names_in_``), if any."""
    if estimator is None:
        return None
    for candidate in (estimator, _steps(estimator)[0][1]):
        names = getattr(candidate, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
    return None


def _refuse_mixed(name: str, column: NDArray[Any]) -> None:
    """Refuse a text column whose other values are numbers, naming it and a text value."""
    words, numbers = [], 0
    for v in column.tolist():
        if v is None or (isinstance(v, float) and v != v):
            continue
        try:
            float(v)
            numbers += 1
        except (TypeError, ValueError):
            words.append(v)
    if words and numbers > len(words):
        raise PublishError(
            f"column {name!r} holds numbers and {len(words)} text value(s) such as "
            f"{words[0]!r}: send numbers for this column (empty for missing)"
        )


def _selects_by_name(estimator: Any) -> bool:
    """True when a step picks columns by name (a ColumnTransformer): it needs named inputs."""
    return estimator is not None and any(
        hasattr(step, "transformers") for _, step in _steps(estimator)
    )


def _estimator_input(
    estimator: Any, table: NDArray[Any], names: Sequence[str], trained: Sequence[str] | None
) -> Any:
    """The cast reference rows as the estimator takes them: a DataFrame with its column
    names when it was fitted on one, else the rows × features array."""
    if trained is None:
        return table
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:  # fitted on a DataFrame, so pandas is there; but be safe
        return table
    columns = {}
    for j, n in enumerate(names):
        col = table[:, j]
        if col.dtype == object and not any(isinstance(v, str) for v in col.tolist()):
            col = col.astype(np.float64)
        columns[n] = col
    return pd.DataFrame(columns)[list(trained)]


def _float32_thresholds(estimator: Any) -> Any:
    """A copy whose HistGradientBoosting split thresholds are the largest float32 not above
    the float64 ones: ``x <= t`` then reads the same on float32 inputs as in scikit-learn
    (skl2onnx rounds them to nearest, which moves rows that sit on a split)."""
    import copy

    if not any(hasattr(step, "_predictors") for _, step in _steps(estimator)):
        return estimator
    clone = copy.deepcopy(estimator)
    for _, step in _steps(clone):
        for predictors in getattr(step, "_predictors", None) or ():
            for predictor in predictors:
                nodes = predictor.nodes
                split = nodes["is_leaf"] == 0
                t = nodes["num_threshold"][split]
                f = t.astype(np.float32)
                above = f.astype(np.float64) > t
                f[above] = np.nextafter(f[above], np.float32(-np.inf))
                nodes["num_threshold"][split] = f.astype(np.float64)
    return clone


def _int_attributes(converter: Any) -> Any:
    """Wrap a skl2onnx converter so that booleans in list attributes are written as ints.

    skl2onnx 1.20's HistGradientBoosting converter puts ``False`` into
    ``nodes_missing_value_tracks_true`` for leaves, which onnx ≥ 1.17's protobuf refuses
    (``AttributeProto.ints: Expected an int, got a boolean``)."""

    class _Container:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def add_node(self, *args: Any, **attrs: Any) -> Any:
            for key, value in attrs.items():
                if isinstance(value, list) and any(isinstance(v, bool) for v in value):
                    attrs[key] = [int(v) if isinstance(v, bool) else v for v in value]
            return self._inner.add_node(*args, **attrs)

    def convert(scope: Any, operator: Any, container: Any) -> Any:
        return converter(scope, operator, _Container(container))

    return convert


def _custom_converters() -> dict[type, Any]:
    """Per-call converter overrides (skl2onnx's ``custom_conversion_functions``)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return {
        kind: _int_attributes(get_converter(sklearn_operator_name_map[kind]))
        for kind in (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
    }


def _convert(
    estimator: Any, model: str, ref: Any, input_name: str, per_column: bool, opset: int
) -> bytes:
    """skl2onnx's ONNX for ``estimator``: one 2-D float input ``input_name``, or one
    ``[n, 1]`` input per column of ``ref`` (string for text columns, float otherwise)."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise PublishError(
            "converting an estimator needs skl2onnx: pip install 'mlserve[demo]'"
        ) from exc
    text = set(ref.text())
    if per_column:
        types = [
            (n, StringTensorType([None, 1]) if n in text else FloatTensorType([None, 1]))
            for n in ref.names
        ]
    else:
        types = [(input_name, FloatTensorType([None, len(ref.names)]))]

    def convert(est: Any) -> Any:
        options = {"zipmap": False} if _is_classifier(est) else None
        return convert_sklearn(
            est,
            initial_types=types,
            name=model,  # a fixed graph name (the default is random) keeps builds reproducible
            options=options,
            target_opset={"": opset, "ai.onnx.ml": 3},
            custom_conversion_functions=_custom_converters(),
        )

    try:
        onx = convert(_float32_thresholds(estimator))
    except Exception as exc:  # skl2onnx and onnx raise many types for unsupported models
        raise PublishError(_conversion_failure(estimator, exc, convert)) from None
    if per_column:
        _name_inputs(onx.graph, [n for n, _ in types])
    return bytes(onx.SerializeToString())


def _name_inputs(graph: Any, names: Sequence[str]) -> None:
    """Rename the graph's inputs to ``names`` (the columns, in ``initial_types`` order).

    skl2onnx makes every name an identifier (``mean radius`` → ``mean_radius``, a leading
    digit gets ``_``); the inputs keep the columns' own names so that requests, the profile
    and the lineage all use the names the user has. An internal tensor that already holds
    one of those names is renamed out of the way first."""
    inputs = list(graph.input)
    if [i.name for i in inputs] == list(names):
        return
    if len(inputs) != len(names):
        raise PublishError(
            f"skl2onnx made {len(inputs)} inputs for {len(names)} columns "
            f"({[i.name for i in inputs]}); convert it yourself and publish the file with --onnx"
        )
    outputs = {o.name for o in graph.output}
    taken = {t.name for t in graph.initializer} | outputs
    for node in graph.node:
        taken.update(node.input)
        taken.update(node.output)
    current = {i.name for i in inputs}
    taken -= current  # inputs are renamed at once: one may take another's old name
    renames: dict[str, str] = {}
    for spec, name in zip(inputs, names, strict=True):
        if spec.name != name and name in taken:
            if name in outputs:
                raise PublishError(
                    f"column {name!r} has the name of an output of the converted model; "
                    "rename the column (and refit), or publish an ONNX file with --onnx"
                )
            free = _free_name(name, taken | current | set(names))
            taken.add(free)
            renames[name] = free
    renames.update({i.name: n for i, n in zip(inputs, names, strict=True) if i.name != n})
    for spec in inputs:
        spec.name = renames.get(spec.name, spec.name)
    for node in graph.node:  # a ColumnTransformer's graph has no subgraphs to walk
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for item in list(graph.initializer) + list(graph.value_info):
        item.name = renames.get(item.name, item.name)


def _free_name(seed: str, taken: Collection[str]) -> str:
    k = 1
    while f"{seed}_{k}" in taken:
        k += 1
    return f"{seed}_{k}"


def _root_cause(exc: BaseException) -> str:
    """The innermost exception of a chain (the converter's own words), in one line."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        exc = nxt
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    last = lines[0] if lines else ""  # the innermost message's gist is its first line
    text = f"{type(exc).__name__}: {last}" if last else type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _conversion_failure(estimator: Any, exc: BaseException, convert: Any) -> str:
    """A short reason: the step that fails (found by converting growing prefixes of a
    Pipeline), the converter's last message line, and what to try."""
    where = _estimator_name(estimator)
    steps = _steps(estimator)
    if len(steps) > 1:
        from sklearn.pipeline import Pipeline

        for k in range(1, len(steps) + 1):
            try:
                convert(_float32_thresholds(Pipeline(steps[:k])))
            except Exception:
                name, step = steps[k - 1]
                where = f"step {name!r} ({type(step).__name__}) of {where}"
                break
    cause = _root_cause(exc)
    if "MissingShapeCalculator" in cause or "MissingConverter" in cause:
        hint = (
            "skl2onnx has no converter for it: register one (skl2onnx.update_registered_"
            "converter), or convert it yourself and publish the file with --onnx"
        )
    else:
        hint = (
            "check the tested scikit-learn/skl2onnx/onnx versions and the options in "
            "docs/governance.md, or convert it yourself and publish the file with --onnx"
        )
    return f"skl2onnx cannot convert {where}:\n  {cause}\ntry: {hint}"


def _session(blob: bytes, directory: Path) -> Any:
    """The model as the server would load it (``ModelSession``)."""
    from ..config import ExecutionConfig, InputPolicy
    from ..runtime.session import ModelSession

    path = directory / MODEL_FILE
    path.write_bytes(blob)
    try:
        return ModelSession("publish", 0, path, ExecutionConfig(), InputPolicy(), 1 << 40)
    except ModelLoadError as exc:
        raise PublishError(str(exc)) from exc


def _sha256_feeds(feeds: Mapping[str, NDArray[Any]]) -> str:
    """A digest of reference data given in memory: its cast tensors, by name."""
    digest = hashlib.sha256()
    for name in sorted(feeds):
        value = feeds[name]
        digest.update(name.encode())
        if value.dtype.kind == "O":
            digest.update("\x00".join(map(str, value.ravel().tolist())).encode())
        else:
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _compare(estimator: Any, x: Any, outputs: dict[str, NDArray[Any]], tolerance: float) -> float:
    """Largest difference between onnxruntime and the estimator; refuse beyond ``tolerance``.

    Classifiers: probabilities within ``tolerance``, and labels equal except on rows whose two
    best classes are within ``2 × tolerance`` (a tie that rounding may break either way).
    Regressors: predictions within ``tolerance × max(1, |prediction|)``.
    """
    n = len(x)
    floats = [v for v in outputs.values() if v.dtype.kind == "f"]
    labels = [v for v in outputs.values() if v.dtype.kind in "iub"]
    if _is_classifier(estimator):
        expected = np.asarray(estimator.predict_proba(x), np.float64)
        probs = next((v for v in floats if v.shape == expected.shape), None)
        if probs is None:
            raise PublishError(f"no output of shape {expected.shape} holds the probabilities")
        err = float(np.max(np.abs(probs - expected)))
        if err > tolerance:
            raise PublishError(
                f"onnxruntime's probabilities differ from the estimator's by up to {err:.3g} "
                f"(tolerance {tolerance:g}); not published{_precision_hint(estimator)}"
            )
        if labels:
            predicted = np.asarray(estimator.predict(x)).reshape(n)
            got = labels[0].reshape(n)
            top2 = np.sort(expected, axis=1)[:, -2:]
            tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
            bad = (got != predicted) & ~tie
            if bad.any():
                raise PublishError(
                    f"onnxruntime's labels differ from the estimator's on {int(bad.sum())} of "
                    f"{n} reference rows; not published"
                )
        return err
    expected = np.asarray(estimator.predict(x), np.float64).reshape(n, -1)
    values = next((v for v in floats if v.size == expected.size), None)
    if values is None:
        raise PublishError(f"no output has the estimator's {expected.shape[1]} value(s) per row")
    diff = np.abs(values.reshape(expected.shape) - expected) / np.maximum(1.0, np.abs(expected))
    err = float(np.max(diff))
    if err > tolerance:
        raise PublishError(
            f"onnxruntime's predictions differ from the estimator's by up to {err:.3g} "
            f"(relative, tolerance {tolerance:g}); not published{_precision_hint(estimator)}"
        )
    return err


def _precision_hint(estimator: Any) -> str:
    """Why a tree ensemble after a transformer differs: the ONNX graph computes in float32."""
    steps = _steps(estimator)
    trees = any(hasattr(step, ("_predictors")) or hasattr(step, "estimators_") for _, step in steps)
    if len(steps) > 1 and trees:
        return (
            " (the steps before the trees run in float32 in ONNX, so rows near a split can "
            "go the other way: trees need no scaling, drop those steps, or fit on float32 "
            "data, or raise the tolerance)"
        )
    return ""


def _versions(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.name[0] != "0"]


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """An exclusive lock on the model's ``.publish.lock`` (processes and threads alike)."""
    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_tree(directory: Path) -> None:
    for p in directory.iterdir():
        with p.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(directory)


def _sha256_file(path: Path) -> str:
    from ..registry.layout import sha256_file

    return sha256_file(path)


def _git_revision(directory: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``directory`` (``+dirty`` with local changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def _libraries() -> dict[str, str]:
    found = {"python": platform.python_version(), "mlserve": __version__}
    for name in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found
