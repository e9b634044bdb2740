"""The Prometheus text exposition, parsed once by ``prometheus_client``'s parser.

``Metrics(text)`` holds every sample; ``value(name, **labels)`` sums the samples named
``name`` whose labels include ``labels`` (a subset match), ``samples(...)`` lists them::

    m = scrape(server.url)
    assert m.value("mlserve_requests_total", model="m", outcome="success") == 3
    assert m.value("mlserve_pending_requests") == 0  # summed over every model

``wait_metric(url, name, at_least, **labels)`` scrapes until such a sum reaches ``at_least``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .waiting import wait_for

_MISSING: Any = object()


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    family: str
    type: str

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """``(name, sorted labels)``: a hashable identity for the series."""
        return self.name, tuple(sorted(self.labels.items()))


class Metrics:
    """Every sample of one exposition."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.all: list[Sample] = [
            Sample(s.name, dict(s.labels), float(s.value), family.name, family.type)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.all)

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """The samples named ``name`` whose labels include every one of ``labels``."""
        return [
            s
            for s in self.all
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, default: float = _MISSING, **labels: str) -> float:
        """The sum of :meth:`samples`; ``default`` when none match (without one: an error)."""
        found = self.samples(name, **labels)
        if not found:
            if default is _MISSING:
                names = sorted({s.name for s in self.all if s.name.startswith(name[:8])})
                raise AssertionError(f"no sample {name} with labels {labels}; near: {names}")
            return default
        return sum(s.value for s in found)

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``{value of label: sum of the samples with it}`` for the matching samples."""
        out: dict[str, float] = {}
        for s in self.samples(name, **labels):
            out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out

    def as_dict(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``{(name, sorted labels): value}`` for every sample."""
        return {s.key(): s.value for s in self.all}


def parse(text: str) -> Metrics:
    return Metrics(text)


def scrape(url: str, *, client: httpx.Client | None = None, timeout: float = 10) -> Metrics:
    """GET ``/metrics`` from a server's base URL (or through ``client``); 200 or an error."""
    r = (
        client.get("/metrics")
        if client is not None
        else httpx.get(url + "/metrics", timeout=timeout)
    )
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return Metrics(r.text)


def wait_metric(url: str, name: str, at_least: float, **labels: str) -> Metrics:
    """The first scrape where the samples of ``name`` with ``labels`` add up to ``at_least``."""
    return wait_for(
        lambda: (m := scrape(url)).value(name, 0.0, **labels) >= at_least and m,
        20,
        what=f"{name} {labels} to reach {at_least}",
    )
