# cython: language_level=3
"""Compiled binning kernels: rows → bin counts, out-of-range counts and moments.

Plain loops over typed memoryviews, ``nogil``, no allocation and no Python objects inside
the loops. Every output is allocated by the caller and is *added to*, so one set of arrays
accumulates many calls (a time bucket). The numpy twin ``_kernel_py`` computes the same
numbers; ``kernel.py`` chooses between them once, at import, and documents the bin layout.

The ``def`` entry points check shapes and index ranges (O(features), before the loop) so a
bad argument raises ``ValueError`` instead of writing out of bounds; dtypes and layouts are
checked by the memoryview conversions.
"""

cimport numpy as cnp
from cython cimport floating
from libc.math cimport isinf, isnan
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy

cnp.import_array()

cdef enum:
    _LINEAR_MAX = 16

# Up to this many edges a feature's bin is a branchless count; beyond it, a binary search.
LINEAR_MAX = _LINEAR_MAX


cdef inline Py_ssize_t _count_le(
    const double[:, ::1] edges, Py_ssize_t j, Py_ssize_t ne, double x
) noexcept nogil:
    """How many of the first ``ne`` edges of feature ``j`` are ≤ x (edges strictly increasing)."""
    cdef Py_ssize_t k, lo, hi, mid
    cdef Py_ssize_t c = 0
    if ne <= _LINEAR_MAX:
        for k in range(ne):
            c += edges[j, k] <= x
        return c
    lo = 0
    hi = ne
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[j, mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef void _bin_rows(
    const floating[:, :] X,         # in  [n, c]  rows; feature j is column cols[j]
    const int32_t[::1] cols,        # in  [f]
    const double[:, ::1] edges,     # in  [f, E]  first n_edges[j] strictly increasing
    const int32_t[::1] n_edges,     # in  [f]
    const double[::1] ref_min,      # in  [f]
    const double[::1] ref_max,      # in  [f]
    int64_t[:, ::1] counts,         # out [f, B]  bins 0..n_edges[j]; column B-1: missing
    int64_t[::1] out_low,           # out [f]     x < ref_min[j]
    int64_t[::1] out_high,          # out [f]     x > ref_max[j]
    int64_t[::1] n_finite,          # out [f]     finite values (those summed)
    double[::1] sums,               # out [f]     sum of finite values
    double[::1] sumsq,              # out [f]     sum of their squares
) noexcept nogil:
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t f = cols.shape[0]
    cdef Py_ssize_t missing = counts.shape[1] - 1
    cdef Py_ssize_t i, j, col, ne
    cdef double x, lo_ref, hi_ref, s, ss
    cdef int64_t low, high, fin
    for j in range(f):
        col = cols[j]
        ne = n_edges[j]
        lo_ref = ref_min[j]
        hi_ref = ref_max[j]
        low = 0
        high = 0
        fin = 0
        s = 0.0
        ss = 0.0
        for i in range(n):
            x = X[i, col]
            if isnan(x):
                counts[j, missing] += 1
                continue
            counts[j, _count_le(edges, j, ne, x)] += 1
            if x < lo_ref:
                low += 1
            elif x > hi_ref:
                high += 1
            if not isinf(x):
                fin += 1
                s += x
                ss += x * x
        out_low[j] += low
        out_high[j] += high
        n_finite[j] += fin
        sums[j] += s
        sumsq[j] += ss


cdef void _bin_codes(
    const int64_t[:, :] codes,      # in  [n, k]  level codes; < 0: missing
    const int32_t[::1] n_levels,    # in  [k]     codes >= n_levels[j]: "other"
    int64_t[:, ::1] counts,         # out [k, B]  bins 0..n_levels[j]; column B-1: missing
) noexcept nogil:
    cdef Py_ssize_t n = codes.shape[0]
    cdef Py_ssize_t k = codes.shape[1]
    cdef Py_ssize_t missing = counts.shape[1] - 1
    cdef Py_ssize_t i, j
    cdef int64_t c, nl
    for j in range(k):
        nl = n_levels[j]
        for i in range(n):
            c = codes[i, j]
            if c < 0:
                counts[j, missing] += 1
            elif c >= nl:
                counts[j, nl] += 1
            else:
                counts[j, c] += 1


cdef Py_ssize_t _check_spec(
    const int32_t[::1] cols,
    const double[:, ::1] edges,
    const int32_t[::1] n_edges,
    const double[::1] ref_min,
    const double[::1] ref_max,
) except -1:
    """Validate the spec; return the number of columns X needs (max(cols) + 1)."""
    cdef Py_ssize_t f = cols.shape[0]
    cdef Py_ssize_t j
    cdef Py_ssize_t need = 0
    if (
        edges.shape[0] != f or n_edges.shape[0] != f
        or ref_min.shape[0] != f or ref_max.shape[0] != f
    ):
        raise ValueError("cols, edges, n_edges, ref_min and ref_max must have one row per feature")
    for j in range(f):
        if cols[j] < 0:
            raise ValueError(f"cols[{j}] = {cols[j]} is negative")
        if cols[j] + 1 > need:
            need = cols[j] + 1
        if n_edges[j] < 0 or n_edges[j] > edges.shape[1]:
            raise ValueError(f"n_edges[{j}] = {n_edges[j]} is outside 0..{edges.shape[1]}")
    return need


cdef int _check_out(
    const int32_t[::1] n_edges,
    int64_t[:, ::1] counts,
    int64_t[::1] out_low,
    int64_t[::1] out_high,
    int64_t[::1] n_finite,
    double[::1] sums,
    double[::1] sumsq,
) except -1:
    cdef Py_ssize_t f = n_edges.shape[0]
    cdef Py_ssize_t j
    if (
        counts.shape[0] != f or out_low.shape[0] != f or out_high.shape[0] != f
        or n_finite.shape[0] != f or sums.shape[0] != f or sumsq.shape[0] != f
    ):
        raise ValueError("every output must have one row per feature")
    for j in range(f):
        if n_edges[j] + 2 > counts.shape[1]:
            raise ValueError(
                f"counts has {counts.shape[1]} columns; feature {j} needs {n_edges[j] + 2}"
            )
    return 0


cdef int _check_rows(object X, Py_ssize_t need) except -1:
    if not isinstance(X, cnp.ndarray):
        raise TypeError(f"X must be a numpy array, got {type(X).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>X
    if cnp.PyArray_NDIM(arr) != 2:
        raise ValueError(f"X must be 2-D, got {cnp.PyArray_NDIM(arr)}-D")
    if cnp.PyArray_DIMS(arr)[1] < need:
        raise ValueError(f"X has {cnp.PyArray_DIMS(arr)[1]} columns; the spec reads column {need - 1}")
    if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT32:
        return 32
    if cnp.PyArray_TYPE(arr) == cnp.NPY_FLOAT64:
        return 64
    raise ValueError(f"X must be float32 or float64, got {arr.dtype}")


def bin_rows(
    X,
    const int32_t[::1] cols,
    const double[:, ::1] edges,
    const int32_t[::1] n_edges,
    const double[::1] ref_min,
    const double[::1] ref_max,
    int64_t[:, ::1] counts,
    int64_t[::1] out_low,
    int64_t[::1] out_high,
    int64_t[::1] n_finite,
    double[::1] sums,
    double[::1] sumsq,
):
    """Add the rows of ``X`` (2-D float32 or float64) to the counts, range counts and moments."""
    cdef Py_ssize_t need = _check_spec(cols, edges, n_edges, ref_min, ref_max)
    _check_out(n_edges, counts, out_low, out_high, n_finite, sums, sumsq)
    cdef const float[:, :] xf
    cdef const double[:, :] xd
    if _check_rows(X, need) == 32:
        xf = X
        with nogil:
            _bin_rows(xf, cols, edges, n_edges, ref_min, ref_max,
                      counts, out_low, out_high, n_finite, sums, sumsq)
    else:
        xd = X
        with nogil:
            _bin_rows(xd, cols, edges, n_edges, ref_min, ref_max,
                      counts, out_low, out_high, n_finite, sums, sumsq)


def bin_codes(const int64_t[:, :] codes, const int32_t[::1] n_levels, int64_t[:, ::1] counts):
    """Add level codes to the counts: < 0 → missing (last column), >= n_levels[j] → "other"."""
    cdef Py_ssize_t k = codes.shape[1]
    cdef Py_ssize_t j
    if n_levels.shape[0] != k or counts.shape[0] != k:
        raise ValueError("codes, n_levels and counts must agree on the feature count")
    for j in range(k):
        if n_levels[j] < 0 or n_levels[j] + 2 > counts.shape[1]:
            raise ValueError(
                f"n_levels[{j}] = {n_levels[j]} does not fit counts with {counts.shape[1]} columns"
            )
    with nogil:
        _bin_codes(codes, n_levels, counts)


def bin_values(
    const double[:] values,         # in  [n]     one categorical feature's values
    const double[::1] levels,       # in  [K]     its numeric levels, strictly increasing
    const int64_t[::1] codes,       # in  [K]     the level code of each sorted level
    int64_t[::1] counts,            # out [B]     bins 0..K; column B-1: missing
):
    """Count numeric values by level: equal to ``levels[k]`` → bin ``codes[k]``, equal to
    none → bin K ("other"), NaN → missing (last column). A binary search per value."""
    cdef Py_ssize_t n = values.shape[0]
    cdef Py_ssize_t k = levels.shape[0]
    cdef Py_ssize_t missing = counts.shape[0] - 1
    cdef Py_ssize_t i, lo, hi, mid, j
    cdef double x
    if codes.shape[0] != k:
        raise ValueError("levels and codes must have the same length")
    if k + 2 > counts.shape[0]:
        raise ValueError(f"{k} levels do not fit counts with {counts.shape[0]} columns")
    for j in range(k):
        if codes[j] < 0 or codes[j] >= k:
            raise ValueError(f"codes[{j}] = {codes[j]} is not a level code in 0..{k - 1}")
    with nogil:
        for i in range(n):
            x = values[i]
            if isnan(x):
                counts[missing] += 1
                continue
            lo = 0
            hi = k
            while lo < hi:
                mid = (lo + hi) >> 1
                if levels[mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < k and levels[lo] == x:
                counts[codes[lo]] += 1
            else:
                counts[k] += 1


cdef class RowBinner:
    """A numeric binning spec bound to one set of outputs: the per-request fast path.

    The spec and the outputs become memoryviews once (``__init__``, ``bind``); ``add(X)``
    converts only ``X``, so a call costs little more than the loop itself.
    """

    cdef const int32_t[::1] _cols
    cdef const double[:, ::1] _edges
    cdef const int32_t[::1] _n_edges
    cdef const double[::1] _ref_min
    cdef const double[::1] _ref_max
    cdef int64_t[:, ::1] _counts
    cdef int64_t[::1] _out_low
    cdef int64_t[::1] _out_high
    cdef int64_t[::1] _n_finite
    cdef double[::1] _sums
    cdef double[::1] _sumsq
    cdef Py_ssize_t _need
    cdef bint _bound

    def __init__(self, cols, edges, n_edges, ref_min, ref_max):
        self._cols = cols
        self._edges = edges
        self._n_edges = n_edges
        self._ref_min = ref_min
        self._ref_max = ref_max
        self._need = _check_spec(self._cols, self._edges, self._n_edges, self._ref_min, self._ref_max)
        self._bound = False

    def bind(self, counts, out_low, out_high, n_finite, sums, sumsq):
        """Point ``add`` at these outputs (a time bucket's arrays)."""
        cdef int64_t[:, ::1] c = counts
        cdef int64_t[::1] lo = out_low
        cdef int64_t[::1] hi = out_high
        cdef int64_t[::1] fin = n_finite
        cdef double[::1] s = sums
        cdef double[::1] ss = sumsq
        _check_out(self._n_edges, c, lo, hi, fin, s, ss)
        self._counts = c
        self._out_low = lo
        self._out_high = hi
        self._n_finite = fin
        self._sums = s
        self._sumsq = ss
        self._bound = True

    def add(self, X):
        """Add the rows of ``X`` (2-D float32 or float64) to the bound outputs."""
        cdef const float[:, :] xf
        cdef const double[:, :] xd
        if not self._bound:
            raise RuntimeError("RowBinner.add called before bind")
        if _check_rows(X, self._need) == 32:
            xf = X
            with nogil:
                _bin_rows(xf, self._cols, self._edges, self._n_edges, self._ref_min,
                          self._ref_max, self._counts, self._out_low, self._out_high,
                          self._n_finite, self._sums, self._sumsq)
        else:
            xd = X
            with nogil:
                _bin_rows(xd, self._cols, self._edges, self._n_edges, self._ref_min,
                          self._ref_max, self._counts, self._out_low, self._out_high,
                          self._n_finite, self._sums, self._sumsq)


cdef class RowQueue:
    """Rows of a few tensors (a request's input and outputs) copied into buffers, so a
    request's arrays need not be kept until they are binned.

    ``buffers``: one C-contiguous ``[capacity, width]`` array a tensor (``[capacity]`` for a
    1-D one), in the dtype its arrays come in. ``push(first, rest)`` takes ``first`` and
    ``rest[positions[i]]`` for the others; it copies all of them and returns their rows, or
    copies nothing and returns -1 when one is not a C-contiguous array of that dtype and
    width, their rows differ, or the rows would not fit. ``take()`` returns copies of the
    rows held, and empties the queue.
    """

    cdef list _buffers
    cdef list _positions
    cdef Py_ssize_t _capacity
    cdef public Py_ssize_t rows

    def __init__(self, buffers, positions):
        if len(positions) != len(buffers) - 1:
            raise ValueError("one position for every buffer after the first")
        capacity = -1
        for b in buffers:
            if not isinstance(b, cnp.ndarray) or not cnp.PyArray_IS_C_CONTIGUOUS(b):
                raise ValueError("buffers must be C-contiguous numpy arrays")
            if b.ndim not in (1, 2) or (capacity != -1 and b.shape[0] != capacity):
                raise ValueError("buffers must be 1-D or 2-D, with the same number of rows")
            capacity = b.shape[0]
        self._buffers = list(buffers)
        self._positions = [int(p) for p in positions]
        self._capacity = max(capacity, 0)
        self.rows = 0

    cdef Py_ssize_t _fits(self, object a, cnp.ndarray buf) except -2:
        """Rows of ``a`` when it can be copied into ``buf``; -1 otherwise."""
        if type(a) is not cnp.ndarray:
            return -1
        cdef cnp.ndarray arr = <cnp.ndarray>a
        if (
            # Equivalent, not equal, type numbers: onnxruntime's int64 is NPY_LONGLONG.
            not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(arr), cnp.PyArray_TYPE(buf))
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or cnp.PyArray_NDIM(arr) != cnp.PyArray_NDIM(buf)
        ):
            return -1
        if cnp.PyArray_NDIM(buf) == 2 and cnp.PyArray_DIM(arr, 1) != cnp.PyArray_DIM(buf, 1):
            return -1
        return cnp.PyArray_DIM(arr, 0)

    def push(self, first, rest):
        cdef Py_ssize_t i, n, k = len(self._buffers)
        cdef list arrays = [first]
        for i in range(k - 1):
            arrays.append(rest[<Py_ssize_t>self._positions[i]])
        n = self._fits(first, <cnp.ndarray>self._buffers[0])
        if n < 0 or self.rows + n > self._capacity:
            return -1
        for i in range(1, k):
            if self._fits(arrays[i], <cnp.ndarray>self._buffers[i]) != n:
                return -1
        cdef cnp.ndarray buf, arr
        cdef Py_ssize_t row_bytes
        for i in range(k):
            buf = <cnp.ndarray>self._buffers[i]
            arr = <cnp.ndarray>arrays[i]
            row_bytes = cnp.PyArray_NBYTES(buf) // self._capacity if self._capacity else 0
            memcpy(
                <char*>cnp.PyArray_DATA(buf) + self.rows * row_bytes,
                cnp.PyArray_DATA(arr),
                n * row_bytes,
            )
        self.rows += n
        return n

    def take(self):
        out = [b[: self.rows].copy() for b in self._buffers]
        self.rows = 0
        return out
