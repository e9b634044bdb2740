"""Reference profiles see every feature: binary, few-level and zero-inflated numeric features
get bins that their drift can show in (issue 15), and a profile says which features it cannot
watch.

Data: scikit-learn's bundled breast-cancer (continuous) and diabetes (``sex`` has two levels)
sets, and synthetic columns drawn here: a 0/1 feature with 3.2 % ones, a zero-inflated one
(95 % zeros), a constant one. Counts are checked against an independent recount with
``np.searchsorted(edges, x, side="right")`` (bins are ``[edges[i-1], edges[i])``), and the
old rule (quantile edges, ties collapsed) is recomputed here as the reference for data it
must not change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression

from mlserve.monitoring import Binning, build_profile
from mlserve.monitoring.drift import drift_report
from mlserve.monitoring.profile import profile_warnings

N = 5000
RARE = 0.032  # the minority rate of the binary feature (bankruptcies, in the issue)


def old_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """The rule profiles had before: inverted-CDF quantiles, ties collapsed."""
    finite = values[np.isfinite(values)]
    return np.unique(np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf"))


def recount(values: np.ndarray, edges: list[float]) -> list[int]:
    """Bin counts of the finite ``values`` by ``edges``, independently of the kernel."""
    finite = values[np.isfinite(values)]
    e = np.asarray(edges, dtype=np.float64)
    return np.bincount(np.searchsorted(e, finite, side="right"), minlength=e.size + 1).tolist()


def rare_binary(rate: float, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(np.float64)


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(20260515)
    rare = (rng.random(N) < RARE).astype(np.float64)
    zero_inflated = np.where(rng.random(N) < 0.95, 0.0, rng.lognormal(1.0, 0.8, N))
    counts = rng.poisson(0.3, N).astype(np.float64)  # few levels, ~74 % zeros
    normal = rng.standard_normal(N)
    constant = np.full(N, 7.5)
    X = np.column_stack([rare, zero_inflated, counts, normal, constant])
    return X, ["rare", "zero_inflated", "counts", "normal", "constant"]


def populated(entry: dict[str, Any]) -> int:
    return sum(1 for c in entry["counts"] if c)


def _datasets(synthetic: tuple[np.ndarray, list[str]]) -> dict[str, tuple[np.ndarray, list[str]]]:
    cancer = load_breast_cancer()
    diabetes = load_diabetes()
    return {
        "breast_cancer": (cancer.data, list(cancer.feature_names)),
        "diabetes": (diabetes.data, list(diabetes.feature_names)),
        "synthetic": synthetic,
    }


@pytest.mark.parametrize("dataset", ["breast_cancer", "diabetes", "synthetic"])
@pytest.mark.parametrize("bins", [4, 10, 20])
def test_every_non_constant_feature_fills_two_bins_and_counts_recount(
    synthetic: tuple[np.ndarray, list[str]], dataset: str, bins: int
) -> None:
    X, names = _datasets(synthetic)[dataset]
    profile = build_profile(X, names, bins=bins)
    for j, e in enumerate(profile["features"]):
        col = X[:, j]
        edges = np.asarray(e["edges"])
        assert np.all(np.diff(edges) > 0), e["name"]
        assert e["counts"] == recount(col, e["edges"]), e["name"]
        if np.unique(col).size == 1:  # a constant: its own bin between two empty ones
            above = np.nextafter(np.float32(col[0]), np.float32(np.inf))  # exact in FP32
            assert edges.tolist() == [col[0], float(above)], e["name"]
            assert e["counts"] == [0, col.size, 0], e["name"]
            continue
        assert set(edges.tolist()) <= set(col.tolist()), e["name"]  # edges are values
        assert edges.size == 0 or edges[0] > col.min(), e["name"]  # no empty bin 0
        assert edges.size <= 2 * (bins - 1), e["name"]
        if np.unique(col).size >= 2:
            assert populated(e) >= 2, (e["name"], e["edges"], e["counts"])
        if np.unique(col).size <= bins:  # one bin per level, each populated
            assert populated(e) == len(e["counts"]) == np.unique(col).size, e["name"]


@pytest.mark.parametrize("bins", [10, 20])
def test_continuous_features_keep_the_old_edges(bins: int) -> None:
    cancer = load_breast_cancer()
    X = cancer.data
    profile = build_profile(X, list(cancer.feature_names), bins=bins)
    for j, e in enumerate(profile["features"]):
        assert e["edges"] == old_edges(X[:, j], bins).tolist(), e["name"]
    normal = np.random.default_rng(515).standard_normal((3000, 2))
    for j, e in enumerate(build_profile(normal, ["a", "b"], bins=bins)["features"]):
        assert e["edges"] == old_edges(normal[:, j], bins).tolist()


def test_diabetes_sex_gets_one_bin_per_level() -> None:
    diabetes = load_diabetes()
    names = list(diabetes.feature_names)
    sex = diabetes.data[:, names.index("sex")]
    levels, counts = np.unique(sex, return_counts=True)
    assert levels.size == 2
    profile = build_profile(diabetes.data, names)
    e = profile["features"][names.index("sex")]
    assert e["edges"] == [float(levels[1])]
    assert e["counts"] == counts.tolist()
    assert old_edges(sex, 10).tolist() == levels.tolist()  # the old rule: an empty bin 0


def test_rare_binary_gets_edge_one_and_numpys_counts(
    synthetic: tuple[np.ndarray, list[str]],
) -> None:
    X, names = synthetic
    rare = X[:, 0]
    e = build_profile(X, names)["features"][0]
    assert e["edges"] == [1.0]
    assert e["counts"] == [int((rare == 0).sum()), int((rare == 1).sum())]
    assert 0.02 < rare.mean() < 0.045
    assert old_edges(rare, 10).tolist() == [0.0]  # what the issue saw: bin 0 empty


def test_zero_inflated_mass_point_gets_a_bin_of_its_own(
    synthetic: tuple[np.ndarray, list[str]],
) -> None:
    X, names = synthetic
    z = X[:, 1]
    e = build_profile(X, names)["features"][1]
    smallest_positive = float(z[z > 0].min())
    assert e["edges"][0] == smallest_positive
    assert e["counts"][0] == int((z == 0).sum())
    assert e["counts"] == recount(z, e["edges"])
    assert old_edges(z, 10).tolist() == [0.0]


def test_mass_point_in_the_middle_is_cut_out() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 10, 4000)
    x[:1600] = 5.0  # 40 % at 5.0, the rest spread around it
    e = build_profile(x.reshape(-1, 1), ["x"])["features"][0]
    edges = e["edges"]
    i = edges.index(5.0)
    assert edges[i + 1] == float(np.min(x[x > 5.0]))  # the bin [5, next) holds only 5.0
    assert e["counts"][i + 1] == int((x == 5.0).sum())
    assert e["counts"] == recount(x, edges)


def test_random_mixtures_of_mass_points_and_continuous_values() -> None:
    """Each value carrying 1/B of the data or more (but the largest) is a bin of its own."""
    rng = np.random.default_rng(2026)
    for _ in range(300):
        n, bins = int(rng.integers(20, 3000)), int(rng.integers(2, 25))
        points = rng.choice(np.arange(-5.0, 6.0), int(rng.integers(1, 5)), replace=False)
        weights = rng.dirichlet(np.ones(points.size + 1))
        kind = rng.choice(points.size + 1, n, p=weights)
        x = np.where(kind < points.size, points[np.minimum(kind, points.size - 1)], 0.0)
        x[kind == points.size] = rng.normal(0, 4, int((kind == points.size).sum())).round(
            int(rng.integers(1, 4))
        )
        e = build_profile(x.reshape(-1, 1), ["x"], bins=bins)["features"][0]
        edges = np.asarray(e["edges"])
        assert np.all(np.diff(edges) > 0) and set(edges.tolist()) <= set(x.tolist())
        assert edges.size <= 2 * (bins - 1)
        assert e["counts"] == recount(x, e["edges"])
        levels, tied = np.unique(x, return_counts=True)
        assert edges.size == 0 or edges[0] > levels[0]
        if levels.size >= 2:
            assert populated(e) >= 2
        for v, c in zip(levels[:-1], tied[:-1], strict=True):
            if c * bins >= n:
                b = int(np.searchsorted(edges, v, side="right"))
                assert e["counts"][b] == c, (v, c, n, bins, e["edges"])


def _window(values: np.ndarray, binning: Binning) -> Any:
    return binning.count(values.reshape(-1, 1))


@pytest.mark.parametrize(("rate", "alerts"), [(1.0, True), (0.2, True), (RARE, False)])
def test_rare_binary_drift_is_detected(rate: float, alerts: bool) -> None:
    reference = rare_binary(RARE, N, seed=11)
    profile = build_profile(reference.reshape(-1, 1), ["bankruptcies"])
    binning = Binning(profile["features"])
    window = rare_binary(rate, 1000, seed=12345)  # a fresh seed, m = 1,000 rows
    feature = drift_report(binning, _window(window, binning)).feature("bankruptcies")
    assert feature.alert is alerts, feature
    if alerts:
        assert feature.psi > 0.25  # 3.2 % → 20 % ones: PSI ≈ 0.34


def test_profile_warnings_name_the_features_without_two_bins() -> None:
    n = 200
    rng = np.random.default_rng(3)
    X = np.empty((n, 5), dtype=object)
    X[:, 0] = rng.standard_normal(n)
    X[:, 1] = 4.0  # constant
    X[:, 2] = np.nan  # all missing
    X[:, 3] = "north"  # one level
    X[:, 4] = rng.choice(["a", "b"], n)
    names = ["x", "const", "empty", "region", "group"]
    profile = build_profile(
        X, names, categorical=["region", "group"], outputs={"score": np.full(n, 0.5)}
    )
    warnings = profile_warnings(profile)
    assert warnings == [
        "feature 'const' has one value (4.0) in every reference row: "
        "any other value shows as drift",
        "feature 'empty' is missing in every reference row: its drift cannot be measured",
        "feature 'region' has one level ('north') in every reference row: "
        "only other levels can show drift",
        "output 'score' has one value (0.5) in every reference row: any other value shows as drift",
    ]
    assert profile_warnings(build_profile(load_diabetes().data, [f"f{j}" for j in range(10)])) == []


def test_a_constant_feature_alerts_when_another_value_comes() -> None:
    """A reference column with one value (a product code, a flag never set): 300 of 800 rows
    with another value is drift, not only an out-of-range count (new-user finding)."""
    from mlserve.monitoring.binning import Binning
    from mlserve.monitoring.drift import drift_report

    ref = np.column_stack([np.ones(2_000), np.random.default_rng(2).normal(size=2_000)])
    binning = Binning(build_profile(ref, ["product", "x"])["features"])
    window = np.column_stack([np.ones(800), np.random.default_rng(3).normal(size=800)])
    window[:300, 0] = 2.0
    report = drift_report(binning, binning.count(window.astype(np.float32)), psi_floor=0.1)
    assert report.alerting == ("product",)
    same = drift_report(binning, binning.count(ref[:800].astype(np.float32)), psi_floor=0.1)
    assert not same.alert and same.feature("product").psi == 0.0


def test_profile_warnings_flag_an_old_blind_profile() -> None:
    """A profile written by the old rule for the rare binary feature: everything in bin 1."""
    rare = rare_binary(RARE, N, seed=5)
    entry = build_profile(rare.reshape(-1, 1), ["bankruptcies"])["features"][0]
    legacy = {**entry, "edges": [0.0], "counts": [0, N]}
    (warning,) = profile_warnings({"features": [legacy], "outputs": {}})
    assert warning.startswith("feature 'bankruptcies' has all its reference values in one bin")


def test_a_server_loading_an_old_blind_profile_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """The warning reaches the log when a version loads with such a profile, not only when
    a new one is written."""
    from mlserve.config import MonitoringConfig
    from mlserve.monitoring.monitor import ModelMonitor
    from mlserve.runtime.tensors import TensorSpec

    rare = rare_binary(RARE, N, seed=6)
    profile = build_profile(rare.reshape(-1, 1), ["bankruptcies"])
    legacy = {**profile["features"][0], "edges": [0.0], "counts": [0, N]}
    with caplog.at_level("WARNING", logger="mlserve.monitoring"):
        ModelMonitor.build(
            (TensorSpec("x", "FP32", (-1, 1)),),
            (),
            MonitoringConfig(),
            {**profile, "features": [legacy]},
        )
    assert any("all its reference values in one bin" in r.getMessage() for r in caplog.records)


def test_cli_profile_warns_and_still_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(99)
    rows = [f"{rng.normal():.4f},1,{int(rng.random() < RARE)}" for _ in range(300)]
    (tmp_path / "ref.csv").write_text("\n".join(["income,flag,bankrupt", *rows]) + "\n")
    cmd = [sys.executable, "-m", "mlserve", "profile", "--data", "ref.csv", "--out", "v1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "warning: feature 'flag' has one value (1.0) in every reference row: "
        "any other value shows as drift"
    ]
    assert proc.stdout.startswith("wrote ")
    assert (tmp_path / "v1" / "reference.json").is_file()


@pytest.mark.slow
def test_cli_publish_warns_and_still_publishes(tmp_path: Path) -> None:
    cancer = load_breast_cancer()
    X = np.column_stack([cancer.data[:, :4], np.zeros(len(cancer.data))])
    pickled = tmp_path / "m.joblib"
    joblib.dump(LogisticRegression(max_iter=2000).fit(X, cancer.target), pickled)
    np.savez(tmp_path / "ref.npz", X=X)
    cmd = [sys.executable, "-m", "mlserve", "publish", "--registry", str(tmp_path / "r"),
           "--model", "m", "--reference", str(tmp_path / "ref.npz"),
           "--estimator", str(pickled)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "published m v1" in proc.stdout
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("warning: feature ") and "has one value (0.0)" in warning
    assert (tmp_path / "r" / "m" / "1" / "reference.json").is_file()
