"""A profile section compiled for counting: rows of one tensor → ``BinCounts``.

A section is a list of feature entries of a reference profile (``profile["features"]`` or
``profile["outputs"][name]``, see ``profile.py``); each entry names the column of the tensor
it reads. ``Binning`` turns the entries into kernel arrays once: numeric features are
counted by the compiled kernel (or its twin) through a ``RowBinner``; categorical features
are mapped to level codes here (``encode_levels``) and counted by ``bin_codes``.

Rows of the counts: numeric features first, then categorical, each in section order
(``names`` lists them; ``row(name)`` finds one). Every feature has the same number of
columns ``n_bins``: value bins from 0, zero-padded, and the missing bin last.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .kernel import BinCounts, RowBinner, bin_codes, bin_values, pad_edges

__all__ = ["Binning", "Level", "encode_levels"]

# A categorical level as stored in a profile (JSON scalars; bool is an int).
Level = str | int | float

_SMALL = 32  # rows up to which categorical values are encoded in Python
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


class _LevelEncoder:
    """Maps values to codes: level i → i, anything else → K ("other"), missing → -1.

    Missing is NaN or None. Numeric arrays are matched by value (as float64) with a sorted
    search; other arrays (strings, objects) with a dictionary.
    """

    def __init__(self, levels: Sequence[Level]) -> None:
        self.k = len(levels)
        self._lookup: dict[Any, int] = {lv: i for i, lv in enumerate(levels)}
        self.numeric = all(isinstance(lv, (int, float)) for lv in levels)
        values = np.array([float(lv) for lv in levels] if self.numeric else [], np.float64)
        order = np.argsort(values, kind="stable")
        # The numeric levels in increasing order, and each one's code (for ``bin_values``).
        self.sorted = values[order]
        self.order = order.astype(np.int64)
        self.sorted.flags.writeable = False
        self.order.flags.writeable = False

    def encode(self, values: NDArray[Any]) -> NDArray[np.int64]:
        if values.shape[0] <= _SMALL:  # a request's few rows: a dict lookup beats numpy's ops
            return np.array([self._code(x) for x in values.tolist()], dtype=np.int64)
        if values.dtype.kind in "fiub":
            v = values.astype(np.float64)
            if self.k == 0 or not self.numeric:
                codes = np.full(v.shape, self.k, dtype=np.int64)
            else:
                pos = np.minimum(np.searchsorted(self.sorted, v), self.k - 1)
                codes = np.where(self.sorted[pos] == v, self.order[pos], self.k)
            codes[np.isnan(v)] = -1
            return codes
        return np.fromiter((self._code(x) for x in values.tolist()), np.int64, values.shape[0])

    def _code(self, x: Any) -> int:
        if x is None or (isinstance(x, float) and x != x):
            return -1
        try:
            return self._lookup.get(x, self.k)
        except TypeError:  # unhashable: not a level
            return self.k


def encode_levels(values: ArrayLike, levels: Sequence[Level]) -> NDArray[np.int64]:
    """Codes of 1-D ``values``: ``levels[i]`` → i, others → ``len(levels)``, NaN/None → -1."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got {v.ndim}-D")
    return _LevelEncoder(levels).encode(v)


class Binning:
    """Counts the rows of one tensor into the bins of one profile section.

    Built from the section's entries (each a mapping with ``name``, ``kind``, ``column`` and
    ``edges``/``min``/``max`` for numeric or ``levels`` for categorical features). When the
    entries carry reference ``counts`` and ``missing``, ``reference`` holds them as a
    ``[features, n_bins]`` matrix laid out like the window counts.

    ``count`` is not thread-safe: it points the kernel at its output. Give each thread (or
    owner) its own ``clone()``, which shares the arrays; ``WindowedCounts`` does, and
    serialises its own calls.
    """

    def __init__(self, entries: Sequence[Mapping[str, Any]]) -> None:
        numeric = [e for e in entries if e["kind"] == "numeric"]
        categorical = [e for e in entries if e["kind"] == "categorical"]
        if len(numeric) + len(categorical) != len(entries):
            raise ValueError("every entry must have kind 'numeric' or 'categorical'")
        ordered = numeric + categorical
        self.names: tuple[str, ...] = tuple(str(e["name"]) for e in ordered)
        if len(set(self.names)) != len(self.names):
            raise ValueError("feature names must be unique within a section")
        self.kinds: tuple[str, ...] = tuple(str(e["kind"]) for e in ordered)
        self.n_numeric = len(numeric)
        self._rows = {name: i for i, name in enumerate(self.names)}
        # Counts rows in the section's own order (for reports).
        self.section_rows: tuple[int, ...] = tuple(self._rows[str(e["name"])] for e in entries)

        def bound(e: Mapping[str, Any], key: str) -> float:
            return np.nan if e.get(key) is None else float(e[key])

        self.cols = np.array([int(e["column"]) for e in numeric], dtype=np.int32)
        self.edges, self.n_edges = pad_edges([e["edges"] for e in numeric])
        self.ref_min = np.array([bound(e, "min") for e in numeric], dtype=np.float64)
        self.ref_max = np.array([bound(e, "max") for e in numeric], dtype=np.float64)
        self.cat_cols: tuple[int, ...] = tuple(int(e["column"]) for e in categorical)
        self.levels: tuple[tuple[Level, ...], ...] = tuple(tuple(e["levels"]) for e in categorical)
        self.n_levels = np.array([len(lv) for lv in self.levels], dtype=np.int32)
        self.n_bins = max(self.edges.shape[1], int(self.n_levels.max(initial=0))) + 2
        columns = [int(e["column"]) for e in ordered]
        if min(columns, default=0) < 0:
            raise ValueError("feature columns must be >= 0")
        self.n_columns = max(columns, default=-1) + 1
        for spec in (
            self.cols,
            self.edges,
            self.n_edges,
            self.ref_min,
            self.ref_max,
            self.n_levels,
        ):
            spec.flags.writeable = False  # shared by clones and bound kernels
        self._encoders = [_LevelEncoder(lv) for lv in self.levels]
        self._binner = (
            RowBinner(self.cols, self.edges, self.n_edges, self.ref_min, self.ref_max)
            if numeric
            else None
        )
        self._bound: BinCounts | None = None
        self.reference: NDArray[np.int64] | None = None
        if all("counts" in e and "missing" in e for e in ordered):
            ref = np.zeros((len(ordered), self.n_bins), dtype=np.int64)
            for i, e in enumerate(ordered):
                values = np.asarray(e["counts"], dtype=np.int64)
                if values.shape != (self.value_bins(i),):
                    raise ValueError(
                        f"feature {self.names[i]!r}: {values.size} reference counts for "
                        f"{self.value_bins(i)} bins"
                    )
                ref[i, : values.size] = values
                ref[i, -1] = int(e["missing"])
            self.reference = ref

    def clone(self) -> Binning:
        """The same binning with its own kernel binding (the spec arrays are shared)."""
        other = copy.copy(self)
        other._binner = (
            RowBinner(self.cols, self.edges, self.n_edges, self.ref_min, self.ref_max)
            if self._binner is not None
            else None
        )
        other._bound = None
        return other

    @property
    def n_features(self) -> int:
        return len(self.names)

    def row(self, name: str) -> int:
        """The counts row of feature ``name``."""
        try:
            return self._rows[name]
        except KeyError:
            raise KeyError(f"no feature named {name!r} in this section") from None

    def value_bins(self, row: int) -> int:
        """How many value bins (missing excluded) the feature in counts row ``row`` uses."""
        if row < self.n_numeric:
            return int(self.n_edges[row]) + 1
        return int(self.n_levels[row - self.n_numeric]) + 1

    def zeros(self) -> BinCounts:
        """Zeroed counts laid out for this section."""
        return BinCounts.zeros(self.n_features, self.n_bins)

    def count(self, X: ArrayLike, out: BinCounts | None = None) -> BinCounts:
        """Add the rows of ``X`` (2-D, or 1-D for a one-column tensor) to ``out`` and return it."""
        # The per-request path: checks that cost next to nothing, then the kernel.
        x = X if type(X) is np.ndarray else np.asarray(X)
        if x.ndim != 2:
            if x.ndim != 1:
                raise ValueError(f"expected a 1-D or 2-D tensor, got {x.ndim}-D")
            x = x.reshape(-1, 1)
        if x.shape[1] < self.n_columns:
            raise ValueError(f"expected at least {self.n_columns} columns, got {x.shape[1]}")
        if out is None or out is not self._bound:
            out = self._bind(out)
        if self._binner is not None:
            dt = x.dtype
            self._binner.add(x if dt is _FLOAT32 or dt is _FLOAT64 else self._as_float(x))
        if self.cat_cols and x.shape[0] <= _SMALL:
            # A request's few rows: count in Python (what bin_codes does, without the cost of
            # handing arrays to the kernel).
            counts = out.counts
            for i, (col, enc) in enumerate(zip(self.cat_cols, self._encoders, strict=True)):
                row = self.n_numeric + i
                for value in x[:, col].tolist():
                    code = enc._code(value)
                    counts[row, code if code >= 0 else -1] += 1
        elif self.cat_cols:
            numeric = x.dtype.kind in "fiub"
            for i, (col, enc) in enumerate(zip(self.cat_cols, self._encoders, strict=True)):
                row = self.n_numeric + i
                if numeric and enc.numeric:  # numeric levels: counted from the values
                    values = x[:, col]
                    if values.dtype is not _FLOAT64:
                        values = values.astype(np.float64)
                    bin_values(values, enc.sorted, enc.order, out.counts[row])
                else:
                    codes = enc.encode(x[:, col]).reshape(-1, 1)
                    bin_codes(codes, self.n_levels[i : i + 1], out.counts[row : row + 1])
        return out

    def _bind(self, out: BinCounts | None) -> BinCounts:
        """Check ``out`` (allocate it when None) and point the kernel at its numeric rows."""
        if out is None:
            out = self.zeros()
        elif out.counts.shape != (self.n_features, self.n_bins):
            raise ValueError(
                f"out has shape {out.counts.shape}, expected {(self.n_features, self.n_bins)}"
            )
        if self._binner is not None:
            self._binner.bind(*(a[: self.n_numeric] for a in out.arrays()))
        self._bound = out
        return out

    def _as_float(self, x: NDArray[Any]) -> NDArray[np.float64]:
        """The numeric columns of a non-float tensor as float64 (other columns NaN)."""
        if x.dtype.kind in "fiub":  # integers, booleans, non-native floats
            return x.astype(np.float64)
        out = np.full((x.shape[0], self.n_columns), np.nan, dtype=np.float64)
        for j, col in enumerate(self.cols.tolist()):
            try:
                out[:, col] = np.array(x[:, col].tolist(), dtype=np.float64)  # None → NaN
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"feature {self.names[j]!r} (column {col}) is not numeric: {exc}"
                ) from exc
        return out
