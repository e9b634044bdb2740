"""The numpy twin of the compiled binning kernels (``_kernel.pyx``): same API, same numbers.

Used when the compiled module is unavailable or ``MLSERVE_NO_EXTENSIONS=1``; every kernel
test runs on both. Counts, range counts and finite counts are identical to the compiled
kernel's; sums and sums of squares agree to rounding (numpy sums pairwise, the kernel in
row order). The argument checks raise the same exception types as the compiled module's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["LINEAR_MAX", "RowBinner", "RowQueue", "bin_codes", "bin_rows", "bin_values"]

# Kept for parity with the compiled module (where it picks linear count vs binary search).
LINEAR_MAX = 16

# Rows per chunk are chosen so that one [rows, features, edges] comparison stays this small.
_CHUNK_ELEMENTS = 1 << 18


def _require(a: Any, name: str, dtype: type[np.generic], ndim: int, *, writable: bool) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(
            f"{name}: buffer dtype mismatch, expected {np.dtype(dtype)}, got {a.dtype}"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name}: buffer has wrong number of dimensions (expected {ndim})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: ndarray is not C-contiguous")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name}: buffer source array is read-only")


def _check_spec(
    cols: NDArray[np.int32],
    edges: NDArray[np.float64],
    n_edges: NDArray[np.int32],
    ref_min: NDArray[np.float64],
    ref_max: NDArray[np.float64],
) -> int:
    """Validate the spec; return the number of columns X needs (max(cols) + 1)."""
    _require(cols, "cols", np.int32, 1, writable=False)
    _require(edges, "edges", np.float64, 2, writable=False)
    _require(n_edges, "n_edges", np.int32, 1, writable=False)
    _require(ref_min, "ref_min", np.float64, 1, writable=False)
    _require(ref_max, "ref_max", np.float64, 1, writable=False)
    f = cols.shape[0]
    if not (edges.shape[0] == n_edges.shape[0] == ref_min.shape[0] == ref_max.shape[0] == f):
        raise ValueError("cols, edges, n_edges, ref_min and ref_max must have one row per feature")
    need = 0
    for j in range(f):
        if cols[j] < 0:
            raise ValueError(f"cols[{j}] = {cols[j]} is negative")
        need = max(need, int(cols[j]) + 1)
        if n_edges[j] < 0 or n_edges[j] > edges.shape[1]:
            raise ValueError(f"n_edges[{j}] = {n_edges[j]} is outside 0..{edges.shape[1]}")
    return need


def _check_out(
    n_edges: NDArray[np.int32],
    counts: NDArray[np.int64],
    out_low: NDArray[np.int64],
    out_high: NDArray[np.int64],
    n_finite: NDArray[np.int64],
    sums: NDArray[np.float64],
    sumsq: NDArray[np.float64],
) -> None:
    _require(counts, "counts", np.int64, 2, writable=True)
    for name, a in (("out_low", out_low), ("out_high", out_high), ("n_finite", n_finite)):
        _require(a, name, np.int64, 1, writable=True)
    _require(sums, "sums", np.float64, 1, writable=True)
    _require(sumsq, "sumsq", np.float64, 1, writable=True)
    f = n_edges.shape[0]
    shapes = (counts.shape[0], out_low.shape[0], out_high.shape[0], n_finite.shape[0])
    if any(s != f for s in (*shapes, sums.shape[0], sumsq.shape[0])):
        raise ValueError("every output must have one row per feature")
    for j in range(f):
        if n_edges[j] + 2 > counts.shape[1]:
            raise ValueError(
                f"counts has {counts.shape[1]} columns; feature {j} needs {n_edges[j] + 2}"
            )


def _check_rows(X: Any, need: int) -> None:
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be a numpy array, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got {X.ndim}-D")
    if X.shape[1] < need:
        raise ValueError(f"X has {X.shape[1]} columns; the spec reads column {need - 1}")
    if X.dtype not in (np.float32, np.float64):
        raise ValueError(f"X must be float32 or float64, got {X.dtype}")


def _bin_rows(
    X: NDArray[np.floating[Any]],
    cols: NDArray[np.int32],
    edges: NDArray[np.float64],
    n_edges: NDArray[np.int32],
    ref_min: NDArray[np.float64],
    ref_max: NDArray[np.float64],
    counts: NDArray[np.int64],
    out_low: NDArray[np.int64],
    out_high: NDArray[np.int64],
    n_finite: NDArray[np.int64],
    sums: NDArray[np.float64],
    sumsq: NDArray[np.float64],
) -> None:
    n, f = X.shape[0], cols.shape[0]
    if n == 0 or f == 0:
        return
    n_bins = counts.shape[1]
    e_max = edges.shape[1]
    used = np.arange(e_max) < n_edges[:, None]  # [f, E]: the padding is never compared
    offsets = np.arange(f, dtype=np.int64) * n_bins
    chunk = max(1, _CHUNK_ELEMENTS // max(1, f * e_max))
    for start in range(0, n, chunk):
        x = X[start : start + chunk][:, cols].astype(np.float64)  # [r, f]
        nan = np.isnan(x)
        below = ((edges[None, :, :] <= x[:, :, None]) & used[None, :, :]).sum(axis=2)
        bins = np.where(nan, n_bins - 1, below) + offsets
        counts += np.bincount(bins.ravel(), minlength=f * n_bins).reshape(f, n_bins)
        low = x < ref_min
        out_low += low.sum(axis=0)
        out_high += ((x > ref_max) & ~low).sum(axis=0)  # the kernel's if/elif
        finite = np.isfinite(x)
        n_finite += finite.sum(axis=0)
        xf = np.where(finite, x, 0.0)
        sums += xf.sum(axis=0)
        sumsq += (xf * xf).sum(axis=0)


def bin_rows(
    X: NDArray[np.float32] | NDArray[np.float64],
    cols: NDArray[np.int32],
    edges: NDArray[np.float64],
    n_edges: NDArray[np.int32],
    ref_min: NDArray[np.float64],
    ref_max: NDArray[np.float64],
    counts: NDArray[np.int64],
    out_low: NDArray[np.int64],
    out_high: NDArray[np.int64],
    n_finite: NDArray[np.int64],
    sums: NDArray[np.float64],
    sumsq: NDArray[np.float64],
) -> None:
    """Add the rows of ``X`` (2-D float32 or float64) to the counts, range counts and moments."""
    need = _check_spec(cols, edges, n_edges, ref_min, ref_max)
    _check_out(n_edges, counts, out_low, out_high, n_finite, sums, sumsq)
    _check_rows(X, need)
    _bin_rows(
        X, cols, edges, n_edges, ref_min, ref_max, counts, out_low, out_high, n_finite, sums, sumsq
    )


def bin_values(
    values: NDArray[np.float64],
    levels: NDArray[np.float64],
    codes: NDArray[np.int64],
    counts: NDArray[np.int64],
) -> None:
    """Count numeric values by level: equal to ``levels[k]`` → bin ``codes[k]``, equal to
    none → bin K ("other"), NaN → missing (last column)."""
    if not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy array, got {type(values).__name__}")
    if values.dtype != np.float64 or values.ndim != 1:
        raise ValueError(f"values must be a 1-D float64 array, got {values.ndim}-D {values.dtype}")
    _require(levels, "levels", np.float64, 1, writable=False)
    _require(codes, "codes", np.int64, 1, writable=False)
    _require(counts, "counts", np.int64, 1, writable=True)
    k = levels.shape[0]
    if codes.shape[0] != k:
        raise ValueError("levels and codes must have the same length")
    if k + 2 > counts.shape[0]:
        raise ValueError(f"{k} levels do not fit counts with {counts.shape[0]} columns")
    for j in range(k):
        if not 0 <= codes[j] < k:
            raise ValueError(f"codes[{j}] = {codes[j]} is not a level code in 0..{k - 1}")
    if values.shape[0] == 0:
        return
    nan = np.isnan(values)
    if k:
        pos = np.minimum(np.searchsorted(levels, values), k - 1)
        bins = np.where(levels[pos] == values, codes[pos], k)
    else:
        bins = np.full(values.shape, k, dtype=np.int64)
    bins[nan] = counts.shape[0] - 1
    counts += np.bincount(bins, minlength=counts.shape[0])


def bin_codes(
    codes: NDArray[np.int64], n_levels: NDArray[np.int32], counts: NDArray[np.int64]
) -> None:
    """Add level codes to the counts: < 0 → missing (last column), >= n_levels[j] → "other"."""
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"codes must be a numpy array, got {type(codes).__name__}")
    if codes.dtype != np.int64 or codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D int64 array, got {codes.ndim}-D {codes.dtype}")
    _require(n_levels, "n_levels", np.int32, 1, writable=False)
    _require(counts, "counts", np.int64, 2, writable=True)
    k = codes.shape[1]
    if n_levels.shape[0] != k or counts.shape[0] != k:
        raise ValueError("codes, n_levels and counts must agree on the feature count")
    n_bins = counts.shape[1]
    for j in range(k):
        if n_levels[j] < 0 or n_levels[j] + 2 > n_bins:
            raise ValueError(
                f"n_levels[{j}] = {n_levels[j]} does not fit counts with {n_bins} columns"
            )
    if codes.shape[0] == 0 or k == 0:
        return
    bins = np.where(codes < 0, n_bins - 1, np.minimum(codes, n_levels.astype(np.int64)))
    bins += np.arange(k, dtype=np.int64) * n_bins
    counts += np.bincount(bins.ravel(), minlength=k * n_bins).reshape(k, n_bins)


class RowBinner:
    """A numeric binning spec bound to one set of outputs (the compiled module's fast path)."""

    def __init__(
        self,
        cols: NDArray[np.int32],
        edges: NDArray[np.float64],
        n_edges: NDArray[np.int32],
        ref_min: NDArray[np.float64],
        ref_max: NDArray[np.float64],
    ) -> None:
        self._need = _check_spec(cols, edges, n_edges, ref_min, ref_max)
        self._spec = (cols, edges, n_edges, ref_min, ref_max)
        self._out: tuple[NDArray[Any], ...] | None = None

    def bind(
        self,
        counts: NDArray[np.int64],
        out_low: NDArray[np.int64],
        out_high: NDArray[np.int64],
        n_finite: NDArray[np.int64],
        sums: NDArray[np.float64],
        sumsq: NDArray[np.float64],
    ) -> None:
        """Point ``add`` at these outputs (a time bucket's arrays)."""
        _check_out(self._spec[2], counts, out_low, out_high, n_finite, sums, sumsq)
        self._out = (counts, out_low, out_high, n_finite, sums, sumsq)

    def add(self, X: NDArray[np.float32] | NDArray[np.float64]) -> None:
        """Add the rows of ``X`` (2-D float32 or float64) to the bound outputs."""
        if self._out is None:
            raise RuntimeError("RowBinner.add called before bind")
        _check_rows(X, self._need)
        _bin_rows(X, *self._spec, *self._out)


class RowQueue:
    """Rows of a few tensors copied into buffers (see ``_kernel.pyx``): the same checks,
    with numpy assignments for the copies."""

    def __init__(self, buffers: list[NDArray[Any]], positions: list[int]) -> None:
        if len(positions) != len(buffers) - 1:
            raise ValueError("one position for every buffer after the first")
        capacity = -1
        for b in buffers:
            if not isinstance(b, np.ndarray) or not b.flags.c_contiguous:
                raise ValueError("buffers must be C-contiguous numpy arrays")
            if b.ndim not in (1, 2) or (capacity != -1 and b.shape[0] != capacity):
                raise ValueError("buffers must be 1-D or 2-D, with the same number of rows")
            capacity = b.shape[0]
        self._buffers = list(buffers)
        self._positions = [int(p) for p in positions]
        self._capacity = max(capacity, 0)
        self.rows = 0

    @staticmethod
    def _fits(a: Any, buf: NDArray[Any]) -> int:
        if type(a) is not np.ndarray or a.dtype != buf.dtype or not a.flags.c_contiguous:
            return -1
        if a.ndim != buf.ndim or (buf.ndim == 2 and a.shape[1] != buf.shape[1]):
            return -1
        return int(a.shape[0])

    def push(self, first: Any, rest: Any) -> int:
        arrays = [first, *(rest[p] for p in self._positions)]
        n = self._fits(first, self._buffers[0])
        if n < 0 or self.rows + n > self._capacity:
            return -1
        if any(self._fits(a, b) != n for a, b in zip(arrays[1:], self._buffers[1:], strict=True)):
            return -1
        for a, b in zip(arrays, self._buffers, strict=True):
            b[self.rows : self.rows + n] = a
        self.rows += n
        return n

    def take(self) -> list[NDArray[Any]]:
        out = [b[: self.rows].copy() for b in self._buffers]
        self.rows = 0
        return out
