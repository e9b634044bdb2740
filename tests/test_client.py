"""mlserve.client and ``mlserve predict`` against a live server, pinned to in-process
onnxruntime on a real scikit-learn model (logistic regression on breast cancer data)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.cli import main
from mlserve.client import Client, ServerError, TransportError, output_columns
from mlserve.monitoring.profile import build_profile, save_profile

from .conftest import ServerProcess, free_port, running_server, write_version

MAX_ROWS = 1000  # the model's [inputs] max_rows: more rows than this need chunking


class Cancer:
    """The data, the ONNX model and in-process onnxruntime's answers on float32 rows."""

    def __init__(self) -> None:
        data = load_breast_cancer()
        self.names = [str(n) for n in data.feature_names]
        self.X = np.asarray(data.data, dtype=np.float64)
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        pipe.fit(self.X, data.target)
        self.proto: onnx.ModelProto = convert_sklearn(
            pipe, initial_types=[("X", FloatTensorType([None, 30]))], options={"zipmap": False}
        )
        self.session = ort.InferenceSession(
            self.proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )

    def expected(self, X: np.ndarray) -> dict[str, np.ndarray]:
        label, proba = self.session.run(None, {"X": X.astype(np.float32)})
        return {"label": label, "probabilities": proba}


@pytest.fixture(scope="module")
def cancer() -> Cancer:
    return Cancer()


@pytest.fixture(scope="module")
def server(cancer: Cancer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``cancer`` v1 with its feature names (reference.json) and ``max_rows`` 1,000."""
    root = tmp_path_factory.mktemp("client-registry")
    vdir = write_version(root, "cancer", 1, cancer.proto)
    save_profile(build_profile(cancer.X, cancer.names), vdir / "reference.json")
    (root / "cancer" / "model.toml").write_text(f"[inputs]\nmax_rows = {MAX_ROWS}\n")
    with running_server(root) as srv:
        yield srv


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=30) as c:
        yield c


def sent_types(client: Client) -> list[str]:
    """The content-type of every request ``client`` sends from now on."""
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        if request.method == "POST":
            seen.append(request.headers["content-type"])

    client._http.event_hooks["request"].append(hook)
    return seen


def assert_same(got: Any, want: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(np.asarray(got["label"]), want["label"])
    np.testing.assert_allclose(np.asarray(got["probabilities"]), want["probabilities"], atol=1e-6)


def rows(cancer: Cancer, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows drawn from the data with a little noise (any number of distinct rows)."""
    rng = np.random.default_rng(seed)
    X = cancer.X[rng.integers(0, len(cancer.X), n)]
    return X * (1 + 0.01 * rng.standard_normal(X.shape))


# ---------------------------------------------------------------------- the model's own input
@pytest.mark.parametrize("binary", [False, True])
def test_numpy_rows_equal_onnxruntime_json_and_binary(
    client: Client, cancer: Cancer, binary: bool
) -> None:
    X = cancer.X[:50].astype(np.float32)
    types = sent_types(client)
    got = client.predict("cancer", X, binary=binary)
    assert types == ["application/octet-stream" if binary else "application/json"]
    assert set(got) == {"label", "probabilities"}
    assert got["label"].dtype == np.int64 and got["probabilities"].dtype == np.float32
    assert_same(got, cancer.expected(X))


def test_binary_chosen_by_size(client: Client, cancer: Cancer) -> None:
    types = sent_types(client)
    client.predict("cancer", cancer.X[:10])  # 300 values: JSON
    client.predict("cancer", cancer.X[:100])  # 3,000 values: binary
    assert types == ["application/json", "application/octet-stream"]


def test_fp64_array_is_cast_by_the_safe_rule(client: Client, cancer: Cancer) -> None:
    X = cancer.X[:40]
    assert X.dtype == np.float64
    assert_same(client.predict("cancer", X), cancer.expected(X))
    assert_same(client.predict("cancer", {"X": X}, version=1), cancer.expected(X))
    with pytest.raises(ValueError, match=r"input 'X'.*text"):
        client.predict("cancer", np.full((2, 30), "a"))


def test_chunks_of_batch_rows_over_the_servers_row_limit(client: Client, cancer: Cancer) -> None:
    X = rows(cancer, 4 * MAX_ROWS + 321)
    calls: list[tuple[int, int]] = []
    got = client.predict("cancer", X, progress=lambda done, total: calls.append((done, total)))
    assert_same(got, cancer.expected(X))
    assert calls == [(1000, 4321), (2000, 4321), (3000, 4321), (4000, 4321), (4321, 4321)]
    assert_same(client.predict("cancer", X, batch_rows=333), cancer.expected(X))
    with pytest.raises(ServerError) as info:
        client.predict("cancer", X, batch_rows=len(X))
    assert info.value.code == "invalid_input" and "over the limit" in info.value.message


def test_outputs_picks_outputs(client: Client, cancer: Cancer) -> None:
    for binary in (False, True):
        got = client.predict("cancer", cancer.X[:5], outputs=["label"], binary=binary)
        assert list(got) == ["label"]
        np.testing.assert_array_equal(got["label"], cancer.expected(cancer.X[:5])["label"])


# ---------------------------------------------------------------------- errors
def test_errors_carry_the_servers_status_and_code(client: Client, cancer: Cancer) -> None:
    with pytest.raises(ServerError) as info:
        client.predict("cancer", cancer.X[:3, :29], binary=False)
    assert (info.value.status_code, info.value.code) == (400, "invalid_input")
    assert info.value.message == "input 'X' expects shape [-1, 30], got [3, 29]"
    with pytest.raises(ServerError) as info:
        client.predict("nosuch", cancer.X[:3])
    assert (info.value.status_code, info.value.code) == (404, "model_not_found")
    with pytest.raises(ServerError) as info:
        client.predict("cancer", cancer.X[:3], version=7)
    assert (info.value.status_code, info.value.code) == (404, "version_not_found")
    with pytest.raises(ServerError) as info:
        client.predict("cancer", cancer.X[:3], outputs=["nosuch"])
    assert info.value.code == "invalid_input" and "unknown output 'nosuch'" in info.value.message


def test_no_server_is_a_transport_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as c, pytest.raises(TransportError):
        c.ready()


# ---------------------------------------------------------------------- metadata and health
def test_ready_and_metadata(client: Client) -> None:
    assert client.ready() and client.ready("cancer") and client.ready("cancer", 1)
    meta = client.metadata("cancer")
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert client.metadata("cancer", 1)["versions"] == ["1"]
    with pytest.raises(ServerError) as info:
        client.ready("nosuch")
    assert info.value.code == "model_not_found"


# ---------------------------------------------------------------------- named columns
def test_dataframe_in_dataframe_out(client: Client, cancer: Cancer) -> None:
    """Columns by name (shuffled order, float64 → FP32 on the server), index kept."""
    X = rows(cancer, 2500, seed=3)
    frame = pd.DataFrame(X, columns=cancer.names, index=np.arange(len(X)) * 10 + 7)
    frame = frame[list(reversed(cancer.names))]
    got = client.predict("cancer", frame)
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == ["label", "probabilities_0", "probabilities_1"]
    assert (got.index == frame.index).all()
    want = cancer.expected(X)
    np.testing.assert_array_equal(got["label"].to_numpy(), want["label"])
    proba = got[["probabilities_0", "probabilities_1"]].to_numpy()
    np.testing.assert_allclose(proba, want["probabilities"], atol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_dict_of_columns(client: Client, cancer: Cancer, binary: bool) -> None:
    """Each column in its own datatype (FP64, FP32, INT64), cast by the server."""
    X = cancer.X[:20].copy()
    X[:, 0] = np.round(X[:, 0])
    columns: dict[str, np.ndarray] = {n: X[:, j] for j, n in enumerate(cancer.names)}
    columns[cancer.names[0]] = X[:, 0].astype(np.int64)
    columns[cancer.names[1]] = X[:, 1].astype(np.float32)
    assert_same(client.predict("cancer", columns, binary=binary), cancer.expected(X))
    del columns["mean radius"]
    with pytest.raises(ServerError) as info:
        client.predict("cancer", columns, binary=binary)
    assert info.value.code == "invalid_input" and "mean radius" in info.value.message


def test_nan_travels_binary_not_json(client: Client, cancer: Cancer) -> None:
    frame = pd.DataFrame(cancer.X[:4], columns=cancer.names)
    frame.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"'mean radius' holds NaN.*JSON"):
        client.predict("cancer", frame, binary=False)


# ---------------------------------------------------------------------- output columns
def test_output_columns() -> None:
    cols = output_columns(
        {
            "a": np.arange(3),
            "b": np.ones((3, 1)),
            "p": np.arange(6).reshape(3, 2),
            "t": np.arange(12).reshape(3, 2, 2),
        }
    )
    assert list(cols) == ["a", "b", "p_0", "p_1", "t_0", "t_1", "t_2", "t_3"]
    np.testing.assert_array_equal(cols["p_1"], [1, 3, 5])
    np.testing.assert_array_equal(cols["t_2"], [2, 6, 10])
    with pytest.raises(ValueError, match="scalar"):
        output_columns({"s": np.float32(1.0).reshape(())})


# ---------------------------------------------------------------------- mlserve predict
def read_csv(path_or_text: Path | str) -> dict[str, np.ndarray]:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    table = list(csv.reader(io.StringIO(text)))
    return {h: np.array([r[j] for r in table[1:]]) for j, h in enumerate(table[0])}


def assert_same_columns(cols: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(cols) == ["label", "probabilities_0", "probabilities_1"]
    np.testing.assert_array_equal(cols["label"].astype(np.int64), want["label"])
    proba = np.column_stack([cols["probabilities_0"], cols["probabilities_1"]]).astype(np.float32)
    np.testing.assert_allclose(proba, want["probabilities"], atol=1e-6)


def test_cli_predict_npz_without_names(
    server: ServerProcess, cancer: Cancer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An npz without feature names is the model's own input X; 2,500 rows in chunks."""
    X = rows(cancer, 2500, seed=5)
    np.savez(tmp_path / "data.npz", X=X)
    want = cancer.expected(X)
    for out in ("out.npz", "out.csv"):
        code = main(
            ["predict", "--url", server.url, "--model", "cancer", "--data",
             str(tmp_path / "data.npz"), "--out", str(tmp_path / out)]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
    assert "scored 2,500 rows with cancer v1" in capsys.readouterr().err
    with np.load(tmp_path / "out.npz") as npz:
        assert_same(npz, want)
    assert_same_columns(read_csv(tmp_path / "out.csv"), want)


def test_cli_predict_csv_named_columns(
    server: ServerProcess, cancer: Cancer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV columns by name (in another order than the model's); out to parquet and stdout."""
    X = rows(cancer, 1500, seed=7)
    order = list(reversed(range(30)))
    pd.DataFrame(X[:, order], columns=[cancer.names[j] for j in order]).to_csv(
        tmp_path / "data.csv", index=False
    )
    want = cancer.expected(X)
    args = ["predict", "--url", server.url, "--model", "cancer", "--version", "1"]
    data = ["--data", str(tmp_path / "data.csv"), "--batch-rows", "400"]
    assert main([*args, *data, "--out", str(tmp_path / "out.parquet")]) == 0
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert_same_columns({c: frame[c].to_numpy() for c in frame.columns}, want)
    capsys.readouterr()
    assert main([*args, *data]) == 0
    assert_same_columns(read_csv(capsys.readouterr().out), want)


def test_cli_predict_errors(
    server: ServerProcess, cancer: Cancer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.savez(tmp_path / "data.npz", X=cancer.X[:5, :29])
    base = ["predict", "--url", server.url, "--data", str(tmp_path / "data.npz")]
    assert main([*base, "--model", "cancer"]) == 1
    assert "400 invalid_input: input 'X' expects shape [-1, 30]" in capsys.readouterr().err
    assert main([*base, "--model", "nosuch"]) == 1
    assert "404 model_not_found" in capsys.readouterr().err
    assert main([*base, "--model", "cancer", "--out", str(tmp_path / "out.txt")]) == 2
    assert "unknown format '.txt'" in capsys.readouterr().err
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(f"f{j}" for j in range(30)) + "\n")
    base = ["predict", "--url", server.url, "--model", "cancer", "--data", str(header_only)]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "the data to score" in err and "has no rows" in err and "reference" not in err


def test_public_surface() -> None:
    import mlserve.client

    assert sorted(mlserve.client.__all__) == [
        "BINARY_THRESHOLD", "Client", "ClientError", "DEFAULT_BATCH_ROWS", "ServerError",
        "TransportError", "output_columns", "score_file", "write_outputs",
    ]  # fmt: skip


def test_cli_predict_drops_named_columns(
    server: ServerProcess, cancer: Cancer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hold-out CSV with its label and an id column: --drop leaves them out of the requests
    (sent, the server refuses the unknown columns); an unknown --drop names the columns."""
    X = rows(cancer, 300, seed=11)
    frame = pd.DataFrame(X, columns=cancer.names)
    frame.insert(0, "row_id", np.arange(300))
    frame["label"] = cancer.expected(X)["label"]
    frame.to_csv(tmp_path / "heldout.csv", index=False)
    base = ["predict", "--url", server.url, "--model", "cancer", "--version", "1"]
    data = ["--data", str(tmp_path / "heldout.csv")]
    assert main([*base, *data]) == 1  # the extra columns go to the server, which says so
    err = capsys.readouterr().err
    assert "row_id" in err and "leave it out with --drop" in err
    assert main([*base, *data, "--drop", "label", "--drop", "row_id"]) == 0
    assert_same_columns(read_csv(capsys.readouterr().out), cancer.expected(X))
    assert main([*base, *data, "--drop", "lable"]) == 2
    err = capsys.readouterr().err
    assert "no column 'lable' to drop" in err and "row_id" in err


def test_cli_predict_into_a_closed_pipe_exits_quietly(
    server: ServerProcess, cancer: Cancer, tmp_path: Path
) -> None:
    """`mlserve predict ... | head -1`: the reader stops early; no BrokenPipeError traceback."""
    np.savez(tmp_path / "data.npz", X=rows(cancer, 3000, seed=5))
    command = [
        sys.executable, "-m", "mlserve", "predict", "--url", server.url, "--model", "cancer",
        "--data", str(tmp_path / "data.npz"),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what head does after its line
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 0, err
    assert first and "Traceback" not in err and "BrokenPipe" not in err, err
