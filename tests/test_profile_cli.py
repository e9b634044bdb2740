"""``mlserve profile``: reference profiles from .npz, .csv and .parquet files, run as a command.

Every written profile is checked against an independent recount of the data: numeric bins
with ``np.searchsorted(edges, x, side="right")``, categorical levels with a ``Counter``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlserve.monitoring import load_profile, save_profile
from mlserve.reference_data import profile_from_file

from .conftest import linear_model, write_version

NAMES = ["income", "visits", "ratio", "score"]
N_ROWS = 1500


def run_profile(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m mlserve profile ARGS`` in ``cwd``."""
    cmd = [sys.executable, "-m", "mlserve", "profile", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def ok(cwd: Path, *args: str | Path) -> dict[str, Any]:
    """Run the command, expect success and a one-line summary; return the written profile."""
    proc = run_profile(cwd, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    (line,) = proc.stdout.splitlines()
    out = Path(str(args[list(args).index("--out") + 1]))
    path = out / "reference.json" if out.is_absolute() else cwd / out / "reference.json"
    profile = load_profile(path)
    summary = f": {profile['n_rows']} rows, {len(profile['features'])} features, outputs: "
    assert line.startswith("wrote ") and summary in line
    return profile


def check_section(section: list[dict[str, Any]], x: np.ndarray) -> None:
    """Each entry's counts equal an independent recount of its column of ``x`` as FP32 (the
    default datatype of a profile, and the model inputs' here)."""
    x2 = x.reshape(-1, 1) if x.ndim == 1 else x
    for e in section:
        col = x2[:, e["column"]]
        assert e["n"] == x2.shape[0]
        if e["kind"] == "numeric":
            v = np.array(col.tolist(), dtype=np.float64).astype(np.float32).astype(np.float64)
            edges = np.array(e["edges"], dtype=np.float64)
            assert np.all(np.diff(edges) > 0), e["name"]
            present = v[~np.isnan(v)]
            recount = np.bincount(
                np.searchsorted(edges, present, side="right"), minlength=edges.size + 1
            )
            assert e["counts"] == recount.tolist(), e["name"]
            assert e["missing"] == int(np.isnan(v).sum())
            finite = v[np.isfinite(v)]
            assert (e["min"], e["max"]) == (finite.min(), finite.max())
            assert e["mean"] == pytest.approx(finite.mean(), rel=1e-9)
        else:
            values = [
                v for v in col.tolist() if v is not None and not (isinstance(v, float) and v != v)
            ]
            counter = Counter(values)
            levels = [counter[lv] for lv in e["levels"]]
            assert e["counts"] == [*levels, len(values) - sum(levels)], e["name"]
            assert e["missing"] == x2.shape[0] - len(values)
            top = sorted(counter.values(), reverse=True)[: len(e["levels"])]
            assert sorted(levels, reverse=True) == top  # the commonest levels were kept


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    """Reference data: continuous, discrete with ties, NaN and ±Inf."""
    rng = np.random.default_rng(7)
    X = np.column_stack(
        [
            rng.lognormal(3, 0.5, N_ROWS),
            rng.poisson(1.2, N_ROWS).astype(float),
            rng.beta(2, 5, N_ROWS),
            rng.normal(0, 1, N_ROWS),
        ]
    )
    X[::37, 2] = np.nan
    X[::101, 3] = np.inf
    X[5::103, 3] = -np.inf
    return X


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FP32 model: ``scores`` (N×3 float) and ``label`` (N int64) from 4 features."""
    root = tmp_path_factory.mktemp("models")
    return write_version(root, "linear", 1, linear_model(n_features=len(NAMES))) / "model.onnx"


def model_outputs(model: Path, X: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"X": X.astype(np.float32)}), strict=True))


def write_csv(path: Path, header: list[str], columns: list[list[str]]) -> None:
    lines = [",".join(header), *(",".join(row) for row in zip(*columns, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def test_npz_with_feature_names(tmp_path: Path, X: np.ndarray) -> None:
    np.savez(tmp_path / "ref.npz", X=X, y=np.zeros(N_ROWS), feature_names=np.array(NAMES))
    profile = ok(tmp_path, "--data", "ref.npz", "--out", "v1", "--bins", "8")
    assert [f["name"] for f in profile["features"]] == NAMES
    assert all(f["kind"] == "numeric" for f in profile["features"])
    assert (profile["n_rows"], profile["bins"], profile["outputs"]) == (N_ROWS, 8, {})
    assert len(profile["features"][0]["edges"]) == 7
    assert len(profile["features"][1]["edges"]) < 7  # ties collapsed
    check_section(profile["features"], X)
    library = profile_from_file(tmp_path / "ref.npz", bins=8)  # the command is this, saved
    assert json.loads(json.dumps(library)) == profile


@pytest.mark.parametrize(
    ("arrays", "args", "rows", "names"),
    [
        (
            {"X_train": slice(0, 1000), "X_test": slice(1000, None)},
            [],
            1000,
            ["f0", "f1", "f2", "f3"],
        ),
        ({"data": slice(None), "y": 0}, ["--feature-names", "a, b,c,d"], N_ROWS, list("abcd")),
        ({"X": slice(0, 10), "other": slice(None)}, ["--input-key", "other"], N_ROWS, None),
    ],
    ids=["X_train", "only-2d", "input-key"],
)
def test_npz_array_choice(
    tmp_path: Path,
    X: np.ndarray,
    arrays: dict[str, Any],
    args: list[str],
    rows: int,
    names: list[str] | None,
) -> None:
    data = {k: X[v] if isinstance(v, slice) else np.zeros(N_ROWS) for k, v in arrays.items()}
    np.savez(tmp_path / "ref.npz", **data)
    profile = ok(tmp_path, "--data", "ref.npz", "--out", "out", *args)
    assert profile["n_rows"] == rows
    expected = names or [f"f{j}" for j in range(len(NAMES))]
    assert [f["name"] for f in profile["features"]] == expected
    check_section(profile["features"], X[:rows])


def test_csv_with_categorical_columns(tmp_path: Path, X: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    region = rng.choice(["north", "south", "east", "west"], N_ROWS, p=[0.5, 0.3, 0.15, 0.05])
    region[::50] = ""  # missing
    code = rng.integers(0, 30, N_ROWS).astype(str)  # numeric codes, named categorical
    income = [repr(float(v)) for v in X[:, 0]]
    income[3] = ""  # an empty numeric cell is missing
    write_csv(
        tmp_path / "ref.csv", ["income", "region", "code"], [income, list(region), list(code)]
    )
    out = tmp_path / "deep" / "v3"  # made if missing; an absolute path
    profile = ok(
        tmp_path, "--data", "ref.csv", "--out", out, "--categorical", "code", "--top-k", "25"
    )
    kinds = {f["name"]: f["kind"] for f in profile["features"]}
    assert kinds == {"income": "numeric", "region": "categorical", "code": "categorical"}
    region_entry, code_entry = profile["features"][1:]
    assert set(region_entry["levels"]) == {"north", "south", "east", "west"}
    assert region_entry["missing"] == len(region[::50])
    assert all(isinstance(lv, float) for lv in code_entry["levels"])  # numbers, as in a tensor
    assert len(code_entry["levels"]) == 25 and code_entry["counts"][-1] > 0  # others
    expected = np.empty((N_ROWS, 3), dtype=object)
    expected[:, 0] = [float(v) if v else np.nan for v in income]
    expected[:, 1] = [v or None for v in region]
    expected[:, 2] = code.astype(float)
    check_section(profile["features"], expected)


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_model_outputs(tmp_path: Path, X: np.ndarray, model: Path, fmt: str) -> None:
    if fmt == "npz":
        np.savez(tmp_path / "ref.npz", X_train=X, feature_names=np.array(NAMES))
    else:
        write_csv(
            tmp_path / "ref.csv", NAMES, [[repr(float(v)) for v in X[:, j]] for j in range(4)]
        )
    profile = ok(tmp_path, "--data", f"ref.{fmt}", "--out", "v1", "--model", model)
    assert [f["name"] for f in profile["features"]] == NAMES
    check_section(profile["features"], X)
    outputs = model_outputs(model, X)
    assert set(profile["outputs"]) == {"scores", "label"}
    scores = profile["outputs"]["scores"]
    assert [s["name"] for s in scores] == ["scores[0]", "scores[1]", "scores[2]"]
    assert all(s["kind"] == "numeric" for s in scores)
    check_section(scores, outputs["scores"])
    (label,) = profile["outputs"]["label"]
    assert label["kind"] == "categorical"
    assert set(label["levels"]) == set(np.unique(outputs["label"]).tolist())
    check_section(profile["outputs"]["label"], outputs["label"])


def test_parquet(tmp_path: Path, X: np.ndarray) -> None:
    have = [m for m in ("pyarrow", "pandas") if importlib.util.find_spec(m) is not None]
    if not have:  # no reader: a clear message, and no file written
        (tmp_path / "ref.parquet").write_bytes(b"PAR1")
        proc = run_profile(tmp_path, "--data", "ref.parquet", "--out", "v1")
        assert proc.returncode == 2
        assert proc.stderr == "mlserve: reading ref.parquet needs pyarrow: pip install pyarrow\n"
        assert not (tmp_path / "v1").exists()
        return
    pa = pytest.importorskip("pyarrow")  # pandas alone needs an engine to write parquet
    import pyarrow.parquet as pq

    table = {name: X[:, j] for j, name in enumerate(NAMES)}
    table["region"] = np.array(["a", "b", None] * (N_ROWS // 3), dtype=object)
    pq.write_table(pa.table(table), tmp_path / "r.parquet")
    profile = ok(tmp_path, "--data", "r.parquet", "--out", "v1")
    assert [f["name"] for f in profile["features"]] == [*NAMES, "region"]
    expected = np.empty((N_ROWS, 5), dtype=object)
    expected[:, :4] = X
    expected[:, 4] = table["region"]
    check_section(profile["features"], expected)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, X: np.ndarray, model: Path) -> Path:
    root = tmp_path_factory.mktemp("bad")
    np.savez(root / "ok.npz", X=X)
    np.savez(root / "one_d.npz", X=X[:, 0])
    np.savez(root / "two.npz", A=X, B=X)
    np.savez(root / "empty.npz", X=X[:0])
    np.savez(root / "names.npz", X=X, feature_names=np.array(["a", "b"]))
    np.save(root / "plain.npy", X)
    (root / "text.npz").write_text("not a zip\n")
    write_csv(root / "text.csv", ["a", "b", "c", "d"], [["1", "x"]] * 4)
    (root / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (root / "data.txt").write_text("a\n1\n")
    (root / "broken.onnx").write_bytes(b"\x08\x07 not a protobuf")
    (root / "narrow.onnx").write_bytes(linear_model(n_features=3).SerializeToString())
    return root


BAD = {  # test id: (arguments, the message's expected part)
    "missing-file": (["--data", "missing.npz"], "reference data missing.npz does not exist"),
    "wrong-key": (["--data", "ok.npz", "--input-key", "Z"], "ok.npz has no array 'Z' (arrays: X)"),
    "1-d": (["--data", "one_d.npz"], "array 'X' in one_d.npz is 1-D (shape (1500,)); reference"),
    "names-count": (
        ["--data", "ok.npz", "--feature-names", "a,b,c"],
        "--feature-names gives 3 names for the 4 columns of ok.npz",
    ),
    "npz-names-count": (
        ["--data", "names.npz"],
        "'feature_names' in names.npz has shape (2,); expected one name per column of 'X' (4)",
    ),
    "ambiguous": (["--data", "two.npz"], "two.npz holds 2 2-D arrays (A, B) and no 'X' or 'X_tr"),
    "no-rows": (["--data", "empty.npz"], "reference data empty.npz has no rows"),
    "npy": (["--data", "plain.npy"], "unknown format '.npy' (.npz, .csv, .parquet)"),
    "not-zip": (["--data", "text.npz"], "text.npz is not an .npz archive (not a zip file)"),
    "ragged-csv": (["--data", "ragged.csv"], "ragged.csv: line 3 has 1 fields, the header has 2"),
    "key-for-csv": (["--data", "ragged.csv", "--input-key", "X"], "--input-key applies to .npz"),
    "unknown-categorical": (
        ["--data", "ok.npz", "--categorical", "f9"],
        "categorical names unknown features: ['f9']",
    ),
    "bins": (["--data", "ok.npz", "--bins", "1"], "bins must be an integer >= 2, got 1"),
    "broken-model": (["--data", "ok.npz", "--model", "broken.onnx"], "cannot load model broken"),
    "missing-model": (["--data", "ok.npz", "--model", "nope.onnx"], "model nope.onnx does not"),
    "model-width": (
        ["--data", "ok.npz", "--model", "narrow.onnx"],
        "model narrow.onnx input 'X' takes 3 features; the data has 4",
    ),
    "text-to-model": (
        ["--data", "text.csv", "--model", "MODEL"],
        "the data cannot be fed to model",
    ),
}


@pytest.mark.parametrize(("args", "message"), list(BAD.values()), ids=list(BAD))
@pytest.mark.slow
def test_bad_inputs_exit_2(bad_files: Path, model: Path, args: list[str], message: str) -> None:
    args = [str(model) if a == "MODEL" else a for a in args]
    proc = run_profile(bad_files, *args, "--out", "v1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("mlserve: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert proc.stdout == ""
    assert not (bad_files / "v1").exists()


def test_unwritable_out_exits_2(tmp_path: Path, X: np.ndarray) -> None:
    np.savez(tmp_path / "ref.npz", X=X)
    (tmp_path / "file").write_text("")
    proc = run_profile(tmp_path, "--data", "ref.npz", "--out", "file")
    assert proc.returncode == 2 and proc.stderr.startswith("mlserve: ")
    assert "File exists" in proc.stderr


def test_profile_round_trips_through_save(tmp_path: Path, X: np.ndarray) -> None:
    """The library result is a valid profile (what the command saves)."""
    np.savez(tmp_path / "ref.npz", X=X)
    profile = profile_from_file(tmp_path / "ref.npz", feature_names=NAMES, categorical=["visits"])
    save_profile(profile, tmp_path / "reference.json")
    assert load_profile(tmp_path / "reference.json") == json.loads(json.dumps(profile))
    assert [f["kind"] for f in profile["features"]][:2] == ["numeric", "categorical"]
    check_section(profile["features"], X)
