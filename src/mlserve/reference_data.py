"""Reference profiles from data files: the library behind ``mlserve profile``.

``profile_from_file`` reads reference data (``.npz``, ``.csv`` or ``.parquet``), optionally
runs an ONNX model on it to profile the predictions too, and returns the profile built by
``mlserve.monitoring.build_profile`` (format: docs/file-formats.md). Every problem with the
inputs is a ``ValueError`` naming the file, array, column or option at fault. The casting and
naming rules are in the comments above ``profile_from_file`` and ``read_data``.
"""

from __future__ import annotations

import csv
import importlib
import zipfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .monitoring.profile import build_profile

__all__ = [
    "PROFILE_DTYPES",
    "ReferenceData",
    "match_columns",
    "model_feeds",
    "profile_from_file",
    "read_data",
    "read_reference",
]

PROFILE_DTYPES = ("FP32", "FP64")  # numeric datatypes a profile without a model casts to
_CHUNK_ROWS = 65536  # rows per model run


class ReferenceData:
    """Reference data as named columns: ``names`` in the data's order, ``columns`` by name
    (1-D arrays: numbers as their own dtype, text as objects), and whether the names came
    from the data (``named``) or were made up (``f0``..)."""

    def __init__(self, columns: Mapping[str, NDArray[Any]], named: bool, source: str) -> None:
        self.columns = dict(columns)
        self.names = list(self.columns)
        self.named = named
        self.source = source
        self.rows = len(next(iter(self.columns.values()))) if self.columns else 0

    def text(self) -> list[str]:
        """Names of the columns holding text."""
        return [n for n, c in self.columns.items() if c.dtype.kind in "OUS" and _has_text(c)]

    def table(self) -> NDArray[Any]:
        """Rows × columns: float64 when every column is numeric, else objects."""
        return _stack(list(self.columns.values()), self.rows)


# Values are profiled as the model receives them: with a model, each column is cast to its
# input's datatype by ``runtime.columns.cast_column`` (the rule requests go through) before
# binning, so edges, min/max and counts are those of the cast values; without one, numeric
# columns are cast to ``dtype`` (``FP32`` by default, what skl2onnx exports). The same values
# from CSV, parquet, npz or a DataFrame therefore give the same profile.
def profile_from_file(
    data: Path | Any,
    *,
    input_key: str | None = None,
    feature_names: Sequence[str] | None = None,
    categorical: Collection[str] = (),
    model: Path | None = None,
    bins: int = 10,
    top_k: int = 20,
    dtype: str = "FP32",
) -> dict[str, Any]:
    """Profile the reference data in ``data`` (and ``model``'s outputs on it, if given).

    ``data`` is a path or anything ``read_data`` takes. ``input_key`` picks the array of an
    ``.npz`` file (default: ``X``, else ``X_train``, else its only 2-D array). With a model,
    every value is cast to the datatype of the model input it feeds and every output is
    profiled; without, numeric columns are cast to ``dtype`` (FP32 or FP64). Returns the
    validated profile (see ``mlserve.monitoring.profile``).
    """
    ref = read_data(data, input_key=input_key, feature_names=feature_names)
    cat = set(categorical) | set(ref.text())  # text columns are categorical whatever was asked
    if model is None:
        if dtype not in PROFILE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(PROFILE_DTYPES)}, got {dtype!r}")
        from .runtime.columns import cast_column

        table = _stack(
            [
                c if c.dtype.kind in "OUS" else _cast(n, c, dtype, cast_column)
                for n, c in ref.columns.items()
            ],
            ref.rows,
        )
        return build_profile(table, ref.names, categorical=cat, bins=bins, top_k=top_k)
    table, names, outputs = _model_outputs(Path(model), ref)
    return build_profile(table, names, categorical=cat, outputs=outputs, bins=bins, top_k=top_k)


def read_reference(
    data: Path,
    *,
    input_key: str | None = None,
    feature_names: Sequence[str] | None = None,
    what: str = "reference data",
) -> tuple[NDArray[Any], list[str]]:
    """Rows × features array and feature names of a reference data file (see the module doc);
    ``what`` names the file's role in errors ("the data to score", "the evaluation set").

    Numeric data comes back with its own dtype (npz) or float64; data with text columns as
    an object array of floats (NaN missing) and strings (None missing).
    """
    path = Path(data)
    X, names = _read_file(path, input_key, what)
    return X, _names(X.shape[1], names, feature_names, str(path))


# Feature names come from the data (an npz ``feature_names`` array, a CSV header, the parquet
# or DataFrame column names, the keys of a dict of columns) or else from ``feature_names``, or
# else are ``f0``..``f<N-1>``; names given both ways must agree. A model whose features are
# named (one input per column) takes the data's columns by name, in its own order; missing or
# unknown columns are refused, named. CSV cells: a column whose non-empty cells all parse as
# numbers is numeric (an empty cell is missing, NaN); any other column is categorical, its
# cells kept as strings (an empty cell is missing). A numeric column named in ``categorical``
# keeps numeric levels, which match the values of a float input tensor.
def read_data(
    data: Any, *, input_key: str | None = None, feature_names: Sequence[str] | None = None
) -> ReferenceData:
    """Reference data from a path (.npz/.csv/.parquet), a pandas DataFrame, a mapping of
    column name → 1-D values, or a 2-D array (names from ``feature_names``)."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        X, found = _read_file(path, input_key)
        names = _names(X.shape[1], found, feature_names, str(path))
        if X.dtype != object:
            columns = {n: X[:, j] for j, n in enumerate(names)}
        else:  # object table: numeric columns back to float64
            columns = {n: _column(X[:, j]) for j, n in enumerate(names)}
        return ReferenceData(columns, found is not None or feature_names is not None, path.name)
    if input_key is not None:
        raise ValueError("input_key applies to .npz files only")
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        names = [str(n) for n in data.columns]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"the DataFrame has duplicate column names: {dups}")
        cols = {str(n): _frame_column(data[n]) for n in data.columns}
        if len(cols) != len(data.columns):
            raise ValueError("the DataFrame has duplicate column names")
        _names(len(cols), list(cols), feature_names, "the DataFrame")
        return _checked(ReferenceData(cols, True, "DataFrame"))
    if isinstance(data, Mapping):
        cols = {str(n): _column(np.asarray(v)) for n, v in data.items()}
        _names(len(cols), list(cols), feature_names, "the columns")
        return _checked(ReferenceData(cols, True, "columns"))
    X = np.asarray(data)
    if X.ndim != 2:
        raise ValueError(f"reference data must be 2-D (rows × features), got shape {X.shape}")
    names = _names(X.shape[1], None, feature_names, "the array")
    columns = {n: _column(X[:, j]) for j, n in enumerate(names)}
    return _checked(ReferenceData(columns, feature_names is not None, "array"))


def match_columns(ref: ReferenceData, expected: Sequence[str], what: str) -> list[str]:
    """The names of ``ref``'s columns in the order of ``expected`` (the model's features).

    Data without names of its own takes ``expected`` when the count matches. Raises
    ``ValueError`` naming the missing and unknown columns (``what`` says whose names).
    """
    expected = [str(n) for n in expected]
    if not ref.named:
        if len(ref.names) != len(expected):
            raise ValueError(
                f"{ref.source} has {len(ref.names)} unnamed columns; {what} has "
                f"{len(expected)}: {expected}"
            )
        ref.columns = dict(zip(expected, ref.columns.values(), strict=True))
        ref.names = list(expected)
        return expected
    missing = [n for n in expected if n not in ref.columns]
    extra = [n for n in ref.names if n not in set(expected)]
    if missing or extra:
        parts = [f"missing {missing}"] if missing else []
        if extra:
            parts.append(f"not in the model {extra}")
        raise ValueError(
            f"the columns of {ref.source} do not match {what} ({'; '.join(parts)}); "
            f"expected {expected}"
        )
    return expected


def _names(
    width: int, found: list[str] | None, given: Sequence[str] | None, where: str
) -> list[str]:
    given_ = None if given is None else [str(n) for n in given]
    if given_ is not None and len(given_) != width:
        raise ValueError(
            f"--feature-names gives {len(given_)} names for the {width} columns of {where}"
        )
    if found is None:
        names = given_ if given_ is not None else [f"f{j}" for j in range(width)]
    elif given_ is not None and given_ != found:
        raise ValueError(f"--feature-names {given_} disagree with the names in {where}: {found}")
    else:
        names = found
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"reference data {where}: duplicate feature names {dup}")
    return names


def _few(names: Sequence[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"{list(names[:most])}{more}"


def _checked(ref: ReferenceData) -> ReferenceData:
    lengths = {len(c) for c in ref.columns.values()}
    if any(c.ndim != 1 for c in ref.columns.values()) or len(lengths) > 1:
        raise ValueError(f"the columns of {ref.source} must be 1-D and of one length")
    if not ref.columns or ref.rows == 0:
        raise ValueError(f"reference data {ref.source} has no rows")
    return ref


def _has_text(col: NDArray[Any]) -> bool:
    return col.dtype.kind in "US" or any(isinstance(v, str) for v in col.tolist())


def _column(col: NDArray[Any]) -> NDArray[Any]:
    """A column as numbers when it holds no text (None → NaN), else as objects."""
    if col.dtype.kind in "US":
        return col.astype(object)
    if col.dtype.kind != "O":
        return col
    if _has_text(col):
        return np.array([None if _missing(v) else v for v in col.tolist()], dtype=object)
    try:
        return np.array([np.nan if v is None else v for v in col.tolist()], dtype=np.float64)
    except (TypeError, ValueError):
        return col


def _frame_column(series: Any) -> NDArray[Any]:
    kind = getattr(series.dtype, "kind", "O")
    if kind in "fiub" and not series.hasnans:
        return np.asarray(series.to_numpy())
    if kind in "fiub":
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    values = series.astype(object).where(series.notna(), None).tolist()
    return _column(np.array(values, dtype=object))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _cast(name: str, values: NDArray[Any], datatype: str, cast: Any) -> NDArray[Any]:
    """``cast_column``, its ``InvalidInput`` as the ``ValueError`` of this module."""
    from .errors import InvalidInput

    try:
        return cast(name, values, datatype)  # type: ignore[no-any-return]
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


def _read_file(
    path: Path, input_key: str | None, what: str = "reference data"
) -> tuple[NDArray[Any], list[str] | None]:
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if input_key is not None and suffix != ".npz":
        raise ValueError(f"--input-key applies to .npz files only, not {path.name}")
    X: NDArray[Any]
    names: list[str] | None
    if suffix == ".npz":
        X, names = _read_npz(path, input_key)
    elif suffix == ".csv":
        X, names = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        X, names = _read_parquet(path)
    else:
        raise ValueError(f"{what} {path}: unknown format {suffix!r} (.npz, .csv, .parquet)")
    if X.shape[0] == 0:
        raise ValueError(f"{what} {path} has no rows")
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


def _model_outputs(
    model: Path, ref: ReferenceData
) -> tuple[NDArray[Any], list[str], dict[str, NDArray[Any]]]:
    """Run ``model`` on the reference columns cast to its inputs; return the feature table
    (rows × features in the model's order, cast values), the feature names and every output.

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
    schema, feeds = model_feeds(sess.inputs, ref, None, f"model {model.name}")
    try:
        outputs = sess.run_feeds(feeds, _CHUNK_ROWS)
    except MLServeError as exc:
        raise ValueError(f"running model {model} on the data failed: {exc}") from exc
    return schema.table(feeds), list(schema.names), outputs


def model_feeds(
    inputs: Sequence[Any], ref: ReferenceData, trained: Sequence[str] | None, what: str
) -> tuple[Any, dict[str, NDArray[Any]]]:
    """The model's ``FeatureSchema`` and its input tensors from the reference columns.

    The features are named by ``trained`` (the estimator's ``feature_names_in_``), else by the
    model's one-column inputs, else by the data; the data's columns are matched to them by
    name and cast to their inputs' datatypes. Raises ``ValueError`` naming what does not fit.
    """
    from .errors import InvalidInput
    from .runtime.columns import FeatureSchema

    for spec in inputs:
        if len(spec.shape) not in (1, 2):
            raise ValueError(f"{what} input {spec.name!r} has shape {list(spec.shape)}")
    per_column = all(len(s.shape) == 1 or s.shape[1] == 1 for s in inputs)
    if per_column and len(inputs) == 1 and len(ref.names) == 1 and trained is None:
        ref.columns = {inputs[0].name: ref.columns[ref.names[0]]}  # one input, one column
        ref.names = [inputs[0].name]
    if trained is not None:
        names = match_columns(ref, trained, what)
    elif per_column:
        names = match_columns(ref, [s.name for s in inputs], f"{what}'s inputs")
    else:
        names = ref.names
    width = inputs[0].shape[1] if not per_column and len(inputs) == 1 else -1
    if width != -1 and width != len(names):
        raise ValueError(
            f"{what} input {inputs[0].name!r} takes {width} features; the data has {len(names)}"
        )
    schema = FeatureSchema.from_inputs(inputs, names)
    if schema is None:
        listed = ", ".join(f"{s.name} {list(s.shape)}" for s in inputs)
        raise ValueError(f"{what} has inputs {listed}: not rows × features nor one per column")
    unfed = [n for n in schema.names if n not in ref.columns]
    if unfed:  # e.g. an ONNX file whose converter renamed the columns ('a b' → 'a_b')
        others = [n for n in ref.names if n not in set(schema.names)]
        raise ValueError(
            f"{what}'s inputs {_few(unfed)} are not columns of {ref.source} (its columns not "
            f"fed: {_few(others)}); a model with one input per column must name its inputs "
            "as the columns"
        )
    try:
        feeds = schema.feeds({n: ref.columns[n] for n in schema.names})
    except InvalidInput as exc:
        raise ValueError(f"the data cannot be fed to {what}: {exc}") from None
    return schema, feeds
