"""IO binding: the bound path gives the same answers as the plain one (checked on the CPU
provider, where ``io_binding = "on"`` binds to host memory); ``auto`` keeps whichever of
bound and plain runs warm-up timed faster. The node provider report (from a warm-up
profile) against the graph itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from mlserve.config import ExecutionConfig, InputPolicy, parse_model_config
from mlserve.errors import ConfigError
from mlserve.runtime.session import ModelSession

from .conftest import linear_model, running_server, write_version


def _session(path: Path, binding: str) -> ModelSession:
    config = ExecutionConfig(io_binding=binding)
    return ModelSession("m", 1, path, config, InputPolicy(), 1 << 30)


def test_bound_and_plain_runs_agree(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, linear_model())
    path = tmp_path / "m" / "1" / "model.onnx"
    x = np.random.default_rng(0).normal(size=(33, 20)).astype(np.float32)
    plain, bound, auto = (_session(path, b) for b in ("off", "on", "auto"))
    assert (plain.io_device, bound.io_device, auto.io_device) == (None, "cpu", None)
    assert bound.describe()["io_binding"] == {"setting": "on", "chosen": "on", "device": "cpu"}
    for a, b in zip(plain.run({"X": x}), bound.run({"X": x}), strict=True):
        np.testing.assert_array_equal(a, b)
    (only,) = bound.run({"X": x[::2]}, ["scores"])  # a strided view and one requested output
    np.testing.assert_array_equal(only, plain.run({"X": x[::2]}, ["scores"])[0])


def test_io_binding_setting_is_validated() -> None:
    assert parse_model_config({"execution": {"io_binding": "on"}}).execution.io_binding == "on"
    with pytest.raises(ConfigError, match="io_binding must be one of auto, on, off"):
        parse_model_config({"execution": {"io_binding": "gpu"}})


def test_served_with_io_binding(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    for name, binding in (("bound", "on"), ("plain", "off")):
        write_version(registry, name, 1, linear_model())
        (registry / name / "model.toml").write_text(f'[execution]\nio_binding = "{binding}"\n')
    data = np.random.default_rng(1).normal(size=(4, 20)).astype(np.float32)
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [4, 20],
                        "data": data.ravel().tolist()}]}  # fmt: skip
    with running_server(registry) as srv:
        answers = [
            httpx.post(f"{srv.url}/v2/models/{n}/infer", json=body) for n in ("bound", "plain")
        ]
        assert [r.status_code for r in answers] == [200, 200]
        assert answers[0].json()["outputs"] == answers[1].json()["outputs"]
        meta = httpx.get(srv.url + "/v2/models/bound/versions/1").json()
        assert meta["parameters"]["io_binding"] == {
            "setting": "on",
            "chosen": "on",
            "device": "cpu",
        }


def test_bound_runs_still_report_bad_input_as_invalid(tmp_path: Path) -> None:
    from mlserve.errors import InvalidInput

    write_version(tmp_path, "m", 1, linear_model())
    bound = _session(tmp_path / "m" / "1" / "model.onnx", "on")
    with pytest.raises(InvalidInput):  # not InferenceFailed (a 500)
        bound.run({"X": np.zeros((2, 19), np.float32)})


def test_binding_that_fails_at_warm_up_is_switched_off_with_a_note(tmp_path: Path) -> None:
    from .conftest import echo_model

    write_version(tmp_path, "echo", 1, echo_model())  # string tensors cannot be bound
    session = _session(tmp_path / "echo" / "1" / "model.onnx", "on")
    session.warm_up(None)
    assert session.io_device is None
    assert any(n.startswith("io_binding off") for n in session.describe()["notes"])


def test_auto_keeps_the_faster_way_as_timed_at_warm_up(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, linear_model())
    session = _session(tmp_path / "m" / "1" / "model.onnx", "auto")
    session.warm_up(None)
    info = session.describe()["io_binding"]
    assert info["setting"] == "auto" and info["device"] == "cpu"
    assert info["bound_us"] > 0 and info["plain_us"] > 0
    faster = "on" if info["bound_us"] < info["plain_us"] else "off"
    assert info["chosen"] == faster
    assert session.io_device == ("cpu" if faster == "on" else None)
    # The mode decision uses the chosen way's median.
    median = session.describe()["warmup"]["median_us"]
    assert median == round(min(info["bound_us"], info["plain_us"]), 1)


def test_forced_settings_are_not_timed(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, linear_model())
    for setting, device in (("on", "cpu"), ("off", None)):
        session = _session(tmp_path / "m" / "1" / "model.onnx", setting)
        session.warm_up(None)
        assert session.io_device == device
        assert "bound_us" not in session.describe()["io_binding"]


def test_auto_with_a_model_that_cannot_be_bound_runs_plain_without_a_warning(
    tmp_path: Path,
) -> None:
    from .conftest import echo_model

    write_version(tmp_path, "echo", 1, echo_model())
    session = _session(tmp_path / "echo" / "1" / "model.onnx", "auto")
    session.warm_up(None)
    info = session.describe()["io_binding"]
    assert info["chosen"] == "off" and info["unusable"].startswith("a bound run failed")
    assert "notes" not in session.describe()


@pytest.mark.parametrize("optimization", ["disabled", "all"])
def test_node_providers_from_the_warm_up_profile(tmp_path: Path, optimization: str) -> None:
    proto = linear_model()
    write_version(tmp_path, "m", 1, proto)
    config = ExecutionConfig(graph_optimization=optimization)
    session = ModelSession(
        "m", 1, tmp_path / "m/1/model.onnx", config, InputPolicy(), 1 << 30, node_report="on"
    )
    profile_dir = Path(str(session._profile_dir))
    assert profile_dir.is_dir()
    session.warm_up(None)
    assert not profile_dir.exists()  # the profile is read once and deleted
    (report,) = session.describe()["node_providers"].values()
    assert list(session.describe()["node_providers"]) == ["CPUExecutionProvider"]
    if optimization == "disabled":  # the graph's own nodes, one each
        assert report == {
            "nodes": len(proto.graph.node),
            "ops": sorted(n.op_type for n in proto.graph.node),
        }
    else:  # MatMul + Add fused into one Gemm
        assert report == {"nodes": 2, "ops": ["ArgMax", "Gemm"]}


def test_node_report_auto_on_the_cpu_provider_alone_needs_no_profile(tmp_path: Path) -> None:
    write_version(tmp_path, "m", 1, linear_model())
    session = ModelSession(
        "m", 1, tmp_path / "m/1/model.onnx", ExecutionConfig(), InputPolicy(), 1 << 30,
        node_report="auto",
    )  # fmt: skip
    assert session._profile_dir is None
    session.warm_up(None)
    assert session.describe()["node_providers"] == {"CPUExecutionProvider": {"nodes": "all"}}
