"""External data weights against a real server process: they are read into memory at load,
so a file truncated or rewritten under a live version changes nothing until a reload (a
mapped file truncated under onnxruntime killed the process with SIGBUS), and the registry
watches them, in a subdirectory of the version too, so that a replaced file is reloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from .conftest import running_server, wait_for

X = [0.5, 1.0, -2.0, 3.0]
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": X}]}
LOCATION = "weights/w.bin"


def write_external_version(vdir: Path, weights: np.ndarray) -> Path:
    """``Y = X + W`` with ``W`` (plus 1 MiB of padding tensor, so the file spans pages) in
    ``weights/w.bin`` below the version directory; returns the weights file."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 4])],
        initializer=[
            numpy_helper.from_array(np.zeros(1 << 18, np.float32), "pad"),
            numpy_helper.from_array(weights.astype(np.float32), "W"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (vdir / "weights").mkdir(parents=True, exist_ok=True)
    onnx.save(
        model,
        str(vdir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=LOCATION,
        size_threshold=0,
    )
    return vdir / LOCATION


def outputs(c: httpx.Client) -> list[float]:
    r = c.post("/v2/models/ext/infer", json=BODY)
    assert r.status_code == 200, r.text
    return list(r.json()["outputs"][0]["data"])


def test_weights_truncated_or_rewritten_in_place_change_nothing_served(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    w1 = np.array([1.0, 2.0, 3.0, 4.0])
    path = write_external_version(root / "ext" / "1", w1)
    data = path.read_bytes()
    # No registry scan in the test's time: only what the live session holds serves.
    with (
        running_server(root, "--poll-seconds", "3600") as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert outputs(c) == (np.array(X) + w1).tolist()
        # "cp new.bin w.bin" truncates first: the mapped pages would be gone (SIGBUS).
        with path.open("r+b") as fh:
            fh.truncate(0)
        assert outputs(c) == (np.array(X) + w1).tolist()
        # Rewritten in place, same size, other weights: the live version is unchanged.
        other = bytearray(data)
        w_at = len(data) - 16  # W is the last tensor written
        other[w_at:] = np.full(4, 100.0, np.float32).tobytes()
        with path.open("r+b") as fh:
            fh.write(other)
        assert outputs(c) == (np.array(X) + w1).tolist()
        assert srv.proc.poll() is None


@pytest.mark.slow
def test_weights_replaced_in_a_version_subdirectory_are_reloaded(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    w1 = np.array([1.0, 2.0, 3.0, 4.0])
    path = write_external_version(root / "ext" / "1", w1)
    data = path.read_bytes()
    with (
        running_server(root, "--poll-seconds", "0.1", "--full-scan-every", "1000") as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        assert outputs(c) == (np.array(X) + w1).tolist()
        # Atomically replaced (a new inode) in weights/: quick scans see it and reload.
        w2 = np.array([10.0, 20.0, 30.0, 40.0])
        tmp = path.with_name(".w.bin.tmp")
        tmp.write_bytes(data[:-16] + w2.astype(np.float32).tobytes())
        os.replace(tmp, path)
        wait_for(lambda: outputs(c) == (np.array(X) + w2).tolist(), timeout=15)
        # Rewritten in place: reloaded too.
        w3 = np.array([-1.0, -2.0, -3.0, -4.0])
        with path.open("r+b") as fh:
            fh.seek(len(data) - 16)
            fh.write(w3.astype(np.float32).tobytes())
        wait_for(lambda: outputs(c) == (np.array(X) + w3).tolist(), timeout=15)


def test_weights_of_a_subgraph_constant_are_read_into_memory_too(tmp_path: Path) -> None:
    """onnxruntime takes only the main graph's initializers from memory and maps a large
    tensor of a node attribute in a subgraph from its file: such tensors are written into
    the model before it is handed over, so truncating the file changes nothing either."""
    from mlserve.config import ExecutionConfig, InputPolicy
    from mlserve.runtime.session import ModelSession

    n = 4 << 20  # 16 MiB at offset 0: what onnxruntime maps rather than reads
    values = np.arange(n, dtype=np.float32) % 7
    const = numpy_helper.from_array(values, "C0")
    const.ClearField("raw_data")
    const.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(values.nbytes))):
        entry = const.external_data.add()
        entry.key, entry.value = key, value
    branch = helper.make_graph(
        [
            helper.make_node("Constant", [], ["C"], value=const),
            helper.make_node("ReduceSum", ["C"], ["S"], keepdims=0),
        ],
        "branch",
        [],
        [helper.make_tensor_value_info("S", TensorProto.FLOAT, [])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["S"], then_branch=branch, else_branch=branch),
            helper.make_node("Add", ["X", "S"], ["Y"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    vdir = tmp_path / "m" / "1"
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(model.SerializeToString())
    (vdir / "w.bin").write_bytes(values.tobytes())
    execution = ExecutionConfig(graph_optimization="disabled")
    session = ModelSession("m", 1, vdir / "model.onnx", execution, InputPolicy(), 1 << 20)
    assert session.external_files[0][0] == "w.bin"
    feeds = {"X": np.zeros(1, np.float32), "cond": np.array(True)}
    want = float(values.astype(np.float64).sum())
    assert session.run(feeds)[0].tolist() == [want]
    with (vdir / "w.bin").open("r+b") as fh:
        fh.truncate(0)  # a mapped tensor would now kill the process with SIGBUS
    assert session.run(feeds)[0].tolist() == [want]


def test_external_data_beyond_its_file_is_refused(tmp_path: Path) -> None:
    from mlserve.config import ExecutionConfig, InputPolicy
    from mlserve.errors import ModelLoadError
    from mlserve.runtime.session import ModelSession

    path = write_external_version(tmp_path / "m" / "1", np.ones(4))
    path.write_bytes(path.read_bytes()[:100])
    try:
        ModelSession("m", 1, tmp_path / "m/1/model.onnx", ExecutionConfig(), InputPolicy(), 1 << 20)
        raise AssertionError("a truncated weights file was loaded")
    except ModelLoadError as exc:
        assert str(exc) == (
            f"external data in {LOCATION!r}: {1 << 20} bytes at offset 0 lie beyond the "
            "file's 100 bytes (a truncated or mismatched weights file?)"
        )
