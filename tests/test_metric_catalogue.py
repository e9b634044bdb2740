"""The metric catalogue (``mlserve.monitoring.catalogue``) is what ``/metrics`` exposes: every
family the exposition builds is listed there with its type, labels and HELP text, every listed
family is built, and docs/metrics.md's table is the catalogue's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mlserve.monitoring.catalogue import CATALOGUE, METRICS, markdown_table, render_page
from mlserve.monitoring.exposition import family
from mlserve.monitoring.hub import MonitoringHub
from mlserve.monitoring.request_stats import BATCH_BUCKETS, Histogram

from .support.monitors import NAMES, make_monitor

ROOT = Path(__file__).resolve().parents[1]


def test_docs_metrics_md_holds_the_catalogue() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert page == render_page(page), (
        "docs/metrics.md is out of date: run python -m mlserve.monitoring.catalogue"
    )
    assert markdown_table() in page


def test_every_family_exposed_is_the_catalogues_and_every_listed_one_is_built() -> None:
    rng = np.random.default_rng(5)
    monitor, _ = make_monitor(rng)
    hub = MonitoringHub(CollectorRegistry(), lambda: [("m", 1, "ready", 0.2, True, True)])

    class Runner:
        pending = 1
        sizes = Histogram(BATCH_BUCKETS)

    stats = hub.register("m", 1, Runner(), monitor)
    for _ in range(20):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        monitor.observe({"X": x}, NAMES, [rng.integers(0, 4, 2), rng.random((2, 2))], 2)
        stats.roles["stable"].success(0.001, 0.0, 0.001, 2)
    merged = hub.merged()
    built = {f.name: f for f in hub.families(merged)}
    assert set(built) == set(METRICS)
    for name, f in built.items():
        spec = METRICS[name]
        assert (f.kind, f.labels, f.help) == (spec.kind, spec.labels, spec.help), name


def test_a_family_not_in_the_catalogue_cannot_be_built() -> None:
    with pytest.raises(KeyError):
        family("mlserve_not_listed")


def test_catalogue_entries_are_well_formed() -> None:
    for m in CATALOGUE:
        assert m.kind in ("counter", "gauge", "histogram"), m.name
        assert not m.name.endswith("_total"), m.name  # counters are named without it
        assert m.help.strip() and m.doc.strip() and "|" not in m.doc, m.name
        assert m.unit in ("", "seconds", "bytes")
