"""Monitoring through a real server: exact metric values, drift over HTTP, workers, SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from mlserve.http.monitor import quantile
from mlserve.monitoring import build_profile, save_profile
from mlserve.monitoring.drift import PSI_PSEUDO_COUNT
from mlserve.monitoring.request_stats import LATENCY_BUCKETS, Histogram
from mlserve.monitoring.snapshot import (
    EndpointState,
    HistogramState,
    RoleStats,
    ServingSection,
    VersionGauges,
    WorkerSnapshot,
    merge,
    merge_monitor_states,
)

from .conftest import linear_model, running_server, wait_for, write_version
from .support.metrics import scrape
from .support.raw_http import connect

N_FEATURES = 20
NAMES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``watched`` v1, v2 with reference profiles; ``plain`` without one."""
    root = tmp_path_factory.mktemp("monitored")
    rng = np.random.default_rng(5)
    x_ref = rng.standard_normal((5000, N_FEATURES)).astype(np.float32)
    for version in (1, 2):
        vdir = write_version(root, "watched", version, linear_model(seed=version))
        sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
        scores, label = sess.run(None, {"X": x_ref})
        profile = build_profile(x_ref, NAMES, outputs={"scores": scores, "label": label})
        save_profile(profile, vdir / "reference.json")
    (root / "watched" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[monitoring]\nmin_window = 200\n'
    )
    write_version(root, "plain", 1, linear_model())
    return root


def body(x: np.ndarray, outputs: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    if outputs:
        doc["outputs"] = [{"name": n} for n in outputs]
    return doc


def raw_status(port: int, headers: dict[str, str], hang_up: bool = False) -> int | None:
    """Send only the headers of a POST; return the status, or hang up without waiting."""
    with connect(port, 10) as sock:
        lines = ["POST /v2/models/watched/infer HTTP/1.1", "Host: x"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if hang_up:
            return None
        return int(sock.recv(4096).split(b" ", 2)[1])


@pytest.mark.slow
def test_metric_values_after_a_known_sequence(watched: Path) -> None:
    rng = np.random.default_rng(11)
    sent_v1 = [rng.standard_normal((2, N_FEATURES)).astype(np.float32) for _ in range(5)]
    sent_v2 = [rng.standard_normal((1, N_FEATURES)).astype(np.float32) for _ in range(3)]
    with running_server(watched) as srv, httpx.Client(base_url=srv.url) as c:
        for x in sent_v1:
            assert c.post("/v2/models/watched/versions/1/infer", json=body(x)).status_code == 200
        for x in sent_v2:
            r = c.post("/v2/models/watched/infer", json=body(x, ["label"]))
            assert r.status_code == 200
        bad = np.zeros((1, 19), np.float32)
        for _ in range(2):
            assert c.post("/v2/models/watched/infer", json=body(bad)).status_code == 400
        r = c.post("/v2/models/watched/infer", json=body(sent_v2[0], ["nope"]))
        assert r.status_code == 400
        r = c.post("/v2/models/watched/infer", content=b'{"inputs": [')  # before the service
        assert r.status_code == 400
        assert raw_status(srv.port, {"Content-Length": "80000000"}) == 413  # size, not error
        raw_status(srv.port, {"Content-Length": "500"}, hang_up=True)  # not counted at all
        assert c.post("/v2/models/nope/infer", json=body(bad)).status_code == 404
        samples = scrape(srv.url)
        monitor = c.get("/v2/models/watched/versions/1/monitor").json()

    def req(version: str, role: str, outcome: str) -> float:
        return samples.value(
            "mlserve_requests_total",
            model="watched",
            version=version,
            role=role,
            outcome=outcome,
        )

    assert req("1", "pinned", "success") == 5 and req("2", "stable", "success") == 3
    assert req("2", "stable", "invalid") == 5 and req("1", "pinned", "invalid") == 0
    assert req("2", "stable", "error") == 0
    assert (
        samples.value("mlserve_inference_rows_total", model="watched", version="1", role="pinned")
        == 10
    )
    assert (
        samples.value(
            "mlserve_request_duration_seconds_count",
            model="watched",
            version="1",
            role="pinned",
        )
        == 5
    )
    assert (
        samples.value("mlserve_input_rejected_total", model="watched", version="2", reason="shape")
        == 2
    )
    assert (
        samples.value("mlserve_input_rejected_total", model="watched", version="2", reason="name")
        == 1
    )
    assert (
        samples.value("mlserve_input_rejected_total", model="watched", version="2", reason="json")
        == 1
    )
    assert (
        samples.value("mlserve_input_rejected_total", model="watched", version="2", reason="size")
        == 1
    )
    assert not any(s.labels.get("model") == "nope" for s in samples)
    assert samples.value("mlserve_model_ready", model="watched", version="2") == 1
    # Every row lands in exactly one bin per feature; predicted classes match onnxruntime.
    for feature in ("f0", "f7"):
        total = samples.value(
            "mlserve_feature_bin_total", model="watched", version="1", feature=feature
        )
        assert total == 10
    sess = ort.InferenceSession(
        str(watched / "watched" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    labels_v1 = sess.run(["label"], {"X": np.concatenate(sent_v1)})[0]
    for cls in range(3):
        expected = int((labels_v1 == cls).sum())
        assert (
            samples.value(
                "mlserve_prediction_class_total",
                model="watched",
                version="1",
                output="label",
                **{"class": str(cls)},
            )
            == expected
        )
        assert monitor["versions"]["1"]["predictions"]["label"].get(str(cls), 0) == expected
    traffic = monitor["versions"]["1"]["requests"]["pinned"]["outcomes"]
    assert traffic == {"success": 5, "invalid": 0, "rejected": 0, "error": 0, "refused": 0}


def independent_psi(edges: list[float], ref_counts: list[int], x: np.ndarray) -> float:
    """PSI from scratch: bin with searchsorted, one pseudo-count per non-empty bin."""
    cur = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    ref = np.asarray(ref_counts, dtype=float)
    keep = (ref + cur) > 0
    p = (ref[keep] + PSI_PSEUDO_COUNT) / (ref[keep] + PSI_PSEUDO_COUNT).sum()
    q = (cur[keep] + PSI_PSEUDO_COUNT) / (cur[keep] + PSI_PSEUDO_COUNT).sum()
    return float(np.sum((q - p) * np.log(q / p)))


def test_drift_is_detected_on_the_shifted_feature_only(watched: Path) -> None:
    rng = np.random.default_rng(12)
    steady = rng.standard_normal((400, N_FEATURES)).astype(np.float32)
    shifted = rng.standard_normal((400, N_FEATURES)).astype(np.float32)
    shifted[:, 3] += 1.0
    profile = json.loads((watched / "watched" / "1" / "reference.json").read_text())
    f3 = next(f for f in profile["features"] if f["name"] == "f3")
    with running_server(watched) as srv, httpx.Client(base_url=srv.url) as c:
        for chunk in np.array_split(steady, 20):
            assert (
                c.post("/v2/models/watched/versions/1/infer", json=body(chunk)).status_code == 200
            )
        for chunk in np.array_split(shifted, 20):
            assert (
                c.post("/v2/models/watched/versions/2/infer", json=body(chunk)).status_code == 200
            )
        v1 = c.get("/v2/models/watched/versions/1/monitor").json()["versions"]["1"]["drift"]
        v2 = c.get("/v2/models/watched/versions/2/monitor").json()["versions"]["2"]["drift"]
        samples = scrape(srv.url)
    assert v1["alert"] is False
    inputs = {f["name"]: f for f in v2["sections"]["inputs"]["features"]}
    assert [n for n, f in inputs.items() if f["alert"]] == ["f3"]
    assert inputs["f3"]["window_count"] == 400
    expected = independent_psi(f3["edges"], f3["counts"], shifted[:, 3])
    assert inputs["f3"]["psi"] == pytest.approx(expected, rel=1e-12)
    assert inputs["f3"]["window_mean"] == pytest.approx(float(shifted[:, 3].mean()), rel=1e-5)
    assert (
        samples.value(
            "mlserve_feature_drift",
            model="watched",
            version="2",
            feature="f3",
            statistic="alert",
        )
        == 1
    )
    assert (
        samples.value(
            "mlserve_feature_drift",
            model="watched",
            version="2",
            feature="f4",
            statistic="alert",
        )
        == 0
    )
    assert samples.value("mlserve_drift_alert", model="watched", version="2", section="inputs") == 1


@pytest.mark.slow
def test_two_workers_report_the_sum(watched: Path) -> None:
    n = 60
    x = np.zeros((1, N_FEATURES), np.float32)
    with running_server(watched, "--workers", "2") as srv:
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(srv.url + "/v2/models/watched/versions/1/infer", json=body(x))
            assert r.status_code == 200
        # Each worker publishes its snapshot once a second, and a scrape publishes the
        # answering worker's before it reads the others': once one scrape has all n, so
        # does every later one, whichever worker answers.
        wait_for(
            lambda: scrape(srv.url).value("mlserve_requests_total", 0.0, model="watched") == n,
            what=f"the workers' snapshots to add up to {n} requests",
        )
        for _ in range(6):  # whichever worker answers, the scrape is the sum
            samples = scrape(srv.url)
            assert samples.value("mlserve_workers") == 2
            assert (
                samples.value(
                    "mlserve_requests_total",
                    model="watched",
                    version="1",
                    role="pinned",
                    outcome="success",
                )
                == n
            )
            assert (
                samples.value(
                    "mlserve_feature_bin_total", model="watched", version="1", feature="f0"
                )
                == n
            )
            classes = samples.by(
                "mlserve_prediction_class_total", "class", model="watched", version="1"
            )
            assert set(classes) == {"0", "1", "2", "other"} and sum(classes.values()) == n


def test_monitoring_off_records_nothing(watched: Path) -> None:
    x = np.zeros((1, N_FEATURES), np.float32)
    with running_server(watched, "--monitoring", "off") as srv, httpx.Client(base_url=srv.url) as c:
        assert c.post("/v2/models/watched/infer", json=body(x)).status_code == 200
        samples = scrape(srv.url)
        mon = c.get("/v2/models/watched/monitor").json()
    assert not samples.samples("mlserve_requests_total")
    assert samples.value("mlserve_model_ready", model="watched", version="1") == 1
    assert mon["monitoring"] is False and mon["versions"]["2"]["note"] == "monitoring is off"


def test_monitor_without_profile_and_errors(watched: Path) -> None:
    with running_server(watched) as srv, httpx.Client(base_url=srv.url) as c:
        mon = c.get("/v2/models/plain/monitor").json()["versions"]["1"]
        assert mon["drift"] is None and "reference.json" in mon["note"]
        assert c.get("/v2/models/nope/monitor").status_code == 404
        assert c.get("/v2/models/watched/versions/9/monitor").status_code == 404
        r = c.get("/v2/monitor/stream?interval=abc")
        assert r.status_code == 400 and "interval" in r.json()["error"]
        openmetrics = c.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")


@pytest.mark.slow
def test_sse_stream_sends_periodic_snapshots(watched: Path) -> None:
    x = np.zeros((1, N_FEATURES), np.float32)
    with running_server(watched) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        events = []
        with c.stream("GET", "/v2/monitor/stream?interval=0.5&max_seconds=5") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    c.post("/v2/models/watched/versions/1/infer", json=body(x))
                if len(events) == 3:
                    break
    last = events[-1]["endpoints"]["watched/1"]["roles"]["pinned"]
    assert last["requests"]["success"] == 2
    assert last["rate_per_s"] is not None and last["rate_per_s"] > 0
    assert last["latency_s"]["p50"] is not None


def test_histogram_and_quantile_and_merge() -> None:
    h = Histogram(LATENCY_BUCKETS)
    for v in (0.00005, 0.00005, 0.0003, 20.0):
        h.observe(v)
    assert h.counts[0] == 2  # "le" is inclusive
    assert h.counts[LATENCY_BUCKETS.index(0.0005)] == 1 and h.counts[-1] == 1
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[4] = 10  # all in (0.0005, 0.001]
    assert quantile(counts, 0.5) == pytest.approx(0.00075)
    assert quantile([0] * len(counts), 0.5) is None
    a = {"x": 1, "l": [1, 2], "d": {"y": 2.5}}
    b = {"x": 2, "l": [3, 4], "d": {"y": 0.5, "z": 1}}
    assert merge_monitor_states([a, b]) == {"x": 3, "l": [4, 6], "d": {"y": 3.0, "z": 1}}


def test_typed_merge_sums_counters_and_takes_the_maximum_of_shared_gauges() -> None:
    def part(ok: int, delay: float, scans: int, load_s: float | None) -> WorkerSnapshot:
        stats = RoleStats([ok, 1], HistogramState([ok, 0], 0.5), rows=ok, last={str(ok): 1.0})
        return WorkerSnapshot(
            endpoints={"m/1": EndpointState({"stable": stats}, pending=1)},
            gauges={"m/1": VersionGauges(ready=1, servable=ok % 2, load_seconds=load_s)},
            load_failures={"m": ok},
            rejected={"m/1/size": 1},
            serving=ServingSection(2, delay, scans),
        )

    a, b = part(3, 0.5, 1, None), part(4, 0.25, 2, 0.75)
    merged = merge([a, b])
    stable = merged.endpoints["m/1"].roles["stable"]
    assert stable.outcomes == [7, 2] and stable.rows == 7 and stable.duration.sum == 1.0
    assert stable.last == {"3": 1.0, "4": 1.0}  # each worker's own time, never a sum
    assert merged.endpoints["m/1"].pending == 2 and merged.rejected == {"m/1/size": 2}
    assert merged.gauges["m/1"] == VersionGauges(ready=1, servable=1, load_seconds=0.75)
    assert merged.load_failures == {"m": 4}  # every worker loads the same registry
    assert merged.serving == ServingSection(4, 0.5, 2)
    assert a.endpoints["m/1"].roles["stable"].outcomes == [3, 1]  # the parts are unchanged
    assert WorkerSnapshot.from_json(merged.to_json()) == merged


def test_merge_keeps_labels_and_reference_as_they_are() -> None:
    a = {
        "names": ["f0"],
        "reference_ratio": [[0.5, 0.5]],
        "classes": {"label": {"levels": [0, 1], "counts": [3, 4, 0]}},
        "total": [[1, 2]],
    }
    b = {
        "names": ["f0"],
        "reference_ratio": [[0.5, 0.5]],
        "classes": {"label": {"levels": [0, 1], "counts": [1, 1, 1]}},
        "total": [[10, 20]],
    }
    merged = merge_monitor_states([a, b])
    assert merged["names"] == ["f0"] and merged["reference_ratio"] == [[0.5, 0.5]]
    assert merged["classes"]["label"] == {"levels": [0, 1], "counts": [4, 5, 1]}
    assert merged["total"] == [[11, 22]]


def test_accept_negotiation() -> None:
    from mlserve.http.monitor import _prefers_openmetrics

    assert _prefers_openmetrics("application/openmetrics-text; version=1.0.0")
    assert _prefers_openmetrics(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert not _prefers_openmetrics("application/openmetrics-text;q=0, text/plain")
    assert not _prefers_openmetrics("text/plain;q=0.9, application/openmetrics-text;q=0.5")
    assert not _prefers_openmetrics("")
