"""Named columns and casts: data as people have it, through the real server.

Two models that are not the demo's: a logistic regression on scikit-learn's breast-cancer data
(one FP32 input of 30 named columns) and a ColumnTransformer pipeline on the diabetes data with
a text column (one input per column: two FP32, one string). Requests send named columns in
FP64, INT64 and BYTES, in any order; answers are compared with in-process onnxruntime on the
model's own tensors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.errors import InvalidInput
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.runtime.columns import FeatureSchema, cast_column
from mlserve.runtime.tensors import TensorSpec

from .conftest import running_server

# ---------------------------------------------------------------------------- the cast rule


@pytest.mark.parametrize(
    ("values", "datatype", "expected"),
    [
        (np.array([0.1, 2.5]), "FP32", np.array([0.1, 2.5], np.float32)),
        (np.array([3, -(2**24)]), "FP32", np.array([3.0, -16777216.0], np.float32)),
        (np.array([2**53]), "FP64", np.array([2.0**53])),
        (np.array([1.0, -7.0]), "INT64", np.array([1, -7], np.int64)),
        (np.array([True, False]), "FP32", np.array([1.0, 0.0], np.float32)),
        (np.array([0, 1]), "BOOL", np.array([False, True])),
        (np.array([200]), "UINT8", np.array([200], np.uint8)),
        (np.array([np.nan]), "FP32", np.array([np.nan], np.float32)),  # NaN policy: elsewhere
    ],
)
def test_safe_casts_keep_the_value(values: Any, datatype: str, expected: Any) -> None:
    got = cast_column("c", values, datatype)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("values", "datatype", "why"),
    [
        (np.array([1e39]), "FP32", "beyond the range of FP32"),
        (np.array([2**24 + 1]), "FP32", "integers beyond ±16777216"),
        (np.array([2**53 + 1]), "FP64", "integers beyond ±9007199254740992"),
        (np.array([1.5]), "INT64", "fractions"),
        (np.array([np.nan]), "INT32", "fractions or NaN"),
        (np.array([300]), "UINT8", "beyond [0, 255]"),
        (np.array([-1]), "UINT32", "beyond [0, 4294967295]"),
        (np.array([2]), "BOOL", "only 0 and 1"),
        (np.array(["1.5"], object), "FP32", "send numbers for this column, not text"),
        (np.array([1.5]), "BYTES", "send text"),
        # At the top of the integer range the float's own precision must not round the
        # bound: 2**31 as FP32, 2**63 and 2**64 as FP64 would wrap around.
        (np.array([2.0**31], np.float32), "INT32", "beyond [-2147483648, 2147483647]"),
        (np.array([2.0**63]), "INT64", "beyond [-9223372036854775808"),
        (np.array([2.0**64]), "UINT64", "beyond [0, 18446744073709551615]"),
        (np.array([-(2.0**63) - 4096]), "INT64", "beyond [-9223372036854775808"),
    ],
)
def test_lossy_casts_are_refused_naming_the_column(values: Any, datatype: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(why)) as info:
        cast_column("income", values, datatype)
    assert "column 'income'" in str(info.value) and datatype in str(info.value)
    assert info.value.reason == "datatype"


def test_largest_floats_below_the_integer_bounds_convert_exactly() -> None:
    top = np.nextafter(2.0**63, 0)  # the largest float64 below 2**63
    got = cast_column("c", np.array([top, -(2.0**63)]), "INT64")
    assert got.tolist() == [int(top), -(2**63)]
    assert cast_column("c", np.array([2.0**31 - 128], np.float32), "INT32").tolist() == [
        2**31 - 128
    ]


def test_policy_none_accepts_only_the_models_datatype() -> None:
    same = np.array([1.0], np.float32)
    assert cast_column("c", same, "FP32", "none") is same
    with pytest.raises(InvalidInput, match=r"is FP64 but the model takes FP32.*cast = \"none\""):
        cast_column("c", np.array([1.0]), "FP32", "none")


def test_schema_of_one_input_and_of_one_input_per_column() -> None:
    x = TensorSpec("X", "FP32", (-1, 3))
    assert FeatureSchema.from_inputs([x]) is None  # no names: no named columns
    assert FeatureSchema.from_inputs([x], ["a", "b"]) is None  # 2 names for 3 columns
    one = FeatureSchema.from_inputs([x], ["a", "b", "c"])
    assert one is not None and one.single and one.names == ("a", "b", "c")
    feeds = one.feeds({"c": np.array([3, 6]), "a": np.array([1.0, 4.0]), "b": np.array([2, 5])})
    np.testing.assert_array_equal(feeds["X"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    assert feeds["X"].dtype == np.float32
    np.testing.assert_array_equal(one.split(one.table(feeds))["X"], feeds["X"])

    many = FeatureSchema.from_inputs(
        [TensorSpec("age", "FP32", (-1, 1)), TensorSpec("sex", "BYTES", (-1, 1))],
        ["sex", "age"],
    )
    assert many is not None and not many.single and many.names == ("sex", "age")
    feeds = many.feeds({"age": np.array([30, 41]), "sex": np.array(["F", "M"], object)})
    assert feeds["age"].shape == (2, 1) and feeds["age"].dtype == np.float32
    table = many.table(feeds)
    assert table.dtype == object and table.tolist() == [["F", 30.0], ["M", 41.0]]
    back = many.split(table)
    np.testing.assert_array_equal(back["age"], feeds["age"])
    assert back["sex"].tolist() == [["F"], ["M"]]
    with pytest.raises(InvalidInput, match=r"missing \['age'\]; unknown \['agee'\]"):
        many.feeds({"agee": np.array([1.0]), "sex": np.array(["F"], object)})
    with pytest.raises(InvalidInput, match="column 'age' has 1 rows, the first column 2"):
        many.feeds({"sex": np.array(["F", "M"], object), "age": np.array([1.0])})


# ---------------------------------------------------------------------------- live models


def _cancer() -> tuple[Any, list[str], np.ndarray]:
    data = load_breast_cancer()
    X = data.data.astype(np.float32)
    clf = LogisticRegression(max_iter=5000).fit(data.data, data.target)
    onx = convert_sklearn(
        clf,
        initial_types=[("X", FloatTensorType([None, X.shape[1]]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx, [str(n) for n in data.feature_names], X


def _diabetes_frame() -> Any:
    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["sex"] = np.where(frame["sex"] == 1, "F", "M").astype(object)
    frame["high"] = (frame["target"] > frame["target"].median()).astype(int)
    return frame[["age", "bmi", "sex", "bp", "high"]]


def _mixed() -> tuple[Any, Any]:
    frame = _diabetes_frame()
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "bmi", "bp"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["sex"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(frame[["age", "bmi", "sex", "bp"]], frame["high"])
    onx = convert_sklearn(
        pipe,
        initial_types=[
            ("age", FloatTensorType([None, 1])),
            ("bmi", FloatTensorType([None, 1])),
            ("sex", StringTensorType([None, 1])),
            ("bp", FloatTensorType([None, 1])),
        ],
        options={id(pipe): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx, frame


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("columns") / "registry"
    onx, names, X = _cancer()
    vdir = root / "cancer" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(onx.SerializeToString())
    save_profile(build_profile(X, names), vdir / "reference.json")
    strict = root / "cancer-strict"
    (strict / "1").mkdir(parents=True)
    (strict / "1" / "model.onnx").write_bytes(onx.SerializeToString())
    save_profile(build_profile(X, names), strict / "1" / "reference.json")
    (strict / "model.toml").write_text('[inputs]\ncast = "none"\n')
    small = root / "cancer-small"
    (small / "1").mkdir(parents=True)
    (small / "1" / "model.onnx").write_bytes(onx.SerializeToString())
    save_profile(build_profile(X, names), small / "1" / "reference.json")
    (small / "model.toml").write_text("[inputs]\nmax_elements = 300\n")
    mixed, frame = _mixed()
    mdir = root / "mixed" / "1"
    mdir.mkdir(parents=True)
    (mdir / "model.onnx").write_bytes(mixed.SerializeToString())
    return {"root": root, "cancer": (onx, names, X), "mixed": (mixed, frame)}


@pytest.fixture(scope="module")
def client(models: dict[str, Any]) -> Iterator[httpx.Client]:
    with running_server(models["root"]) as srv, httpx.Client(base_url=srv.url) as c:
        yield c


def _run(onx: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _columns(frame: Any, datatypes: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "datatype": datatypes.get(name, "FP64"),
            "shape": [len(frame)],
            "data": frame[name].tolist(),
        }
        for name in frame.columns
    ]


def _outputs(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}


def test_metadata_lists_the_features_a_client_can_send(
    client: httpx.Client, models: dict[str, Any]
) -> None:
    _, names, _ = models["cancer"]
    meta = client.get("/v2/models/cancer").json()
    assert [f["name"] for f in meta["parameters"]["features"]] == names
    assert {f["datatype"] for f in meta["parameters"]["features"]} == {"FP32"}
    mixed = client.get("/v2/models/mixed/versions/1").json()["parameters"]["features"]
    assert [(f["name"], f["datatype"]) for f in mixed] == [
        ("age", "FP32"),
        ("bmi", "FP32"),
        ("sex", "BYTES"),
        ("bp", "FP32"),
    ]


def test_named_fp64_columns_in_any_order_equal_onnxruntime(
    client: httpx.Client, models: dict[str, Any]
) -> None:
    import pandas as pd

    onx, names, _ = models["cancer"]
    rows = load_breast_cancer().data[:50]  # float64, as pandas holds it
    frame = pd.DataFrame(rows, columns=names)[list(reversed(names))]
    r = client.post("/v2/models/cancer/infer", json={"inputs": _columns(frame, {})})
    assert r.status_code == 200, r.text
    got = _outputs(r.json())
    label, proba = _run(onx, {"X": rows.astype(np.float32)})
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], proba, rtol=1e-6, atol=1e-7)
    # The model's own input in FP64 is cast the same way.
    own = {"name": "X", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}
    r = client.post("/v2/models/cancer/infer", json={"inputs": [own]})
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_outputs(r.json())["label"], label)


def test_column_refusals_name_the_column(client: httpx.Client, models: dict[str, Any]) -> None:
    import pandas as pd

    _, names, _ = models["cancer"]
    frame = pd.DataFrame(load_breast_cancer().data[:2], columns=names)
    cases = [
        (frame.drop(columns=["mean radius"]), "missing ['mean radius']"),
        (frame.assign(extra=1.0), "unknown input 'extra'"),
    ]
    for bad, message in cases:
        r = client.post("/v2/models/cancer/infer", json={"inputs": _columns(bad, {})})
        assert r.status_code == 400 and message in r.json()["error"], r.text
        assert "(30 in all: see the model metadata's parameters.features)]" in r.json()["error"]
        assert len(r.json()["error"]) < 600
    text = _columns(frame, {})
    text[3] = {**text[3], "datatype": "BYTES", "data": ["12.5", "x"]}
    r = client.post("/v2/models/cancer/infer", json={"inputs": text})
    assert r.status_code == 400
    assert r.json()["error"] == (
        f"column {names[3]!r} is BYTES but the model takes FP32: "
        "send numbers for this column, not text"
    )
    big = _columns(frame, {})
    big[0] = {**big[0], "datatype": "INT64", "data": [2**40, 1]}
    r = client.post("/v2/models/cancer/infer", json={"inputs": big})
    assert r.status_code == 400 and "integers beyond ±16777216" in r.json()["error"]
    r = client.post("/v2/models/cancer/infer", json={"inputs": [{**big[1], "name": "nope"}]})
    assert r.status_code == 400
    assert (
        "unknown input 'nope'; the model's inputs are ['X']; its feature columns are"
        in (r.json()["error"])
    )
    # The columns make one [n, 30] tensor: the element limit applies to it as to X itself.
    ten = pd.DataFrame(load_breast_cancer().data[:10], columns=names)
    r = client.post("/v2/models/cancer-small/infer", json={"inputs": _columns(ten, {})})
    assert r.status_code == 200, r.text
    eleven = pd.DataFrame(load_breast_cancer().data[:11], columns=names)
    r = client.post("/v2/models/cancer-small/infer", json={"inputs": _columns(eleven, {})})
    assert r.status_code == 400 and r.json()["error"] == (
        "30 columns of 11 rows make 330 elements for input 'X', over the limit of 300"
    )
    # cast = "none": the model's own datatype only.
    r = client.post("/v2/models/cancer-strict/infer", json={"inputs": _columns(frame, {})})
    assert r.status_code == 400 and 'cast = "none"' in r.json()["error"]
    r = client.post(
        "/v2/models/cancer-strict/infer",
        json={"inputs": _columns(frame.astype(np.float32), dict.fromkeys(names, "FP32"))},
    )
    assert r.status_code == 200, r.text


def test_text_columns_model_takes_named_columns_and_own_inputs(
    client: httpx.Client, models: dict[str, Any]
) -> None:
    onx, frame = models["mixed"]
    rows = frame.iloc[:40][["sex", "bp", "age", "bmi"]]  # not the model's order
    r = client.post("/v2/models/mixed/infer", json={"inputs": _columns(rows, {"sex": "BYTES"})})
    assert r.status_code == 200, r.text
    feeds = {
        "age": rows[["age"]].to_numpy(np.float32),
        "bmi": rows[["bmi"]].to_numpy(np.float32),
        "sex": rows[["sex"]].to_numpy(object),
        "bp": rows[["bp"]].to_numpy(np.float32),
    }
    label, proba = _run(onx, feeds)
    got = _outputs(r.json())
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], proba, rtol=1e-6, atol=1e-7)
    # The model's own tensors ([n, 1], FP32) still work, and an unseen category is served.
    own = [
        {"name": n, "datatype": "BYTES" if n == "sex" else "FP32", "shape": [2, 1],
         "data": ["X", "F"] if n == "sex" else [50.0, 30.0]}
        for n in ("age", "bmi", "sex", "bp")
    ]  # fmt: skip
    r = client.post("/v2/models/mixed/infer", json={"inputs": own})
    assert r.status_code == 200, r.text
    # Inputs with different row counts: refused, not a 500 from inside the graph.
    ragged = [{**t, "shape": [3, 1], "data": t["data"] + t["data"][:1]} if t["name"] == "bmi"
              else t for t in own]  # fmt: skip
    r = client.post("/v2/models/mixed/infer", json={"inputs": ragged})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        "the inputs must hold the same number of rows, got {'age': 2, 'bmi': 3, 'sex': 2, 'bp': 2}"
    )
    # A number in the text column is refused, naming it.
    bad = _columns(rows.iloc[:1], {"sex": "FP64"})
    bad[0]["data"] = [1.0]
    r = client.post("/v2/models/mixed/infer", json={"inputs": bad})
    assert r.status_code == 400
    assert r.json()["error"].startswith("column 'sex' is FP64 but the model takes BYTES")


def test_named_columns_in_binary(client: httpx.Client, models: dict[str, Any]) -> None:
    onx, names, _ = models["cancer"]
    rows = load_breast_cancer().data[:7]
    blobs = [np.ascontiguousarray(rows[:, j]).astype("<f8").tobytes() for j in range(len(names))]
    header = {
        "inputs": [
            {"name": n, "datatype": "FP64", "shape": [7], "parameters": {"binary_data_size": 56}}
            for n in names
        ]
    }
    import orjson

    head = orjson.dumps(header)
    r = client.post(
        "/v2/models/cancer/infer",
        content=head + b"".join(blobs),
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    label, _ = _run(onx, {"X": rows.astype(np.float32)})
    np.testing.assert_array_equal(_outputs(r.json())["label"], label)


def test_monitoring_counts_named_columns_like_the_models_input(
    client: httpx.Client, models: dict[str, Any], tmp_path: Path
) -> None:
    """Rows of the reference sent as FP64 named columns: nothing out of range, no alert."""
    import pandas as pd

    _, names, _ = models["cancer"]
    frame = pd.DataFrame(load_breast_cancer().data, columns=names)
    for start in range(0, len(frame), 200):
        part = frame.iloc[start : start + 200]
        r = client.post("/v2/models/cancer/infer", json={"inputs": _columns(part, {})})
        assert r.status_code == 200, r.text
    report = client.get("/v2/models/cancer/versions/1/monitor").json()
    section = report["versions"]["1"]["drift"]["sections"]["inputs"]
    out_of_range = {f["name"]: f["out_of_range"] for f in section["features"]}
    assert sum(out_of_range.values()) == 0, out_of_range
    assert not section["alert"], [f["name"] for f in section["features"] if f["alert"]]
