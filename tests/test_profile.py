"""Reference profiles: edges, counts, categorical levels, outputs, files and validation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from mlserve.monitoring import Binning, build_profile, load_profile, save_profile, validate_profile
from mlserve.monitoring.binning import encode_levels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 5000
    X = np.empty((n, 5), dtype=object)
    X[:, 0] = rng.standard_normal(n)
    X[:, 1] = rng.poisson(0.4, n).astype(float)  # mostly zeros: heavy ties
    X[:, 1][::50] = np.nan
    X[:, 2] = rng.choice(
        ["north", "south", "east", "west", "rare"], n, p=[0.4, 0.3, 0.2, 0.0995, 0.0005]
    )
    X[:, 2][::97] = None
    X[:, 3] = rng.exponential(3.0, n)
    X[:, 3][::101] = np.inf
    X[:, 4] = rng.integers(0, 30, n)  # numeric codes, profiled as categorical
    return X


@pytest.fixture(scope="module")
def profile(data):
    n = data.shape[0]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1], n).astype(np.float32)
    return build_profile(
        data,
        ["x", "ties", "region", "skewed", "code"],
        categorical=["region", "code"],
        outputs={"probabilities": probs, "label": probs.argmax(axis=1), "score": probs[:, 0]},
        bins=10,
        top_k=20,
    )


def _feature(profile, name, section="features"):
    entries = profile[section] if section == "features" else profile["outputs"][section]
    return next(e for e in entries if e["name"] == name)


def test_top_level(profile, data):
    assert profile["schema_version"] == 1
    assert profile["n_rows"] == data.shape[0]
    assert (profile["bins"], profile["top_k"]) == (10, 20)
    assert [e["name"] for e in profile["features"]] == ["x", "ties", "region", "skewed", "code"]
    assert [e["column"] for e in profile["features"]] == [0, 1, 2, 3, 4]


def test_numeric_edges_strictly_increasing_at_quantiles(profile, data):
    x = _feature(profile, "x")
    edges = np.array(x["edges"])
    assert len(edges) == 9 and np.all(np.diff(edges) > 0)
    values = data[:, 0].astype(float)
    # Edges are reference values at the deciles, so each bin holds ~n/10 of them.
    assert set(edges) <= set(values)
    np.testing.assert_allclose(edges, np.quantile(values, np.arange(1, 10) / 10), atol=0.02)
    assert max(x["counts"]) - min(x["counts"]) <= 2
    assert x["mean"] == pytest.approx(values.mean()) and x["std"] == pytest.approx(values.std())
    assert (x["min"], x["max"]) == (values.min(), values.max())


def test_ties_collapse(profile, data):
    ties = _feature(profile, "ties")
    values = data[:, 1].astype(float)
    finite = values[np.isfinite(values)]
    # Poisson(0.4): ~67 % zeros, ~27 % ones, a few more levels: one bin per level (no more
    # than 10 levels), edges at every level but the smallest, so no bin is empty.
    levels, counts = np.unique(finite, return_counts=True)
    assert levels.size <= 10
    assert ties["edges"] == levels[1:].tolist()
    assert ties["counts"] == counts.tolist()
    assert ties["counts"][0] == int((finite == 0).sum())  # every zero in one bin
    assert ties["missing"] == int(np.isnan(values).sum()) == 100


def test_constant_and_all_missing_numeric():
    X = np.column_stack([np.full(50, 3.0), np.full(50, np.nan)])
    p = build_profile(X, ["const", "empty"])
    const, empty = p["features"]
    # One level: its own bin between two empty ones (another value is then drift).
    above = float(np.nextafter(np.float32(3.0), np.float32(np.inf)))  # exact in FP32
    assert const["edges"] == [3.0, above] and const["counts"] == [0, 50, 0]
    assert const["std"] == 0.0 and const["min"] == const["max"] == 3.0
    assert empty["edges"] == [] and empty["counts"] == [0] and empty["missing"] == 50
    assert empty["mean"] is None and empty["min"] is None


def test_reference_counts_sum_to_n_and_match_the_kernel(profile, data):
    for section in [profile["features"], *profile["outputs"].values()]:
        for e in section:
            assert sum(e["counts"]) + e["missing"] == e["n"] == data.shape[0]
    # Counting the reference again through the serving path gives the profile's counts.
    binning = Binning(profile["features"])
    np.testing.assert_array_equal(binning.count(data).counts, binning.reference)


def test_infinities_in_numeric_feature(profile, data):
    skewed = _feature(profile, "skewed")
    values = data[:, 3].astype(float)
    finite = values[np.isfinite(values)]
    assert skewed["max"] == finite.max()  # bounds and moments over finite values
    assert skewed["counts"][-1] >= int(np.isinf(values).sum())  # +inf lands in the top bin
    assert skewed["missing"] == 0


def test_categorical_levels_top_k_and_other(data):
    p = build_profile(
        data, ["x", "ties", "region", "skewed", "code"], categorical=["region", "code"], top_k=3
    )
    region = _feature(p, "region")
    assert region["levels"] == ["north", "south", "east"]
    col = data[:, 2]
    missing = sum(v is None for v in col)
    assert region["missing"] == missing
    expected = [int((col == lv).sum()) for lv in region["levels"]]
    assert region["counts"][:3] == expected
    assert region["counts"][3] == len(col) - missing - sum(expected)  # "other"
    code = _feature(p, "code")
    assert len(code["levels"]) == 3 and all(isinstance(v, int) for v in code["levels"])
    values, counts = np.unique(data[:, 4].astype(int), return_counts=True)
    top = sorted(zip(-counts, values, strict=False))[:3]
    assert code["levels"] == [int(v) for _, v in top]


def test_categorical_all_levels_fit(profile, data):
    region = _feature(profile, "region")
    assert sorted(region["levels"]) == ["east", "north", "rare", "south", "west"]
    assert region["counts"][-1] == 0  # nothing is "other"
    code = _feature(profile, "code")  # 30 codes, top_k = 20: the rest is "other"
    assert len(code["levels"]) == 20 and code["counts"][-1] > 0
    assert set(code["levels"]) <= set(range(30))


def test_categorical_level_ties_break_by_value():
    X = np.array([["b"], ["a"], ["c"], ["a"], ["b"], ["d"]], dtype=object)
    p = build_profile(X, ["f"], categorical=["f"], top_k=2)
    assert p["features"][0]["levels"] == ["a", "b"]
    assert p["features"][0]["counts"] == [2, 2, 2]


def test_outputs_profiled(profile):
    outputs = profile["outputs"]
    assert sorted(outputs) == ["label", "probabilities", "score"]
    probs = outputs["probabilities"]
    assert [e["name"] for e in probs] == [
        "probabilities[0]",
        "probabilities[1]",
        "probabilities[2]",
    ]
    assert all(e["kind"] == "numeric" and len(e["edges"]) == 9 for e in probs)
    assert [e["column"] for e in probs] == [0, 1, 2]
    (label,) = outputs["label"]
    assert label["kind"] == "categorical" and sorted(label["levels"]) == [0, 1, 2]
    assert label["counts"][-1] == 0
    (score,) = outputs["score"]
    assert score["name"] == "score" and score["kind"] == "numeric"
    # An output section counts its own tensor.
    binning = Binning(outputs["label"])
    assert binning.reference is not None and binning.n_features == 1


def test_build_rejects_bad_arguments(data):
    names = ["x", "ties", "region", "skewed", "code"]
    with pytest.raises(ValueError, match="feature names"):
        build_profile(data, names[:4])
    with pytest.raises(ValueError, match="unknown"):
        build_profile(data, names, categorical=["nope"])
    with pytest.raises(ValueError, match="not numeric"):
        build_profile(data, names)  # "region" holds strings
    with pytest.raises(ValueError, match="bins"):
        build_profile(data, names, categorical=["region"], bins=1)
    with pytest.raises(ValueError, match="top_k"):
        build_profile(data, names, categorical=["region"], top_k=0)
    with pytest.raises(ValueError, match="rows"):
        build_profile(data, names, categorical=["region"], outputs={"y": np.zeros(3)})
    with pytest.raises(ValueError, match="2-D"):
        build_profile(np.zeros(3), ["a"])


def test_encode_levels():
    assert encode_levels(np.array([1.0, 2.0, np.nan, 7.0]), [2, 1]).tolist() == [1, 0, -1, 2]
    assert encode_levels(np.array(["a", None, "z"], dtype=object), ["a"]).tolist() == [0, -1, 1]
    assert encode_levels(np.array([True, False]), [True]).tolist() == [0, 1]
    assert encode_levels(np.array([1, 2]), []).tolist() == [0, 0]
    assert encode_levels(np.array([np.inf]), [1.5]).tolist() == [1]  # not a level: other


def test_save_load_round_trip(profile, tmp_path):
    path = tmp_path / "reference.json"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert loaded == json.loads(json.dumps(profile))
    assert not list(tmp_path.glob(".reference.json.*"))  # no temporary file left behind
    np.testing.assert_array_equal(
        Binning(loaded["features"]).reference, Binning(profile["features"]).reference
    )


def _broken(profile, mutate):
    doc = copy.deepcopy(profile)
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d.pop("schema_version"), "schema_version"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.pop("n_rows"), "n_rows"),
        (lambda d: d.update(n_rows=-1), "n_rows"),
        (lambda d: d.update(bins=True), "bins"),
        (lambda d: d.update(features={}), "features"),
        (lambda d: d["features"][0].update(kind="ordinal"), r"features\[0\]\.kind"),
        (lambda d: d["features"][0].update(edges=[2.0, 1.0] + [3.0] * 7), r"features\[0\]\.edges"),
        (
            lambda d: d["features"][0]["edges"].__setitem__(0, float("nan")),
            r"features\[0\]\.edges\[0\]",
        ),
        (lambda d: d["features"][0]["counts"].__setitem__(0, -1), r"features\[0\]\.counts"),
        (lambda d: d["features"][0]["counts"].append(0), r"features\[0\]\.counts"),
        (lambda d: d["features"][0].update(n=1), r"features\[0\]\.n"),
        (lambda d: d["features"][0].update(std=-1.0), r"features\[0\]\.std"),
        (lambda d: d["features"][0].update(mean="big"), r"features\[0\]\.mean"),
        (lambda d: d["features"][0].update(min=5.0, max=1.0), r"features\[0\]\.min"),
        (lambda d: d["features"][0].pop("max"), r"features\[0\]\.max"),
        (lambda d: d["features"][0].update(levels=[]), r"features\[0\]\.levels"),
        (lambda d: d["features"][1].update(name="x"), r"features\[1\]\.name"),
        (lambda d: d["features"][1].update(column=0), r"features\[1\]\.column"),
        (lambda d: d["features"][1].update(missing=10**9), r"features\[1\]\.missing"),
        (lambda d: d["features"][2]["levels"].append("north"), r"features\[2\]\.levels"),
        (lambda d: d["features"][2]["levels"].__setitem__(0, [1]), r"features\[2\]\.levels\[0\]"),
        (lambda d: d["outputs"].update(label=[{"name": "label"}]), r"outputs\.label\[0\]\.kind"),
        (lambda d: d.update(outputs=[]), "outputs"),
    ],
)
def test_validation_names_the_bad_field(profile, mutate, field):
    with pytest.raises(ValueError, match=rf"reference profile: {field}"):
        validate_profile(_broken(profile, mutate))


def test_validate_rejects_non_object():
    with pytest.raises(ValueError, match="JSON object"):
        validate_profile([1, 2])


def test_load_profile_errors_name_the_file(profile, tmp_path):
    path = tmp_path / "reference.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_profile(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="UTF-8"):
        load_profile(path)
    path.write_text(json.dumps(_broken(profile, lambda d: d.update(top_k=0))), encoding="utf-8")
    with pytest.raises(ValueError, match=r"reference\.json: reference profile: top_k"):
        load_profile(path)
    with pytest.raises(ValueError, match="bins"):
        save_profile(_broken(profile, lambda d: d.update(bins=0)), tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


def test_saved_profile_is_readable_by_others(tmp_path):
    import stat

    x = np.random.default_rng(0).standard_normal((50, 2))
    save_profile(build_profile(x, ["a", "b"]), tmp_path / "reference.json")
    mode = stat.S_IMODE((tmp_path / "reference.json").stat().st_mode)
    assert mode & 0o044 == 0o044
