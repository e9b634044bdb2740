"""Reference profiles (``reference.json``): what "undrifted" looks like for one model version.

Built offline from reference data (``build_profile``), written beside the model
(``save_profile``), read and validated at load (``load_profile``), counted by the same kernel
that counts live traffic. The schema and the binning rule are in docs/file-formats.md.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..jsonfile import read_json
from .binning import Binning, Level

__all__ = [
    "SCHEMA_VERSION",
    "build_profile",
    "in_precision",
    "load_profile",
    "profile_warnings",
    "save_profile",
    "validate_profile",
]

SCHEMA_VERSION = 1

_TOP_KEYS = {"schema_version", "n_rows", "bins", "top_k", "features", "outputs"}
_COMMON_KEYS = {"name", "kind", "column", "n", "missing", "counts"}
_NUMERIC_KEYS = _COMMON_KEYS | {"edges", "mean", "std", "min", "max"}
_CATEGORICAL_KEYS = _COMMON_KEYS | {"levels"}
_OPTIONAL_NUMERIC_KEYS = {"median"}


# ---------------------------------------------------------------------------------------------
# building


def build_profile(
    X: ArrayLike,
    feature_names: Sequence[str],
    *,
    categorical: Collection[str] = (),
    outputs: Mapping[str, ArrayLike] | None = None,
    bins: int = 10,
    top_k: int = 20,
) -> dict[str, Any]:
    """Profile reference inputs ``X`` (rows × features) and, optionally, model ``outputs``.

    ``categorical`` names the features to profile by level; all others are numeric.
    ``outputs`` maps output names to arrays with one row per row of ``X``.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    x = np.asarray(X)
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D (rows × features), got {x.ndim}-D")
    names = [str(n) for n in feature_names]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} columns")
    if len(set(names)) != len(names):
        raise ValueError("feature names must be unique")
    unknown = set(categorical) - set(names)
    if unknown:
        raise ValueError(f"categorical names unknown features: {sorted(unknown)}")
    cat = set(categorical)
    n = x.shape[0]
    columns = [(name, j, name in cat) for j, name in enumerate(names)]
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "n_rows": n,
        "bins": bins,
        "top_k": top_k,
        "features": _profile_section(x, columns, bins, top_k),
        "outputs": {},
    }
    for out_name, values in (outputs or {}).items():
        y = np.asarray(values)
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(
                f"output {out_name!r} must be 1-D or 2-D with {n} rows, got shape {y.shape}"
            )
        is_cat = y.dtype.kind in "iubOUS"
        if y.ndim == 1:
            out_cols = [(str(out_name), 0, is_cat)]
        else:
            out_cols = [(f"{out_name}[{j}]", j, is_cat) for j in range(y.shape[1])]
        doc["outputs"][str(out_name)] = _profile_section(y, out_cols, bins, top_k)
    return validate_profile(doc)


def _profile_section(
    x: NDArray[Any], columns: Sequence[tuple[str, int, bool]], bins: int, top_k: int
) -> list[dict[str, Any]]:
    """Entries for each (name, column, categorical) of tensor ``x``, counted by the kernel."""
    x2 = x.reshape(-1, 1) if x.ndim == 1 else x
    specs: list[dict[str, Any]] = []
    for name, j, is_cat in columns:
        col = x2[:, j]
        if is_cat:
            specs.append(
                {
                    "name": name,
                    "kind": "categorical",
                    "column": j,
                    "levels": _levels(name, col, top_k),
                }
            )
        else:
            specs.append(
                {"name": name, "kind": "numeric", "column": j, **_numeric(name, col, bins)}
            )
    binning = Binning(specs)
    counts = binning.count(x2).counts
    entries = []
    for spec in specs:
        row = binning.row(spec["name"])
        values = counts[row, : binning.value_bins(row)]
        entry = {
            "name": spec["name"],
            "kind": spec["kind"],
            "column": spec["column"],
            "n": int(x2.shape[0]),
            "missing": int(counts[row, -1]),
            "counts": [int(c) for c in values],
        }
        entry.update({k: v for k, v in spec.items() if k not in entry})
        entries.append(entry)
    return entries


def _numeric(name: str, col: NDArray[Any], bins: int) -> dict[str, Any]:
    if col.dtype.kind in "fiub":
        values = col.astype(np.float64)
    else:
        try:
            values = np.array(col.tolist(), dtype=np.float64)  # None → NaN
        except (TypeError, ValueError) as exc:
            raise ValueError(f"feature {name!r} is not numeric: {exc}") from exc
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"edges": [], "mean": None, "std": None, "min": None, "max": None, "median": None}
    return {
        "edges": [float(e) for e in _edges(finite, bins)],
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "median": float(np.median(finite)),
    }


def _edges(finite: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
    """Bin edges of a numeric feature's finite reference values (the rule in the module doc).

    Every edge is a reference value and the edges are strictly increasing. Edges at the
    quantiles alone (what profiles had before) put a feature with under 1/B of its values
    off its commonest value into one bin: a 0/1 feature with 3 % ones got edges [0.0], bin 0
    empty and bin 1 everything, and no change in its rate could ever show.
    """
    levels, tied = np.unique(finite, return_counts=True)
    if levels.size == 1:
        # A constant: a bin of its own between two empty ones, so that any other value is a
        # change the rule sees (with no edge it only counted as out of range, never alerted).
        # The upper edge is the next float32 above it when the constant is a float32 (the
        # next double otherwise), not a reference value: exact in the precision values arrive
        # in, so rounding at load (in_precision) keeps it and any larger value reaches it.
        v = levels[0]
        above_it = (
            float(np.nextafter(np.float32(v), np.float32(np.inf)))
            if float(np.float32(v)) == v
            else float(np.nextafter(v, np.inf))
        )
        return levels if not np.isfinite(above_it) else np.array([v, above_it])
    if levels.size <= bins:
        return levels[1:]  # one bin per value
    # Inverted CDF: edges are values, so discrete data gets no edges in its gaps.
    q = np.unique(np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf"))
    at = np.searchsorted(levels, q)  # q are values: levels[at] == q
    heavy = at[tied[at] * bins >= finite.size]  # mass points: give each a bin of its own
    after = levels[heavy[heavy + 1 < levels.size] + 1]
    edges = np.union1d(q, after)
    above: NDArray[np.float64] = edges[edges > levels[0]]  # an edge at the minimum: empty bin 0
    return above


def profile_warnings(profile: Mapping[str, Any]) -> list[str]:
    """One sentence for each feature whose reference values fill fewer than two bins.

    Drift in such a feature can only show as values outside the reference (out of range, or
    other levels) or as a change in how often it is missing, if at all. Profiles built now
    fill two bins with every feature that has two distinct values; an older profile may not.
    """
    sections = [("feature", profile.get("features", []))]
    sections += [("output", s) for s in profile.get("outputs", {}).values()]
    out = []
    for what, section in sections:
        for e in section:
            counts = e.get("counts", [])
            if sum(1 for c in counts if c) >= 2:
                continue
            name = f"{what} {e.get('name')!r}"
            every = "every reference row" + (" where present" if e.get("missing") else "")
            if not any(counts):
                out.append(
                    f"{name} is missing in every reference row: its drift cannot be measured"
                )
            elif e.get("kind") == "categorical":
                levels = e.get("levels", [])
                level = repr(levels[counts.index(max(counts))]) if counts[-1] == 0 else "other"
                out.append(
                    f"{name} has one level ({level}) in {every}: only other levels can show drift"
                )
            elif e.get("min") == e.get("max") and len(e.get("edges", [])) >= 2:
                out.append(
                    f"{name} has one value ({e.get('min')!r}) in {every}: "
                    "any other value shows as drift"
                )
            elif e.get("min") == e.get("max"):
                out.append(
                    f"{name} has one value ({e.get('min')!r}) in {every} and a profile "
                    "without bins around it: other values only count as out of range and "
                    "never alert; build the profile again"
                )
            else:
                out.append(
                    f"{name} has all its reference values in one bin (edges {e.get('edges')}): "
                    "only values out of range can show drift; build the profile again"
                )
    return out


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _levels(name: str, col: NDArray[Any], top_k: int) -> list[Level]:
    """The ``top_k`` commonest levels, by count then value (finite, non-missing values only)."""
    if col.dtype.kind in "fiub":
        values = col.astype(np.float64) if col.dtype.kind == "f" else col
        if col.dtype.kind == "f":
            values = values[np.isfinite(values)]
        uniq, cnt = np.unique(values, return_counts=True)
        order = np.lexsort((uniq, -cnt))[:top_k]
        return [uniq[i].item() for i in order]
    counter = Counter(v for v in col.tolist() if not _is_missing(v))
    for v in counter:
        if isinstance(v, float) and not math.isfinite(v):
            continue
        if not isinstance(v, (str, int, float)):
            raise ValueError(
                f"feature {name!r}: level {v!r} is a {type(v).__name__}; "
                "levels must be strings or numbers"
            )
    ranked = sorted(
        (kv for kv in counter.items() if not (isinstance(kv[0], float) and math.isinf(kv[0]))),
        key=lambda kv: (-kv[1], type(kv[0]).__name__, str(kv[0])),
    )
    return [v for v, _ in ranked[:top_k]]


def in_precision(
    entries: Sequence[Mapping[str, Any]], dtypes: Sequence[Any]
) -> list[dict[str, Any]]:
    """Numeric ``entries`` whose values arrive in a narrower float (``dtypes[column]``, e.g.
    float32) with edges and bounds rounded to it, as the values themselves are.

    A profile made from float64 data for an FP32 input (profiles written before publish cast
    the reference to the model's types) puts edges and min/max between float32 values: a
    reference value on an edge or at a bound then lands in the other bin, or out of range,
    once rounded, and undrifted traffic looks drifted. Rounding the edges keeps every
    reference value on the side it was counted on (x ≥ e implies round(x) ≥ round(e)); edges
    that round together merge their bins (the values between them round onto the upper one).
    Entries already exact in their dtype come back unchanged.
    """
    out = []
    for e in entries:
        column = e.get("column")
        dtype = (
            np.dtype(dtypes[column])
            if isinstance(column, int) and 0 <= column < len(dtypes)
            else None
        )
        if e.get("kind") != "numeric" or dtype is None or dtype.kind != "f" or dtype.itemsize >= 8:
            out.append(dict(e))
            continue
        edges = [float(dtype.type(x)) for x in e["edges"]]
        counts = list(e["counts"])
        merged_edges: list[float] = []
        merged_counts = [counts[0]]
        for edge, count in zip(edges, counts[1:], strict=True):
            if merged_edges and edge <= merged_edges[-1]:
                merged_counts[-1] += count  # an empty bin [e, e): its values round onto e
                continue
            merged_edges.append(edge)
            merged_counts.append(count)
        entry = {**e, "edges": merged_edges, "counts": merged_counts}
        for key in ("min", "max"):  # bounds are values; a median may fall between two
            if entry.get(key) is not None:
                entry[key] = float(dtype.type(entry[key]))
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# files


def save_profile(profile: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Validate ``profile`` and write it to ``path`` atomically (temporary file + rename)."""
    doc = validate_profile(profile)
    target = Path(path)
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; servers may run as others
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Bounds on a profile read by the server: every bin becomes metric series (~420 bytes of
# /metrics per bin, measured: 200,000 bins made it 85 MB) and window counters. Real profiles
# have ~10 bins per numeric feature and top_k + 1 per categorical one: 1,000 features at
# bins = 100 make ~100,000.
MAX_EDGES_PER_FEATURE = 1_000  # numeric edges, or categorical levels, of one feature
MAX_BINS = 100_000  # bins of every feature of every section, together
MAX_PROFILE_BYTES = 16 << 20  # the JSON file (a profile at MAX_BINS is ~3 MB)


def load_profile(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a reference profile; ``ValueError`` names what is wrong.

    The file is read within limits (``MAX_PROFILE_BYTES``, UTF-8, nesting: checked before it
    is parsed) and its bins are bounded: at most ``MAX_EDGES_PER_FEATURE`` edges (levels)
    per feature and ``MAX_BINS`` bins in all."""
    p = Path(path)
    try:
        doc = read_json(p, max_bytes=MAX_PROFILE_BYTES)
    except ValueError as exc:
        raise ValueError(f"reference profile {p}: {exc}") from None
    try:
        profile = validate_profile(doc)
        _check_bins(profile)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    return profile


def _check_bins(profile: Mapping[str, Any]) -> None:
    """The bounds above, on a validated profile."""
    sections = [("features", profile["features"])]
    sections += [(f"outputs.{k}", v) for k, v in profile["outputs"].items()]
    total = 0
    for where, section in sections:
        for i, e in enumerate(section):
            key = "edges" if e["kind"] == "numeric" else "levels"
            if len(e[key]) > MAX_EDGES_PER_FEATURE:
                raise _fail(
                    f"{where}[{i}].{key}",
                    f"{len(e[key])} {key}, at most {MAX_EDGES_PER_FEATURE} per feature",
                )
            total += len(e["counts"])
    if total > MAX_BINS:
        raise _fail("(top level)", f"{total} bins in all, at most {MAX_BINS}")


# ---------------------------------------------------------------------------------------------
# validation


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"reference profile: {where}: {message}")


def _int(doc: Mapping[str, Any], key: str, where: str, minimum: int = 0) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(f"{where}{key}", f"must be an integer, got {v!r}")
    if v < minimum:
        raise _fail(f"{where}{key}", f"must be >= {minimum}, got {v}")
    return v


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(where, f"must be a finite number, got {v!r}")
    return float(v)


def _optional_number(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(where, f"must be a finite number or null, got {v!r}")
    return float(v)


def _keys(
    doc: Mapping[str, Any], allowed: set[str], where: str, optional: set[str] | None = None
) -> None:
    unknown = sorted(set(doc) - allowed - (optional or set()))
    if unknown:
        raise _fail(f"{where}{unknown[0]}", "unknown key")
    missing = sorted(allowed - set(doc))
    if missing:
        raise _fail(f"{where}{missing[0]}", "missing")


def _validate_entry(e: Any, where: str, n_rows: int) -> None:
    if not isinstance(e, Mapping):
        raise _fail(where, "must be an object")
    kind = e.get("kind")
    if kind not in ("numeric", "categorical"):
        raise _fail(f"{where}.kind", f"must be 'numeric' or 'categorical', got {kind!r}")
    if kind == "numeric":
        _keys(e, _NUMERIC_KEYS, f"{where}.", _OPTIONAL_NUMERIC_KEYS)
    else:
        _keys(e, _CATEGORICAL_KEYS, f"{where}.")
    if not isinstance(e["name"], str) or not e["name"]:
        raise _fail(f"{where}.name", f"must be a non-empty string, got {e['name']!r}")
    _int(e, "column", f"{where}.")
    n = _int(e, "n", f"{where}.")
    if n != n_rows:
        raise _fail(f"{where}.n", f"must equal n_rows ({n_rows}), got {n}")
    missing = _int(e, "missing", f"{where}.")
    if missing > n:
        raise _fail(f"{where}.missing", f"exceeds n ({n})")
    counts = e["counts"]
    if not isinstance(counts, list) or any(
        isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts
    ):
        raise _fail(f"{where}.counts", "must be a list of non-negative integers")
    if sum(counts) != n - missing:
        raise _fail(
            f"{where}.counts", f"sum to {sum(counts)}, expected n - missing = {n - missing}"
        )
    if kind == "numeric":
        edges = e["edges"]
        if not isinstance(edges, list):
            raise _fail(f"{where}.edges", "must be a list")
        values = [_number(v, f"{where}.edges[{i}]") for i, v in enumerate(edges)]
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise _fail(f"{where}.edges", "must be strictly increasing")
        if len(counts) != len(edges) + 1:
            raise _fail(f"{where}.counts", f"must have len(edges) + 1 = {len(edges) + 1} entries")
        stats = {k: _optional_number(e[k], f"{where}.{k}") for k in ("mean", "std", "min", "max")}
        lo, hi, std = stats["min"], stats["max"], stats["std"]
        if std is not None and std < 0:
            raise _fail(f"{where}.std", "must be >= 0")
        if lo is not None and hi is not None and lo > hi:
            raise _fail(f"{where}.min", "exceeds max")
        median = _optional_number(e.get("median"), f"{where}.median")
        if median is not None and lo is not None and hi is not None and not lo <= median <= hi:
            raise _fail(f"{where}.median", f"must lie within [min, max] = [{lo}, {hi}]")
    else:
        levels = e["levels"]
        if not isinstance(levels, list):
            raise _fail(f"{where}.levels", "must be a list")
        for i, lv in enumerate(levels):
            if not isinstance(lv, (str, int, float)) or (
                isinstance(lv, float) and not math.isfinite(lv)
            ):
                raise _fail(
                    f"{where}.levels[{i}]", f"must be a string or finite number, got {lv!r}"
                )
        if len(set(levels)) != len(levels):
            raise _fail(f"{where}.levels", "must be unique")
        if len(counts) != len(levels) + 1:
            raise _fail(f"{where}.counts", f"must have len(levels) + 1 = {len(levels) + 1} entries")


def _validate_section(section: Any, where: str, n_rows: int) -> None:
    if not isinstance(section, list):
        raise _fail(where, "must be a list of features")
    names: set[str] = set()
    columns: set[int] = set()
    for i, e in enumerate(section):
        _validate_entry(e, f"{where}[{i}]", n_rows)
        if e["name"] in names:
            raise _fail(f"{where}[{i}].name", f"duplicate name {e['name']!r}")
        if e["column"] in columns:
            raise _fail(f"{where}[{i}].column", f"duplicate column {e['column']}")
        names.add(e["name"])
        columns.add(e["column"])


def validate_profile(doc: Any) -> dict[str, Any]:
    """Check ``doc`` against schema version 1; return it (as a dict) or raise ``ValueError``.

    The message names the offending field, e.g. ``features[2].edges``.
    """
    if not isinstance(doc, Mapping):
        raise _fail("(top level)", "must be a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise _fail("schema_version", f"must be {SCHEMA_VERSION}, got {version!r}")
    _keys(doc, _TOP_KEYS, "")
    n_rows = _int(doc, "n_rows", "")
    _int(doc, "bins", "", minimum=2)
    _int(doc, "top_k", "", minimum=1)
    _validate_section(doc["features"], "features", n_rows)
    outputs = doc["outputs"]
    if not isinstance(outputs, Mapping):
        raise _fail("outputs", "must be an object mapping output names to features")
    for name, section in outputs.items():
        if not isinstance(name, str) or not name:
            raise _fail("outputs", f"output names must be non-empty strings, got {name!r}")
        _validate_section(section, f"outputs.{name}", n_rows)
    return dict(doc)
