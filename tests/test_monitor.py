"""ModelMonitor: queued observations equal direct counting; small and large paths agree."""

from __future__ import annotations

import asyncio

import numpy as np

from mlserve.monitoring import Binning
from mlserve.monitoring.monitor import FLUSH_ROWS

from .support.monitors import NAMES, make_monitor


def test_queued_observations_equal_direct_counts() -> None:
    rng = np.random.default_rng(0)
    monitor, profile = make_monitor(rng)
    xs = [rng.standard_normal((int(rng.integers(1, 6)), 3)).astype(np.float32) for _ in range(300)]
    labels = [rng.integers(0, 5, len(x)) for x in xs]  # 3 and 4 are "other"
    scores = [rng.random((len(x), 2)).astype(np.float32) for x in xs]

    async def main() -> None:
        for i, (x, lab, sc) in enumerate(zip(xs, labels, scores, strict=True)):
            if i % 4 == 3:  # a caller that asked for the label only
                monitor.observe({"X": x}, ["label"], [lab], len(x))
            else:
                monitor.observe({"X": x}, NAMES, [lab, sc], len(x))

    asyncio.run(main())
    state = monitor.state()["sections"]
    direct = Binning(profile["features"]).count(np.concatenate(xs))
    assert state["inputs"]["total"][0][-1] == 0
    np.testing.assert_array_equal(np.asarray(state["inputs"]["window"]["counts"]), direct.counts)
    label_direct = Binning(profile["outputs"]["label"]).count(np.concatenate(labels))
    np.testing.assert_array_equal(
        np.asarray(state["label"]["window"]["counts"]), label_direct.counts
    )
    kept = [s for i, s in enumerate(scores) if i % 4 != 3]
    score_direct = Binning(profile["outputs"]["score"]).count(np.concatenate(kept))
    np.testing.assert_array_equal(
        np.asarray(state["score"]["window"]["counts"]), score_direct.counts
    )
    classes = state["label"]["classes"]["label"]
    assert sum(classes["counts"]) == sum(len(x) for x in xs)


def test_without_an_event_loop_observations_are_binned_at_once() -> None:
    monitor, _ = make_monitor(np.random.default_rng(1))
    x = np.zeros((2, 3), np.float32)
    monitor.observe({"X": x}, NAMES, [np.array([0, 1]), np.zeros((2, 2), np.float32)], 2)
    assert monitor.sections[0].window.total().counts.sum() == 6  # binned without a flush
    assert FLUSH_ROWS > 2


def test_categorical_small_and_vectorised_paths_agree() -> None:
    rng = np.random.default_rng(2)
    values = rng.integers(-1, 6, 500).astype(np.float64)
    values[rng.random(500) < 0.05] = np.nan
    entries = [{"name": "c", "kind": "categorical", "column": 0, "levels": [0, 2, 4]}]
    whole = Binning(entries).count(values.reshape(-1, 1))  # > 32 rows: vectorised
    pieces = Binning(entries)
    out = pieces.zeros()
    for chunk in np.array_split(values, 100):  # 5 rows each: the Python path
        pieces.count(chunk.reshape(-1, 1), out=out)
    np.testing.assert_array_equal(whole.counts, out.counts)


def test_fast_exposition_equals_prometheus_client() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as parse_openmetrics,
    )
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    from mlserve.monitoring.exposition import collect_families, render_text
    from mlserve.monitoring.hub import MonitoringHub

    rng = np.random.default_rng(3)
    monitor, _ = make_monitor(rng)
    registry = CollectorRegistry()
    facts = [("m", 1, "ready", 0.25, True, True), ("m", 2, "failed", None, None, False)]
    hub = MonitoringHub(registry, lambda: facts)
    stats = hub.register("m", 1, None, monitor)
    for i in range(50):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        monitor.observe({"X": x}, NAMES, [rng.integers(0, 4, 2), rng.random((2, 2))], 2)
        stats.roles["stable"].success(0.0002 * i, 0.0, 0.0001, 2)
    stats.roles["pinned"].failure(1)
    hub.rejected(stats, 'shape "odd"\nreason')  # escaping is exercised

    def samples(families: list) -> set:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in families
            for s in f.samples
            if not s.name.endswith("_created") and not s.name.startswith(("process_", "python_"))
        }

    ours = render_text(hub.families(hub.merged()))
    theirs = generate_latest(registry)
    assert samples(list(parse_text(ours.decode()))) == samples(list(parse_text(theirs.decode())))
    om = render_text(collect_families(hub.merged(), hub.reports(hub.merged())), openmetrics=True)
    assert om.endswith(b"# EOF\n")
    parsed = list(parse_openmetrics(om.decode()))
    assert {f.name for f in parsed} >= {"mlserve_requests", "mlserve_feature_drift"}
    assert samples(parsed) == samples(list(parse_text(ours.decode())))
