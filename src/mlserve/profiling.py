"""Reference profiles from data files: the library behind ``mlserve profile``.

``profile_from_file`` reads reference data (``.npz``, ``.csv`` or ``.parquet``), optionally
runs an ONNX model on it to profile the predictions too, and returns the profile built by
``mlserve.monitoring.build_profile`` (DESIGN.md §7). Every problem with the inputs is a
``ValueError`` whose message names the file, array, column or option at fault.

Feature names come from the file (an npz ``feature_names`` array, a CSV header, the parquet
column names) or else from ``feature_names``, or else are ``f0``..``f<N-1>``; names given
both ways must agree. CSV cells: a column whose non-empty cells all parse as numbers is
numeric (an empty cell is missing, NaN); any other column is categorical, its cells kept as
strings (an empty cell is missing). A numeric column named in ``categorical`` keeps numeric
levels, which match the values of a float input tensor.
"""

from __future__ import annotations

import csv
import importlib
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .monitoring.profile import build_profile

__all__ = ["profile_from_file", "read_reference"]

# Input datatypes the data can be cast to.
_FLOAT_INPUTS = ("FP32", "FP64", "FP16")
_CHUNK_ROWS = 65536  # rows per model run


def profile_from_file(
    data: Path,
    *,
    input_key: str | None = None,
    feature_names: Sequence[str] | None = None,
    categorical: Collection[str] = (),
    model: Path | None = None,
    bins: int = 10,
    top_k: int = 20,
) -> dict[str, Any]:
    """Profile the reference data in ``data`` (and ``model``'s outputs on it, if given).

    ``input_key`` picks the array of an ``.npz`` file (default: ``X``, else ``X_train``, else
    its only 2-D array). The model must have one input, of a float type; every output is
    profiled. Returns the validated profile (see ``mlserve.monitoring.profile``).
    """
    X, names = read_reference(data, input_key=input_key, feature_names=feature_names)
    cat = set(categorical)
    if X.dtype == object:  # CSV/parquet text columns are categorical whatever was asked
        cat |= {n for j, n in enumerate(names) if any(isinstance(v, str) for v in X[:, j])}
    outputs = _model_outputs(Path(model), X, names) if model is not None else None
    return build_profile(X, names, categorical=cat, outputs=outputs, bins=bins, top_k=top_k)


def read_reference(
    data: Path, *, input_key: str | None = None, feature_names: Sequence[str] | None = None
) -> tuple[NDArray[Any], list[str]]:
    """Rows × features array and feature names of a reference data file (see the module doc).

    Numeric data comes back with its own dtype (npz) or float64; data with text columns as
    an object array of floats (NaN missing) and strings (None missing).
    """
    path = Path(data)
    if not path.is_file():
        raise ValueError(f"reference data {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if input_key is not None and suffix != ".npz":
        raise ValueError(f"--input-key applies to .npz files only, not {path.name}")
    if suffix == ".npz":
        X, names = _read_npz(path, input_key)
    elif suffix == ".csv":
        X, names = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        X, names = _read_parquet(path)
    else:
        raise ValueError(f"reference data {path}: unknown format {suffix!r} (.npz, .csv, .parquet)")
    if X.shape[0] == 0:
        raise ValueError(f"reference data {path} has no rows")
    given = None if feature_names is None else [str(n) for n in feature_names]
    if given is not None and len(given) != X.shape[1]:
        raise ValueError(
            f"--feature-names gives {len(given)} names for the {X.shape[1]} columns of {path}"
        )
    if names is None:
        names = given if given is not None else [f"f{j}" for j in range(X.shape[1])]
    elif given is not None and given != names:
        raise ValueError(f"--feature-names {given} disagree with the names in {path}: {names}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"reference data {path}: duplicate feature names {dup}")
    return X, names


def _read_npz(path: Path, key: str | None) -> tuple[NDArray[Any], list[str] | None]:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {path} as .npz: {exc}") from exc
    if key is None:
        key = next((k for k in ("X", "X_train") if k in arrays), None)
    if key is None:
        two_d = [k for k, v in arrays.items() if v.ndim == 2]
        if len(two_d) != 1:
            raise ValueError(
                f"{path} holds {len(two_d)} 2-D arrays ({', '.join(two_d) or 'none'}) and "
                f"no 'X' or 'X_train': pass --input-key (arrays: {', '.join(arrays)})"
            )
        key = two_d[0]
    if key not in arrays:
        raise ValueError(f"{path} has no array {key!r} (arrays: {', '.join(arrays) or 'none'})")
    X = arrays[key]
    if X.ndim != 2:
        raise ValueError(
            f"array {key!r} in {path} is {X.ndim}-D (shape {X.shape}); "
            "reference data must be 2-D (rows × features)"
        )
    if "feature_names" not in arrays:
        return X, None
    names = arrays["feature_names"]
    if names.ndim != 1 or names.shape[0] != X.shape[1]:
        raise ValueError(
            f"'feature_names' in {path} has shape {names.shape}; "
            f"expected one name per column of {key!r} ({X.shape[1]})"
        )
    return X, [str(n) for n in names.tolist()]


def _read_csv(path: Path) -> tuple[NDArray[Any], list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {path} as CSV: {exc}") from exc
    if not rows or not rows[0]:
        raise ValueError(f"{path} has no header row")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise ValueError(f"{path}: header column {header.index('') + 1} has no name")
    body = rows[1:]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {i} has {len(row)} fields, the header has {len(header)}"
            )
    columns = [_csv_column([row[j] for row in body]) for j in range(len(header))]
    return _stack(columns, len(body)), header


def _csv_column(cells: list[str]) -> NDArray[Any]:
    """Floats (empty → NaN) when every non-empty cell is a number; else strings (empty → None)."""
    try:
        return np.array([float(c) if c.strip() else np.nan for c in cells], dtype=np.float64)
    except ValueError:
        return np.array([c if c.strip() else None for c in cells], dtype=object)


def _read_parquet(path: Path) -> tuple[NDArray[Any], list[str]]:
    """Read with pyarrow, else pandas (neither is a dependency of mlserve)."""
    reader = None
    for module in ("pyarrow.parquet", "pandas"):
        try:
            reader = importlib.import_module(module)
            break
        except ImportError:
            continue
    if reader is None:
        raise ValueError(f"reading {path.name} needs pyarrow: pip install pyarrow")
    try:
        if reader.__name__ == "pyarrow.parquet":
            table = reader.read_table(path)
            raw = {n: table.column(n).to_pylist() for n in table.column_names}
        else:
            frame = reader.read_parquet(path)
            raw = {
                str(n): frame[n].astype(object).where(frame[n].notna(), None).tolist()
                for n in frame.columns
            }
    except ImportError as exc:  # pandas without a parquet engine
        raise ValueError(f"reading {path.name} needs pyarrow: pip install pyarrow ({exc})") from exc
    except Exception as exc:  # the readers raise their own exception types
        raise ValueError(f"cannot read {path} as parquet: {exc}") from exc
    columns = []
    for values in raw.values():
        present = [v for v in values if v is not None]
        if all(isinstance(v, (int, float)) for v in present):  # bool is an int: 0/1
            columns.append(np.array([np.nan if v is None else v for v in values], np.float64))
        else:
            columns.append(np.array([None if v is None else str(v) for v in values], object))
    return _stack(columns, len(next(iter(raw.values()), []))), list(raw)


def _stack(columns: list[NDArray[Any]], n_rows: int) -> NDArray[Any]:
    """Columns side by side: float64 when all are numeric, else an object array."""
    if all(c.dtype == np.float64 for c in columns):
        return np.column_stack(columns) if columns else np.empty((n_rows, 0))
    X = np.empty((n_rows, len(columns)), dtype=object)
    for j, c in enumerate(columns):
        X[:, j] = c
    return X


def _model_outputs(model: Path, X: NDArray[Any], names: Sequence[str]) -> dict[str, NDArray[Any]]:
    """Run ``model`` on ``X`` (its single float input) and return every output by name.

    The model runs as the server runs it (``ModelSession``, default execution settings), so
    a profile made here equals the one ``mlserve publish`` writes."""
    from .config import ExecutionConfig, InputPolicy
    from .errors import MLServeError, ModelLoadError
    from .runtime.session import ModelSession

    if not model.is_file():
        raise ValueError(f"model {model} does not exist or is not a file")
    try:
        sess = ModelSession("profile", 0, model, ExecutionConfig(), InputPolicy(), 1 << 40)
    except ModelLoadError as exc:
        if "only tensors" in str(exc):
            raise ValueError(
                f"{exc}; only tensor outputs can be profiled "
                "(for scikit-learn classifiers, export without ZipMap)"
            ) from exc
        raise ValueError(f"cannot load model {model}: {exc}") from exc
    if len(sess.inputs) != 1:
        listed = ", ".join(i.name for i in sess.inputs)
        raise ValueError(f"model {model} has {len(sess.inputs)} inputs ({listed}); expected one")
    inp = sess.inputs[0]
    if inp.datatype not in _FLOAT_INPUTS:
        raise ValueError(f"model input {inp.name!r} is {inp.datatype}; expected a float tensor")
    shape = list(inp.shape)
    if len(shape) != 2:
        raise ValueError(f"model input {inp.name!r} has shape {shape}; expected [rows, features]")
    if shape[1] >= 0 and shape[1] != X.shape[1]:
        raise ValueError(
            f"model input {inp.name!r} takes {shape[1]} features; the data has {X.shape[1]}"
        )
    try:
        x = X.astype(inp.dtype)
    except (TypeError, ValueError):
        text = [n for j, n in enumerate(names) if any(isinstance(v, str) for v in X[:, j])]
        raise ValueError(f"the data cannot be fed to model {model}: text columns {text}") from None
    try:
        return sess.run_rows(x, _CHUNK_ROWS)
    except MLServeError as exc:
        raise ValueError(f"running model {model} on the data failed: {exc}") from exc
