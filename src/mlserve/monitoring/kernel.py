"""Binning kernels behind one shim: the compiled module (``_kernel``) or its numpy twin.

The choice is made once, at import (yarl's ``_quoting.py`` pattern):
``MLSERVE_NO_EXTENSIONS=1`` forces the numpy twin; otherwise the compiled module is used
when it imports, and the twin with a logged warning when it does not. ``IMPLEMENTATION``
says which one runs (``"cython"`` or ``"numpy"``). The bin layout both keep, and what the
kernels and the wrappers here do, are set out in the comment above ``pad_edges``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

__all__ = [
    "IMPLEMENTATION",
    "LINEAR_MAX",
    "BinCounts",
    "RowBinner",
    "RowQueue",
    "bin_codes",
    "bin_rows",
    "bin_values",
    "count_codes",
    "count_rows",
    "pad_edges",
]

NO_EXTENSIONS = os.environ.get("MLSERVE_NO_EXTENSIONS") == "1"

IMPLEMENTATION = "numpy"
if not NO_EXTENSIONS:
    try:
        from ._kernel import LINEAR_MAX, RowBinner, RowQueue, bin_codes, bin_rows, bin_values

        IMPLEMENTATION = "cython"
    except ImportError as exc:  # pragma: no cover - a build without the extension
        logger.warning("compiled binning kernel unavailable (%s); using the numpy twin", exc)
if IMPLEMENTATION == "numpy":
    # Same signatures (see _kernel.pyi); RowBinner and RowQueue are different class objects.
    from ._kernel_py import (  # type: ignore[assignment]
        LINEAR_MAX,
        RowBinner,
        RowQueue,
        bin_codes,
        bin_rows,
        bin_values,
    )


@dataclass(frozen=True, eq=False)
class BinCounts:
    """Per-feature bin counts, range counts and moments: what the kernel accumulates.

    Arrays are updated in place by the kernel; counts from several time buckets, workers or
    replicas combine by addition (``a + b``), exactly for the integer arrays.
    """

    counts: NDArray[np.int64]  # [f, B]: value bins, then the missing bin in the last column
    out_low: NDArray[np.int64]  # [f]: values below the reference minimum
    out_high: NDArray[np.int64]  # [f]: values above the reference maximum
    n_finite: NDArray[np.int64]  # [f]: finite values (those in sums and sumsq)
    sums: NDArray[np.float64]  # [f]
    sumsq: NDArray[np.float64]  # [f]

    @classmethod
    def zeros(cls, n_features: int, n_bins: int) -> BinCounts:
        """Zeroed arrays for ``n_features`` features of ``n_bins`` bins (missing included)."""
        if n_features < 0 or n_bins < 2:
            raise ValueError(f"need n_features >= 0 and n_bins >= 2, got {n_features}, {n_bins}")
        return cls(
            counts=np.zeros((n_features, n_bins), dtype=np.int64),
            out_low=np.zeros(n_features, dtype=np.int64),
            out_high=np.zeros(n_features, dtype=np.int64),
            n_finite=np.zeros(n_features, dtype=np.int64),
            sums=np.zeros(n_features, dtype=np.float64),
            sumsq=np.zeros(n_features, dtype=np.float64),
        )

    @property
    def n_features(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[1])

    @property
    def missing(self) -> NDArray[np.int64]:
        """Per-feature missing (NaN) counts: a view of the last column."""
        return self.counts[:, -1]

    @property
    def totals(self) -> NDArray[np.int64]:
        """Per-feature counted values (rows), missing included."""
        totals: NDArray[np.int64] = self.counts.sum(axis=1)
        return totals

    def arrays(self) -> tuple[NDArray[Any], ...]:
        """The six arrays, in the kernel's argument order."""
        return (self.counts, self.out_low, self.out_high, self.n_finite, self.sums, self.sumsq)

    def clear(self) -> None:
        """Zero every array in place."""
        for a in self.arrays():
            a.fill(0)

    def copy(self) -> BinCounts:
        return BinCounts(*(a.copy() for a in self.arrays()))

    def add_(self, other: BinCounts) -> None:
        """Add ``other`` into these arrays in place."""
        self._check_compatible(other)
        for mine, theirs in zip(self.arrays(), other.arrays(), strict=True):
            mine += theirs

    def __add__(self, other: BinCounts) -> BinCounts:
        if not isinstance(other, BinCounts):
            return NotImplemented
        self._check_compatible(other)
        return BinCounts(*(a + b for a, b in zip(self.arrays(), other.arrays(), strict=True)))

    def _check_compatible(self, other: BinCounts) -> None:
        if self.counts.shape != other.counts.shape:
            raise ValueError(
                f"cannot combine counts of shape {self.counts.shape} and {other.counts.shape}"
            )


# Bin layout, the contract both implementations keep. A numeric feature ``j`` has
# ``n_edges[j]`` strictly increasing finite edges (rows of ``edges`` are padded with +inf);
# a value ``x`` falls in bin ``#{edges ≤ x}``, so bins ``0 .. n_edges[j]`` are
# ``(-inf, e0), [e0, e1), …, [e_last, +inf]``. NaN goes to the missing bin, the last column
# of ``counts`` (``B - 1``); ``B = E_max + 2`` fits the widest feature. ``x < ref_min`` counts
# as out of range low, ``x > ref_max`` as high; finite values add to ``n_finite``, ``sums``
# and ``sumsq``, so ±Inf land in the outer bins, count as out of range and stay out of the
# moments. A categorical feature is counted from level codes: code ``c`` in
# ``0 .. n_levels[j]-1`` is bin ``c``, a code ≥ ``n_levels[j]`` is bin ``n_levels[j]``
# ("other"), a negative code is the missing bin. ``bin_values`` counts a categorical feature
# with numeric levels from its values directly (equal to a level: its bin; to none: "other";
# NaN: missing), without codes.
#
# Kernels add to their outputs and never allocate; the wrappers here (``count_rows``,
# ``count_codes``) validate and convert the inputs and allocate outputs when none are given.
def pad_edges(edges: Sequence[ArrayLike]) -> tuple[NDArray[np.float64], NDArray[np.int32]]:
    """Per-feature edge lists → the kernel's ``edges[f, E_max]`` (+inf padded) and ``n_edges``.

    Each list must be finite and strictly increasing.
    """
    rows = [np.asarray(e, dtype=np.float64).reshape(-1) for e in edges]
    for j, row in enumerate(rows):
        if not np.all(np.isfinite(row)):
            raise ValueError(f"edges of feature {j} must be finite")
        if np.any(np.diff(row) <= 0):
            raise ValueError(f"edges of feature {j} must be strictly increasing")
    e_max = max((r.size for r in rows), default=0)
    out = np.full((len(rows), e_max), np.inf, dtype=np.float64)
    for j, row in enumerate(rows):
        out[j, : row.size] = row
    return out, np.array([r.size for r in rows], dtype=np.int32)


def count_rows(
    X: ArrayLike,
    edges: NDArray[np.float64],
    n_edges: ArrayLike,
    ref_min: ArrayLike,
    ref_max: ArrayLike,
    *,
    cols: ArrayLike | None = None,
    out: BinCounts | None = None,
) -> BinCounts:
    """Bin the rows of 2-D ``X`` (feature ``j`` = column ``cols[j]``, default ``j``) into ``out``.

    ``X`` of another numeric dtype is converted to float64; ``out`` is allocated with
    ``B = edges.shape[1] + 2`` columns when not given, and returned.
    """
    x = np.asarray(X)
    if x.ndim != 2:
        raise ValueError(f"X must be 2-D, got {x.ndim}-D")
    if x.dtype != np.float32 and x.dtype != np.float64:
        x = x.astype(np.float64)
    e = np.ascontiguousarray(edges, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"edges must be 2-D, got {e.ndim}-D")
    f = e.shape[0]
    c = np.arange(f, dtype=np.int32) if cols is None else np.ascontiguousarray(cols, np.int32)
    if c.shape != (f,):
        raise ValueError(f"cols must have one entry per feature ({f}), got shape {c.shape}")
    if int(c.max(initial=-1)) >= x.shape[1]:
        raise ValueError(f"X has {x.shape[1]} columns; cols reads column {int(c.max())}")
    if out is None:
        out = BinCounts.zeros(f, e.shape[1] + 2)
    bin_rows(
        x,
        c,
        e,
        np.ascontiguousarray(n_edges, dtype=np.int32),
        np.ascontiguousarray(ref_min, dtype=np.float64),
        np.ascontiguousarray(ref_max, dtype=np.float64),
        *out.arrays(),
    )
    return out


def count_codes(
    codes: ArrayLike, n_levels: ArrayLike, *, out: NDArray[np.int64] | None = None
) -> NDArray[np.int64]:
    """Count 2-D level ``codes`` (feature ``j`` = column ``j``) into ``out[k, B]``.

    ``out`` is allocated with ``B = max(n_levels) + 2`` columns when not given, and returned.
    """
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D, got {c.ndim}-D")
    if c.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got {c.dtype}")
    c = c.astype(np.int64, copy=False)
    nl = np.ascontiguousarray(n_levels, dtype=np.int32)
    if out is None:
        out = np.zeros((nl.shape[0], int(nl.max(initial=0)) + 2), dtype=np.int64)
    result: NDArray[np.int64] = out
    bin_codes(c, nl, result)
    return result
