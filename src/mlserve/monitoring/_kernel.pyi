"""Type stub for the compiled binning kernels (``_kernel.pyx``); the numpy twin matches it."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

LINEAR_MAX: int

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
) -> None: ...
def bin_codes(
    codes: NDArray[np.int64], n_levels: NDArray[np.int32], counts: NDArray[np.int64]
) -> None: ...
def bin_values(
    values: NDArray[np.float64],
    levels: NDArray[np.float64],
    codes: NDArray[np.int64],
    counts: NDArray[np.int64],
) -> None: ...

class RowBinner:
    def __init__(
        self,
        cols: NDArray[np.int32],
        edges: NDArray[np.float64],
        n_edges: NDArray[np.int32],
        ref_min: NDArray[np.float64],
        ref_max: NDArray[np.float64],
    ) -> None: ...
    def bind(
        self,
        counts: NDArray[np.int64],
        out_low: NDArray[np.int64],
        out_high: NDArray[np.int64],
        n_finite: NDArray[np.int64],
        sums: NDArray[np.float64],
        sumsq: NDArray[np.float64],
    ) -> None: ...
    def add(self, X: NDArray[np.float32] | NDArray[np.float64]) -> None: ...

class RowQueue:
    rows: int
    def __init__(self, buffers: list[NDArray[Any]], positions: list[int]) -> None: ...
    def push(self, first: Any, rest: Any) -> int: ...
    def take(self) -> list[NDArray[Any]]: ...
