"""Explanations: occlusion against the reference profile's baseline, over real HTTP.

Tolerances: a float64 model's attributions are differences of two float64 predictions, so
for a linear model they equal ``coef_j · (x_j − b_j)`` to rounding of the predictions
(1e-9 relative to the prediction's magnitude). A float32 model also rounds its inputs, the
baseline and the predictions to float32: 1e-5 relative to the prediction's magnitude.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlserve.attribution import (
    NO_PROFILE,
    attributions,
    baseline_from_profile,
    check_cost,
    occlusion_batch,
)
from mlserve.errors import InvalidInput
from mlserve.monitoring.profile import build_profile, save_profile, validate_profile
from mlserve.runtime.tensors import InputLimits

from .conftest import ServerProcess, running_server, write_version
from .support.metrics import parse

F = 4
NAMES = ["age", "income", "debt", "region"]


def _reference(n: int = 2001, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)) * [1.0, 3.0, 0.5, 1.0] + [40.0, 10.0, -2.0, 0.0]
    X[:, 3] = rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.2, 0.5, 0.2, 0.1])  # codes
    return X


def _onnx(model: Any, double: bool, **options: Any) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    kind = DoubleTensorType if double else FloatTensorType
    return convert_sklearn(
        model,
        initial_types=[("X", kind([None, F]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        **options,
    )


def _profile(vdir: Path, X: np.ndarray, categorical: tuple[str, ...] = ()) -> None:
    save_profile(build_profile(X, NAMES, categorical=categorical), vdir / "reference.json")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry of real scikit-learn models and what the tests compare against."""
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LinearRegression, LogisticRegression

    root = tmp_path_factory.mktemp("explain") / "registry"
    X = _reference()
    y = X @ [1.5, -2.0, 0.25, 3.0] + 7.0 + np.random.default_rng(1).normal(size=len(X))
    reg = LinearRegression().fit(X, y)
    clf = LogisticRegression(max_iter=1000).fit(X, np.digitize(y, np.quantile(y, [0.3, 0.7])))
    for name, model, double, options in [
        ("reg64", reg, True, {}),
        ("reg32", reg, False, {}),
        ("clf", clf, False, {"options": {"zipmap": False}}),
        ("small", reg, True, {}),
        ("noref", reg, True, {}),
        ("counted", reg, True, {}),
    ]:
        vdir = write_version(root, name, 1, _onnx(model, double, **options))
        if name != "noref":
            _profile(vdir, X, ("region",) if name == "clf" else ())
    (root / "small" / "model.toml").write_text("[inputs]\nmax_rows = 20\n")
    return {"root": root, "X": X, "reg": reg, "clf": clf}


@pytest.fixture(scope="module")
def srv(models: dict[str, Any]) -> Iterator[ServerProcess]:
    with running_server(models["root"]) as server:
        yield server


@pytest.fixture()
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def _request(x: np.ndarray, datatype: str = "FP64", **extra: Any) -> dict[str, Any]:
    tensor = {"name": "X", "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def _rows(seed: int = 5, n: int = 3) -> np.ndarray:
    return _reference(n, seed)


# --------------------------------------------------------------------------------- units


def test_profile_median_is_numpys_median_of_finite_values() -> None:
    rng = np.random.default_rng(3)
    X = rng.exponential(2.0, size=(1000, 2))
    X[::7, 0] = np.nan
    X[::11, 1] = np.inf
    profile = build_profile(X, ["a", "b"])
    for j, entry in enumerate(profile["features"]):
        col = X[:, j]
        assert entry["median"] == np.median(col[np.isfinite(col)])
    even = build_profile(np.array([[1.0], [2.0], [4.0], [10.0]]), ["x"])
    assert even["features"][0]["median"] == 3.0
    empty = build_profile(np.full((3, 1), np.nan), ["x"])
    assert empty["features"][0]["median"] is None


def test_median_is_optional_and_checked() -> None:
    profile = build_profile(_reference(), NAMES, categorical=["region"])
    old = json.loads(json.dumps(profile))
    for entry in old["features"]:
        entry.pop("median", None)
    validate_profile(old)  # profiles written before medians still load
    baseline = baseline_from_profile(old, F)
    assert baseline.statistics == ("mean", "mean", "mean", "mode")
    np.testing.assert_array_equal(baseline.values[:3], [e["mean"] for e in profile["features"][:3]])
    bad = json.loads(json.dumps(profile))
    bad["features"][0]["median"] = bad["features"][0]["max"] + 1
    with pytest.raises(ValueError, match=r"features\[0\]\.median"):
        validate_profile(bad)
    bad["features"][0]["median"] = "middle"
    with pytest.raises(ValueError, match=r"features\[0\]\.median"):
        validate_profile(bad)


def test_baseline_from_profile() -> None:
    X = _reference()
    baseline = baseline_from_profile(build_profile(X, NAMES, categorical=["region"]), F)
    np.testing.assert_array_equal(baseline.values[:3], np.median(X[:, :3], axis=0))
    assert baseline.values[3] == 1.0  # the commonest code
    assert baseline.statistics == ("median", "median", "median", "mode")
    assert baseline.feature_names == tuple(NAMES)
    assert baseline.describe()["source"] == "reference profile"
    with pytest.raises(ValueError, match="no feature for column"):
        baseline_from_profile(build_profile(X, NAMES), F + 1)
    with pytest.raises(ValueError, match="column 3; the input has 3"):
        baseline_from_profile(build_profile(X, NAMES), 3)
    words = np.empty((3, 1), dtype=object)
    words[:, 0] = ["a", "b", "a"]
    with pytest.raises(ValueError, match="string levels"):
        baseline_from_profile(build_profile(words, ["w"], categorical=["w"]), 1)
    with pytest.raises(ValueError, match="no finite reference values"):
        baseline_from_profile(build_profile(np.full((3, 1), np.nan), ["x"]), 1)


def test_occlusion_batch_and_attributions() -> None:
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    b = np.array([0.1, 0.2, 0.3])
    batch = occlusion_batch(x, b)
    assert batch.dtype == np.float32 and batch.shape == (2 * 4 + 1, 3)
    b32 = b.astype(np.float32)
    for r in range(2):
        np.testing.assert_array_equal(batch[r * 4], x[r])
        for j in range(3):
            expected = x[r].copy()
            expected[j] = b32[j]
            np.testing.assert_array_equal(batch[r * 4 + 1 + j], expected)
    np.testing.assert_array_equal(batch[-1], b32)
    w = np.array([[1.0, -1.0], [2.0, 0.0], [3.0, 1.0]])
    y = batch.astype(np.float64) @ w
    prediction, a, at_baseline = attributions(y, 2, 3)
    np.testing.assert_array_equal(prediction, x.astype(np.float64) @ w)
    assert a.shape == (2, 3, 2) and a.dtype == np.float64
    assert prediction.flags.c_contiguous and a.flags.c_contiguous  # orjson needs them
    expected_a = (x.astype(np.float64) - b32)[:, :, None] * w[None, :, :]
    np.testing.assert_allclose(a, expected_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(at_baseline, b32.astype(np.float64) @ w)


def test_cost_bound_says_how_many_rows_fit() -> None:
    limits = InputLimits(max_elements=10**6, max_rows=20, allow_nan=False)
    assert check_cost(3, 4, limits) == 16
    with pytest.raises(InvalidInput, match=r"4×\(4\+1\)\+1 = 21 rows .* at most 3 rows fit"):
        check_cost(4, 4, limits)
    tight = InputLimits(max_elements=100, max_rows=10**6, allow_nan=False)
    with pytest.raises(InvalidInput, match=r"over the limit of 100 elements; at most 4 rows fit"):
        check_cost(5, 4, tight)
    assert check_cost(4, 4, tight) == 21


# --------------------------------------------------------------------------------- server


@pytest.mark.slow
def test_linear_float64_attributions_are_coef_times_distance_to_median(
    client: httpx.Client, models: dict[str, Any]
) -> None:
    X, reg = models["X"], models["reg"]
    x = _rows()
    r = client.post("/v2/models/reg64/explain", json=_request(x, id="why-1"))
    assert r.status_code == 200, r.text
    assert r.headers["mlserve-model-version"] == "1" and r.headers["mlserve-route"] == "stable"
    assert "infer;dur=" in r.headers["server-timing"]
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("reg64", "1", "why-1")
    assert body["method"] == "occlusion" and body["rows_evaluated"] == 3 * (F + 1) + 1
    baseline = body["baseline"]
    assert baseline["feature_names"] == NAMES and baseline["statistics"] == ["median"] * F
    median = np.median(X, axis=0)
    np.testing.assert_array_equal(baseline["values"], median)
    [out] = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("variable", "FP64", [3, 1])
    a = np.array(out["attributions"])
    assert a.shape == (3, F, 1)
    expected = reg.coef_ * (x - median)
    scale = np.abs(reg.predict(x)).max()
    np.testing.assert_allclose(a[:, :, 0], expected, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(np.array(out["prediction"])[:, 0], reg.predict(x), rtol=1e-12)
    np.testing.assert_allclose(out["baseline_prediction"], reg.predict(median[None]), rtol=1e-12)
    again = client.post("/v2/models/reg64/explain", json=_request(x, id="why-1"))
    assert again.content == r.content  # deterministic
    pinned = client.post("/v2/models/reg64/versions/1/explain", json=_request(x, id="why-1"))
    assert pinned.headers["mlserve-route"] == "pinned" and pinned.json() == body
    # A compressed body explains alike (it was malformed JSON: only /infer inflated).
    plain = json.dumps(_request(x, id="why-1")).encode()
    for name, packed in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        headers = {"content-encoding": name, "content-type": "application/json"}
        r = client.post("/v2/models/reg64/explain", content=packed, headers=headers)
        assert r.status_code == 200 and r.content == again.content, (name, r.text)
    r = client.post("/v2/models/reg64/explain", content=plain, headers={"content-encoding": "br"})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"


def test_linear_float32_within_float32_rounding(
    client: httpx.Client, models: dict[str, Any]
) -> None:
    reg = models["reg"]
    x = _rows().astype(np.float32)
    r = client.post("/v2/models/reg32/explain", json=_request(x, "FP32"))
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]
    assert out["datatype"] == "FP32"
    median = np.median(models["X"], axis=0)
    expected = reg.coef_ * (x.astype(np.float64) - median)
    scale = np.abs(reg.predict(x.astype(np.float64))).max()
    a = np.array(out["attributions"])[:, :, 0]
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-5 * scale)


def test_classifier_attributions(client: httpx.Client, models: dict[str, Any]) -> None:
    r = client.post("/v2/models/clf/explain", json=_request(_rows(n=1), "FP32"))
    baseline = np.array(r.json()["baseline"]["values"], dtype=np.float32)
    assert r.json()["baseline"]["statistics"] == ["median", "median", "median", "mode"]
    x = _rows(n=2).astype(np.float32)
    x[0, 1] = baseline[1]  # feature 1 at its baseline: occluding it changes nothing
    x[1, 3] = baseline[3]
    r = client.post("/v2/models/clf/explain", json=_request(x, "FP32"))
    assert r.status_code == 200, r.text
    [out] = r.json()["outputs"]  # only the float output: label is INT64
    assert (out["name"], out["shape"]) == ("probabilities", [2, 3])
    a = np.array(out["attributions"])
    assert a.shape == (2, F, 3)
    assert np.all(a[0, 1] == 0) and np.all(a[1, 3] == 0)
    assert np.abs(a).max() > 0
    np.testing.assert_allclose(a.sum(axis=2), 0, atol=1e-6)  # probabilities sum to 1
    np.testing.assert_allclose(
        out["prediction"], models["clf"].predict_proba(x.astype(np.float64)), atol=1e-5
    )
    chosen = _request(x, "FP32", parameters={"explain_outputs": ["label"]})
    r = client.post("/v2/models/clf/explain", json=chosen)
    assert r.status_code == 400 and "cannot be explained" in r.json()["error"]
    chosen["parameters"]["explain_outputs"] = ["nope"]
    r = client.post("/v2/models/clf/explain", json=chosen)
    assert r.status_code == 400 and "unknown output 'nope'" in r.json()["error"]
    chosen["parameters"]["explain_outputs"] = ["probabilities"]
    assert client.post("/v2/models/clf/explain", json=chosen).json()["outputs"] == [out]


@pytest.mark.parametrize(
    ("model", "request_body"),
    [
        ("reg64", _request(np.zeros((1, 3)))),
        ("reg64", {"inputs": [{**_request(np.zeros((1, 4)))["inputs"][0], "name": "Y"}]}),
        ("reg64", _request(np.zeros((1, 4)), "BYTES")),
        ("reg64", {"inputs": []}),
        ("reg64", [1, 2]),
        ("reg64", {**_request(np.zeros((1, 4))), "id": 5}),
        ("reg32", _request(np.array([[1e39, 0, 0, 0]]), "FP32")),  # beyond FP32: Inf
        ("small", _request(np.zeros((21, 4)))),
        ("nope", _request(np.zeros((1, 4)))),
        ("reg64/versions/9", _request(np.zeros((1, 4)))),
    ],
)
def test_bad_requests_are_answered_as_infer_answers_them(
    client: httpx.Client, model: str, request_body: Any
) -> None:
    infer = client.post(f"/v2/models/{model}/infer", json=request_body)
    explain = client.post(f"/v2/models/{model}/explain", json=request_body)
    assert infer.status_code in (400, 404)
    assert (explain.status_code, explain.json()) == (infer.status_code, infer.json())


def test_limits_and_unexplainable_versions(client: httpx.Client) -> None:
    ok = client.post("/v2/models/small/explain", json=_request(_rows(n=3)))
    assert ok.status_code == 200, ok.text
    r = client.post("/v2/models/small/explain", json=_request(_rows(n=4)))
    assert r.status_code == 400 and r.json()["code"] == "invalid_input"
    assert "21 rows" in r.json()["error"] and "at most 3 rows fit" in r.json()["error"]
    r = client.post("/v2/models/noref/explain", json=_request(_rows()))
    assert r.status_code == 409 and r.json() == {"error": NO_PROFILE, "code": "not_explainable"}
    assert "explanations need a reference profile (reference.json)" in NO_PROFILE
    meta = client.get("/v2/models/noref").json()["parameters"]["versions"]["1"]["explain"]
    assert meta == {"available": False, "reason": NO_PROFILE}
    meta = client.get("/v2/models/reg64/versions/1").json()["parameters"]["explain"]
    assert meta == {"available": True, "method": "occlusion"}
    assert client.get("/v2/models/reg64/explain").status_code == 405
    r = client.post("/v2/models/reg64/explain", content=b"{")
    assert r.status_code == 400 and "malformed JSON body" in r.json()["error"]


def test_explanations_are_not_inference_traffic(client: httpx.Client) -> None:
    x = _rows(n=2)
    assert client.post("/v2/models/counted/infer", json=_request(x)).status_code == 200
    for _ in range(3):
        assert client.post("/v2/models/counted/explain", json=_request(x)).status_code == 200
    assert client.post("/v2/models/counted/explain", json=_request(x[:, :2])).status_code == 400
    metrics = parse(client.get("/metrics").text)
    counted = {"model": "counted", "version": "1"}
    assert metrics.value("mlserve_requests_total", **counted, role="stable", outcome="success") == 1
    assert metrics.value("mlserve_inference_rows_total", **counted, role="stable") == 2
    explained = metrics.by("mlserve_explain_requests_total", "outcome", **counted)
    assert explained["success"] == 3 and explained["invalid"] == 1, explained
    drift = client.get("/v2/models/counted/monitor").json()["versions"]["1"]["drift"]
    assert {f["window_count"] for f in drift["sections"]["inputs"]["features"]} == {2}


@pytest.mark.slow
def test_monitoring_off_and_old_profiles(tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LinearRegression

    X = _reference(301)
    reg = LinearRegression().fit(X, X @ [1.0, 2.0, 3.0, 4.0])
    root = tmp_path / "registry"
    vdir = write_version(root, "old", 1, _onnx(reg, True))
    profile = build_profile(X, NAMES)
    for entry in profile["features"]:
        del entry["median"]
    save_profile(profile, vdir / "reference.json")
    vdir = write_version(root, "broken", 1, _onnx(reg, True))
    (vdir / "reference.json").write_text("{")
    with (
        running_server(root, "--monitoring", "off") as server,
        httpx.Client(base_url=server.url) as c,
    ):
        x = X[:2]
        r = c.post("/v2/models/old/explain", json=_request(x))
        assert r.status_code == 200, r.text
        assert r.json()["baseline"]["statistics"] == ["mean"] * F
        a = np.array(r.json()["outputs"][0]["attributions"])[:, :, 0]
        scale = np.abs(reg.predict(x)).max()
        expected = reg.coef_ * (x - X.mean(axis=0))
        np.testing.assert_allclose(a, expected, rtol=1e-9, atol=1e-9 * scale)
        r = c.post("/v2/models/broken/explain", json=_request(x))
        assert r.status_code == 409 and "valid reference profile" in r.json()["error"]
        assert c.post("/v2/models/broken/infer", json=_request(x)).status_code == 200
