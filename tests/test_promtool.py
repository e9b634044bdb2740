"""Our ``/metrics`` exposition passes Prometheus's own linter (``promtool check metrics``).

A real server on a registry with every kind of family populated (request outcomes, latency
and batch histograms, load failures, rejected inputs, drift gauges, reference bins, prediction
classes) is scraped and the text is piped to ``promtool``, which comes from Debian's
``prometheus`` package (``scripts/test`` installs it). Without ``promtool`` this test fails
rather than skips: a lint that silently does not run is no lint. The OpenMetrics variant is
checked with prometheus_client's strict OpenMetrics parser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from mlserve.monitoring import build_profile, save_profile

from .conftest import linear_model, running_server, write_version

N_FEATURES = 6
NAMES = [f"f{i}" for i in range(N_FEATURES)]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``watched`` v1 (batched) and v2 with reference profiles, a corrupt v3, and ``plain``."""
    root = tmp_path_factory.mktemp("promtool")
    rng = np.random.default_rng(3)
    x_ref = rng.standard_normal((2000, N_FEATURES)).astype(np.float32)
    for version in (1, 2):
        vdir = write_version(root, "watched", version, linear_model(N_FEATURES, seed=version))
        sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
        scores, label = sess.run(None, {"X": x_ref})
        profile = build_profile(x_ref, NAMES, outputs={"scores": scores, "label": label})
        save_profile(profile, vdir / "reference.json")
    (root / "watched" / "3").mkdir()
    (root / "watched" / "3" / "model.onnx").write_bytes(b"\x08\x07not a protobuf")
    (root / "watched" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[monitoring]\nmin_window = 50\n'
        "[batching]\nmax_batch_size = 8\nmax_delay_us = 200\n"
    )
    write_version(root, "plain", 1, linear_model(N_FEATURES))
    return root


def _body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


@pytest.fixture(scope="module")
def expositions(monitored: Path) -> dict[str, str]:
    """The text and OpenMetrics scrapes after traffic of every outcome."""
    rng = np.random.default_rng(4)
    with running_server(monitored) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        for i in range(40):
            x = rng.standard_normal((4, N_FEATURES)).astype(np.float32)
            x[0, i % N_FEATURES] += 3.0  # some values beyond the reference range
            for path in ("watched/versions/1", "watched/versions/2", "watched", "plain"):
                r = c.post(f"/v2/models/{path}/infer", json=_body(x))
                assert r.status_code == 200, r.text
        bad = c.post("/v2/models/watched/infer", json=_body(np.zeros((1, 5), np.float32)))
        assert bad.status_code == 400
        assert c.post("/v2/models/watched/infer", content=b"{not json").status_code == 400
        text = c.get("/metrics")
        om = c.get("/metrics", headers={"Accept": OPENMETRICS})
    assert text.status_code == 200 and om.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    return {"text": text.text, "openmetrics": om.text}


@pytest.mark.slow
def test_scrape_covers_every_family(expositions: dict[str, str]) -> None:
    """The scrape linted below is not a near-empty one: every family has samples."""
    names = {f.name: len(f.samples) for f in text_string_to_metric_families(expositions["text"])}
    for family in (
        "mlserve_workers",
        "mlserve_requests",
        "mlserve_inference_rows",
        "mlserve_request_duration_seconds",
        "mlserve_queue_duration_seconds",
        "mlserve_inference_duration_seconds",
        "mlserve_batch_size",
        "mlserve_pending_requests",
        "mlserve_model_ready",
        "mlserve_model_load_seconds",
        "mlserve_model_load_failures",
        "mlserve_input_rejected",
        "mlserve_feature_drift",
        "mlserve_feature_bin",
        "mlserve_feature_reference_ratio",
        "mlserve_feature_window_bin",  # what the fleet's drift rules sum (deploy/prometheus)
        "mlserve_feature_reference_bin",
        "mlserve_feature_reference_midrank",
        "mlserve_drift_rule",
        "mlserve_feature_missing",
        "mlserve_feature_out_of_range",
        "mlserve_prediction_class",
        "mlserve_drift_alert",
    ):
        assert names.get(family, 0) > 0, f"{family} has no samples"


def test_promtool_check_metrics_finds_no_problems(expositions: dict[str, str]) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool not found: install Debian's 'prometheus' package (scripts/test does)"
    )
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=expositions["text"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    report = "\n".join(problems)
    assert proc.returncode == 0 and not problems, f"promtool exit {proc.returncode}:\n{report}"


def test_openmetrics_variant_parses_strictly(expositions: dict[str, str]) -> None:
    om = expositions["openmetrics"]
    assert om.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(om)}
    text = {f.name: f for f in text_string_to_metric_families(expositions["text"])}
    assert set(families) == set(text)
    for name, family in families.items():  # the same families, types and samples
        assert family.type == text[name].type, name
        assert len(family.samples) == len(text[name].samples) > 0, name
    assert families["mlserve_requests"].type == "counter"
    assert families["mlserve_request_duration_seconds"].type == "histogram"
