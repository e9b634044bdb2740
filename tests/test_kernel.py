"""The binning kernels: compiled module and numpy twin against a plain-Python oracle.

Every test that touches a kernel runs on both implementations (imported directly, whatever
``MLSERVE_NO_EXTENSIONS`` says), and ``test_compiled_kernel_loaded`` fails when the shim fell
back to the twin on a build that should have the compiled module (yarl's
``test_quoting_c_loaded``).
"""

from __future__ import annotations

import bisect
import math
import os

import numpy as np
import pytest

from mlserve.monitoring import _kernel_py, kernel
from mlserve.monitoring.kernel import BinCounts, count_codes, count_rows, pad_edges

try:
    from mlserve.monitoring import _kernel as _compiled
except ImportError:  # pragma: no cover - exercised only on a build without the extension
    _compiled = None

IMPLS = [
    pytest.param(_kernel_py, id="numpy"),
    pytest.param(
        _compiled,
        id="cython",
        marks=pytest.mark.skipif(_compiled is None, reason="compiled kernel not built"),
    ),
]


def test_compiled_kernel_loaded():
    if os.environ.get("MLSERVE_NO_EXTENSIONS") != "1":
        assert kernel.IMPLEMENTATION == "cython"
        assert kernel.bin_rows is _compiled.bin_rows
        assert kernel.bin_values is _compiled.bin_values
        assert kernel.RowQueue is _compiled.RowQueue
    else:
        assert kernel.IMPLEMENTATION == "numpy"
        assert kernel.bin_rows is _kernel_py.bin_rows


# ---------------------------------------------------------------------------------------------
# oracle: one value at a time, bisect for the bin


def oracle(X, cols, edge_lists, ref_min, ref_max, n_bins):
    f = len(cols)
    counts = np.zeros((f, n_bins), dtype=np.int64)
    low, high, fin = (np.zeros(f, dtype=np.int64) for _ in range(3))
    sums, sumsq = np.zeros(f), np.zeros(f)
    for j, col in enumerate(cols):
        for i in range(X.shape[0]):
            x = float(X[i, col])
            if math.isnan(x):
                counts[j, n_bins - 1] += 1
                continue
            counts[j, bisect.bisect_right(list(edge_lists[j]), x)] += 1
            if x < ref_min[j]:
                low[j] += 1
            elif x > ref_max[j]:
                high[j] += 1
            if math.isfinite(x):
                fin[j] += 1
                sums[j] += x
                sumsq[j] += x * x
    return counts, low, high, fin, sums, sumsq


def make_case(rng, n, f, n_edges_each, dtype, *, n_cols=None, cols=None):
    """Random data with NaN, ±Inf and values exactly on (and next to) the edges."""
    n_cols = n_cols or f
    cols = np.arange(f, dtype=np.int32) if cols is None else np.asarray(cols, dtype=np.int32)
    edge_lists = []
    for ne in n_edges_each:
        e = np.unique(rng.standard_normal(ne).astype(dtype).astype(np.float64))
        edge_lists.append(e)
    X = rng.standard_normal((n, n_cols)).astype(dtype)
    for j, col in enumerate(cols):
        e = edge_lists[j].astype(dtype)
        if e.size:
            pick = rng.random(n) < 0.3  # exactly on an edge: ties
            X[pick, col] = rng.choice(e, pick.sum())
            near = rng.random(n) < 0.1  # one ulp either side of an edge
            side = rng.choice(e, near.sum())
            X[near, col] = np.nextafter(
                side, np.where(rng.random(near.sum()) < 0.5, -np.inf, np.inf)
            )
    specials = rng.random(X.shape)
    X[specials < 0.05] = np.nan
    X[(specials >= 0.05) & (specials < 0.07)] = np.inf
    X[(specials >= 0.07) & (specials < 0.09)] = -np.inf
    edges, n_edges = pad_edges(edge_lists)
    ref_min = np.array([-1.5 + 0.1 * j for j in range(f)])
    ref_max = np.array([1.5 - 0.1 * j for j in range(f)])
    return X, cols, edge_lists, edges, n_edges, ref_min, ref_max


def run_kernel(impl, X, cols, edges, n_edges, ref_min, ref_max, n_bins=None):
    out = BinCounts.zeros(len(cols), n_bins or edges.shape[1] + 2)
    ref_min, ref_max = np.asarray(ref_min, np.float64), np.asarray(ref_max, np.float64)
    impl.bin_rows(X, cols, edges, n_edges, ref_min, ref_max, *out.arrays())
    return out


def assert_matches(out, expected):
    counts, low, high, fin, sums, sumsq = expected
    np.testing.assert_array_equal(out.counts, counts)
    np.testing.assert_array_equal(out.out_low, low)
    np.testing.assert_array_equal(out.out_high, high)
    np.testing.assert_array_equal(out.n_finite, fin)
    np.testing.assert_allclose(out.sums, sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(out.sumsq, sumsq, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# bin_rows


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bin_rows_matches_oracle(impl, dtype, seed):
    rng = np.random.default_rng(seed)
    n_edges_each = [9, 0, 1, 4, 16, 17, 9]  # 16: last linear count; 17: binary search
    X, cols, lists, edges, n_edges, lo, hi = make_case(rng, 700, 7, n_edges_each, dtype)
    out = run_kernel(impl, X, cols, edges, n_edges, lo, hi)
    assert_matches(out, oracle(X, cols, lists, lo, hi, edges.shape[1] + 2))
    assert out.counts.sum() == X.shape[0] * 7


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_edges_each", [[40], [100, 3, 257]])
def test_bin_rows_many_edges_binary_search(impl, n_edges_each):
    assert max(n_edges_each) > impl.LINEAR_MAX
    rng = np.random.default_rng(5)
    f = len(n_edges_each)
    X, cols, lists, edges, n_edges, lo, hi = make_case(rng, 500, f, n_edges_each, np.float64)
    out = run_kernel(impl, X, cols, edges, n_edges, lo, hi)
    assert_matches(out, oracle(X, cols, lists, lo, hi, edges.shape[1] + 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_single_feature_single_row(impl):
    edges, n_edges = pad_edges([[0.0, 1.0, 2.0]])
    cols = np.array([0], dtype=np.int32)
    lo, hi = np.array([0.0]), np.array([2.0])
    for x, expected_bin in [(-0.5, 0), (0.0, 1), (0.5, 1), (1.0, 2), (2.0, 3), (7.0, 3)]:
        out = run_kernel(impl, np.array([[x]]), cols, edges, n_edges, lo, hi)
        assert out.counts.tolist() == [[int(b == expected_bin) for b in range(5)]]
        assert (out.out_low[0], out.out_high[0]) == (int(x < 0.0), int(x > 2.0))
        assert out.sums[0] == x and out.sumsq[0] == x * x and out.n_finite[0] == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_nan_and_inf(impl):
    edges, n_edges = pad_edges([[0.0, 1.0]])
    X = np.array([[np.nan], [np.inf], [-np.inf], [0.5]])
    out = run_kernel(impl, X, np.array([0], np.int32), edges, n_edges, np.zeros(1), np.ones(1))
    # -inf → bin 0, 0.5 → bin 1, +inf → bin 2 (outer bins; the +inf padding is not counted),
    # NaN → the missing column.
    assert out.counts.tolist() == [[1, 1, 1, 1]]
    assert (out.out_low[0], out.out_high[0]) == (1, 1)  # ±inf are out of range
    assert out.n_finite[0] == 1 and out.sums[0] == 0.5 and out.sumsq[0] == 0.25


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_nan_reference_bounds_count_no_range(impl):
    edges, n_edges = pad_edges([[]])  # a feature all-NaN in the reference: no edges, no bounds
    X = np.array([[1.0], [np.nan], [-3.0]])
    out = run_kernel(impl, X, np.array([0], np.int32), edges, n_edges, [np.nan], [np.nan])
    assert out.counts.tolist() == [[2, 1]]
    assert out.out_low[0] == 0 and out.out_high[0] == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bin_rows_empty_batch(impl, dtype):
    rng = np.random.default_rng(3)
    X, cols, _lists, edges, n_edges, lo, hi = make_case(rng, 0, 3, [4, 4, 4], dtype)
    out = run_kernel(impl, X, cols, edges, n_edges, lo, hi)
    assert not any(a.any() for a in out.arrays())


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_no_features(impl):
    edges, n_edges = pad_edges([])
    out = BinCounts.zeros(0, 2)
    impl.bin_rows(
        np.ones((3, 2)),
        np.zeros(0, np.int32),
        edges,
        n_edges,
        np.zeros(0),
        np.zeros(0),
        *out.arrays(),
    )
    assert out.counts.shape == (0, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_column_selection_and_strided_input(impl):
    rng = np.random.default_rng(11)
    cols = [4, 0, 2]
    X, cols_a, lists, edges, n_edges, lo, hi = make_case(
        rng, 400, 3, [5, 9, 20], np.float64, n_cols=6, cols=cols
    )
    expected = oracle(X, cols_a, lists, lo, hi, edges.shape[1] + 2)
    # The same rows through a Fortran-ordered copy and through a strided view.
    assert_matches(run_kernel(impl, np.asfortranarray(X), cols_a, edges, n_edges, lo, hi), expected)
    wide = np.empty((800, 6), dtype=X.dtype)
    wide[::2] = X
    assert_matches(run_kernel(impl, wide[::2], cols_a, edges, n_edges, lo, hi), expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_accumulates(impl):
    rng = np.random.default_rng(4)
    X, cols, _lists, edges, n_edges, lo, hi = make_case(rng, 300, 3, [9, 9, 9], np.float64)
    once = run_kernel(impl, X, cols, edges, n_edges, lo, hi)
    twice = BinCounts.zeros(3, edges.shape[1] + 2)
    for part in (X[:120], X[120:]):
        impl.bin_rows(part, cols, edges, n_edges, lo, hi, *twice.arrays())
    for a, b in zip(once.arrays()[:4], twice.arrays()[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(once.sums, twice.sums, rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_wider_counts_than_needed(impl):
    # Padding columns between the last value bin and the missing column stay zero.
    edges, n_edges = pad_edges([[0.0], [0.0, 1.0, 2.0]])
    X = np.array([[5.0, 5.0], [np.nan, np.nan], [-1.0, 1.5]])
    out = run_kernel(
        impl, X, np.array([0, 1], np.int32), edges, n_edges, [-9.0, -9.0], [9.0, 9.0], n_bins=7
    )
    assert out.counts.tolist() == [[1, 1, 0, 0, 0, 0, 1], [0, 0, 1, 1, 0, 0, 1]]


def test_both_implementations_agree_on_a_large_batch():
    if _compiled is None:
        pytest.skip("compiled kernel not built")
    rng = np.random.default_rng(99)
    X, cols, _lists, edges, n_edges, lo, hi = make_case(
        rng, 20_000, 20, [9] * 18 + [30, 0], np.float32
    )
    a = run_kernel(_kernel_py, X, cols, edges, n_edges, lo, hi)
    b = run_kernel(_compiled, X, cols, edges, n_edges, lo, hi)
    for x, y in zip(a.arrays()[:4], b.arrays()[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a.sums, b.sums, rtol=1e-10)
    np.testing.assert_allclose(a.sumsq, b.sumsq, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# argument checks: the same exception types from both implementations


def _good():
    edges, n_edges = pad_edges([[0.0, 1.0], [0.5]])
    return dict(
        X=np.zeros((2, 2)),
        cols=np.array([0, 1], np.int32),
        edges=edges,
        n_edges=n_edges,
        ref_min=np.zeros(2),
        ref_max=np.ones(2),
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("change", "exc"),
    [
        ({"X": np.zeros((2, 2), np.int64)}, ValueError),  # wrong dtype
        ({"X": np.zeros(2)}, ValueError),  # 1-D
        ({"X": [[0.0, 0.0]]}, TypeError),  # not an array
        ({"ref_max": [1.0, 1.0]}, TypeError),  # not an array
        ({"X": np.zeros((2, 1))}, ValueError),  # too few columns for cols
        ({"cols": np.array([0, -1], np.int32)}, ValueError),
        ({"cols": np.array([0, 1], np.int64)}, ValueError),  # wrong dtype
        ({"n_edges": np.array([3, 1], np.int32)}, ValueError),  # more than edges holds
        ({"ref_min": np.zeros(3)}, ValueError),  # wrong length
        ({"edges": np.zeros((2, 2), np.float32)}, ValueError),  # wrong dtype
    ],
)
def test_bin_rows_rejects_bad_arguments(impl, change, exc):
    args = {**_good(), **change}
    out = BinCounts.zeros(2, 4)
    with pytest.raises(exc):
        impl.bin_rows(*args.values(), *out.arrays())


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_rows_rejects_bad_outputs(impl):
    args = _good()
    with pytest.raises(ValueError):  # counts too narrow for 2 edges + missing
        impl.bin_rows(*args.values(), *BinCounts.zeros(2, 3).arrays())
    out = BinCounts.zeros(2, 4)
    with pytest.raises(ValueError):  # one output too short
        impl.bin_rows(*args.values(), *out.arrays()[:5], np.zeros(1))
    readonly = out.counts.copy()
    readonly.flags.writeable = False
    with pytest.raises(ValueError):
        impl.bin_rows(*args.values(), readonly, *out.arrays()[1:])
    with pytest.raises(ValueError):  # counts not C-contiguous
        impl.bin_rows(
            *args.values(), np.asfortranarray(np.zeros((2, 4), np.int64)), *out.arrays()[1:]
        )


# ---------------------------------------------------------------------------------------------
# RowBinner: the bound fast path


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_binner_matches_bin_rows(impl, dtype):
    rng = np.random.default_rng(8)
    X, cols, lists, edges, n_edges, lo, hi = make_case(rng, 250, 5, [9, 3, 0, 20, 9], dtype)
    expected = oracle(X, cols, lists, lo, hi, edges.shape[1] + 2)
    binner = impl.RowBinner(cols, edges, n_edges, lo, hi)
    out = BinCounts.zeros(5, edges.shape[1] + 2)
    binner.bind(*out.arrays())
    for i in range(X.shape[0]):  # one row at a time, as requests arrive
        binner.add(X[i : i + 1])
    assert_matches(out, expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_row_binner_rebind_and_errors(impl):
    args = _good()
    binner = impl.RowBinner(
        args["cols"], args["edges"], args["n_edges"], args["ref_min"], args["ref_max"]
    )
    with pytest.raises(RuntimeError):
        binner.add(np.zeros((1, 2)))
    first, second = BinCounts.zeros(2, 4), BinCounts.zeros(2, 4)
    binner.bind(*first.arrays())
    binner.add(np.array([[0.5, 0.7]]))
    binner.bind(*second.arrays())
    binner.add(np.array([[np.nan, 0.1]]))
    assert first.counts.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]
    assert second.counts.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    with pytest.raises(ValueError):
        binner.add(np.zeros((1, 2), np.int32))
    with pytest.raises(ValueError):
        binner.add(np.zeros((1, 1)))
    with pytest.raises(ValueError):
        binner.bind(*BinCounts.zeros(2, 3).arrays())
    with pytest.raises(ValueError):
        impl.RowBinner(
            args["cols"],
            args["edges"],
            np.array([9, 0], np.int32),
            args["ref_min"],
            args["ref_max"],
        )


# ---------------------------------------------------------------------------------------------
# bin_codes


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_codes_matches_oracle(impl):
    rng = np.random.default_rng(6)
    n_levels = np.array([3, 0, 5, 1], dtype=np.int32)
    codes = rng.integers(-2, 8, size=(1000, 4)).astype(np.int64)
    counts = np.zeros((4, 7), dtype=np.int64)
    impl.bin_codes(codes, n_levels, counts)
    expected = np.zeros_like(counts)
    for j in range(4):
        for c in codes[:, j]:
            expected[j, 6 if c < 0 else min(c, n_levels[j])] += 1
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_codes_empty_strided_and_bad(impl):
    counts = np.zeros((2, 4), dtype=np.int64)
    impl.bin_codes(np.zeros((0, 2), np.int64), np.array([2, 2], np.int32), counts)
    assert not counts.any()
    codes = np.array([[0, 5, 1, -1], [1, 1, -3, 0]], dtype=np.int64).T  # Fortran order
    impl.bin_codes(codes, np.array([2, 2], np.int32), counts)
    assert counts.tolist() == [[1, 1, 1, 1], [1, 2, 0, 1]]
    with pytest.raises(ValueError):  # 2 levels + other + missing do not fit 3 columns
        impl.bin_codes(codes, np.array([2, 2], np.int32), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError):
        impl.bin_codes(codes.astype(np.int32), np.array([2, 2], np.int32), counts)
    with pytest.raises(ValueError):
        impl.bin_codes(codes, np.array([2], np.int32), counts)


# ---------------------------------------------------------------------------------------------
# the shim's wrappers


def test_count_rows_allocates_and_converts():
    out = count_rows(np.array([[1, 7], [3, 9]]), *pad_edges([[2.0], [8.0]]), [0, 0], [5, 5])
    assert out.counts.tolist() == [[1, 1, 0], [1, 1, 0]]
    assert out.out_high.tolist() == [0, 2]
    again = count_rows(
        np.array([[np.nan, 1.0]]), *pad_edges([[2.0], [8.0]]), [0, 0], [5, 5], out=out
    )
    assert again is out
    assert out.counts.tolist() == [[1, 1, 1], [2, 1, 0]]
    with pytest.raises(ValueError, match="2-D"):
        count_rows(np.zeros(3), *pad_edges([[0.0]]), [0], [1])
    with pytest.raises(ValueError, match="column"):
        count_rows(np.zeros((1, 1)), *pad_edges([[0.0]]), [0], [1], cols=[3])


def test_count_codes_allocates():
    counts = count_codes(np.array([[0, 1], [2, -1], [9, 0]], dtype=np.int32), [2, 3])
    assert counts.tolist() == [[1, 0, 2, 0, 0], [1, 1, 0, 0, 1]]
    with pytest.raises(ValueError, match="integers"):
        count_codes(np.zeros((1, 1)), [1])


def test_pad_edges():
    edges, n_edges = pad_edges([[1.0, 2.0], [], [0.5]])
    assert n_edges.tolist() == [2, 0, 1]
    assert edges.tolist() == [[1.0, 2.0], [np.inf, np.inf], [0.5, np.inf]]
    with pytest.raises(ValueError, match="strictly increasing"):
        pad_edges([[1.0, 1.0]])
    with pytest.raises(ValueError, match="finite"):
        pad_edges([[1.0, np.inf]])


def test_bin_counts_add_copy_clear():
    a, b = BinCounts.zeros(2, 3), BinCounts.zeros(2, 3)
    a.counts[0, 1] = 4
    b.counts[0, 1] = 1
    b.sums[1] = 2.5
    c = a + b
    assert c.counts[0, 1] == 5 and c.sums[1] == 2.5 and a.counts[0, 1] == 4
    d = c.copy()
    c.clear()
    assert not c.counts.any() and d.counts[0, 1] == 5
    assert d.totals.tolist() == [5, 0] and d.missing.tolist() == [0, 0]
    with pytest.raises(ValueError, match="shape"):
        a + BinCounts.zeros(2, 4)
    with pytest.raises(ValueError):
        BinCounts.zeros(1, 1)


def _level_oracle(values, levels, n_bins):
    """bin_values by hand: the position of an equal level, else "other", NaN: missing."""
    out = [0] * n_bins
    for v in values:
        if math.isnan(v):
            out[-1] += 1
        elif v in levels:
            out[levels.index(v)] += 1
        else:
            out[len(levels)] += 1
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", range(5))
def test_bin_values_matches_oracle(impl, seed):
    rng = np.random.default_rng(seed)
    levels = [
        float(v) for v in rng.choice(np.arange(-5, 15), size=int(rng.integers(0, 8)), replace=False)
    ]
    values = rng.integers(-6, 16, 500).astype(np.float64)
    values[rng.random(500) < 0.05] = np.nan
    values[rng.random(500) < 0.05] = 0.5  # between levels: "other"
    order = np.argsort(levels, kind="stable")
    counts = np.zeros(len(levels) + 3, dtype=np.int64)
    strided = np.repeat(values, 2)[::2]  # a column view: not contiguous
    impl.bin_values(
        strided if impl is _compiled else values,
        np.asarray(levels, np.float64)[order],
        order.astype(np.int64),
        counts,
    )
    assert counts.tolist() == _level_oracle(values.tolist(), levels, len(counts))


@pytest.mark.parametrize("impl", IMPLS)
def test_bin_values_accumulates_and_rejects_bad_arguments(impl):
    levels, codes = np.array([0.0, 1.0]), np.array([1, 0], dtype=np.int64)
    counts = np.zeros(4, dtype=np.int64)
    impl.bin_values(np.array([0.0, 1.0, 1.0, 2.0]), levels, codes, counts)
    impl.bin_values(np.array([np.nan, 0.0]), levels, codes, counts)
    assert counts.tolist() == [2, 2, 1, 1]  # level 1.0 has code 0
    with pytest.raises(ValueError, match="do not fit"):
        impl.bin_values(np.array([0.0]), levels, codes, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="same length"):
        impl.bin_values(np.array([0.0]), levels, codes[:1], counts)
    with pytest.raises(ValueError, match="not a level code"):
        impl.bin_values(np.array([0.0]), levels, np.array([0, 2], dtype=np.int64), counts)


def _queue(impl, capacity=8):
    buffers = [
        np.zeros((capacity, 3), np.float32),
        np.zeros(capacity, np.int64),
        np.zeros((capacity, 2), np.float64),
    ]
    return impl.RowQueue(buffers, [1, 0])  # the 2nd buffer takes rest[1], the 3rd rest[0]


@pytest.mark.parametrize("impl", IMPLS)
def test_row_queue_copies_rows_and_refuses_what_does_not_fit(impl):
    rng = np.random.default_rng(0)
    q = _queue(impl)
    x1, x2 = rng.random((2, 3)).astype(np.float32), rng.random((3, 3)).astype(np.float32)
    lab1, lab2 = np.array([1, 2], dtype=np.longlong), np.array([3, 4, 5])  # equivalent int64s
    s1, s2 = rng.random((2, 2)), rng.random((3, 2))
    assert q.push(x1, [s1, lab1]) == 2
    x1[:] = -1  # copied: later changes to the request's arrays do not reach the queue
    assert q.push(x2, [s2, lab2]) == 3
    refused = [
        (x1.astype(np.float64), [s1, lab1]),  # another dtype
        (np.asfortranarray(rng.random((2, 3)).astype(np.float32)), [s1, lab1]),  # layout
        (rng.random((2, 4)).astype(np.float32), [s1, lab1]),  # width
        (x1, [s1, np.array([1, 2, 3])]),  # rows differ between tensors
        (x1, [s1, lab1.astype(np.int32)]),
        (x1, [s1, [1, 2]]),  # not an array
        (rng.random((4, 3)).astype(np.float32), [rng.random((4, 2)), np.arange(4)]),  # full
    ]
    for first, rest in refused:
        assert q.push(first, rest) == -1
    assert q.rows == 5
    x, lab, s = q.take()
    np.testing.assert_array_equal(x[2:], x2)
    assert x[:2].min() >= 0  # the rows as they were pushed
    assert lab.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(s, np.concatenate([s1, s2]))
    assert q.rows == 0 and [a.shape[0] for a in q.take()] == [0, 0, 0]


@pytest.mark.parametrize("impl", IMPLS)
def test_row_queue_rejects_bad_buffers(impl):
    with pytest.raises(ValueError, match="one position"):
        impl.RowQueue([np.zeros((4, 2))], [0])
    with pytest.raises(ValueError, match="same number of rows"):
        impl.RowQueue([np.zeros((4, 2)), np.zeros(3)], [0])
    with pytest.raises(ValueError, match="C-contiguous"):
        impl.RowQueue([np.zeros((4, 2), order="F"), np.zeros(4)], [0])
