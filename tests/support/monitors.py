"""A :class:`ModelMonitor` over a small three-feature model with two outputs, and its profile."""

from __future__ import annotations

import numpy as np

from mlserve.config import MonitoringConfig
from mlserve.monitoring import build_profile
from mlserve.monitoring.monitor import ModelMonitor
from mlserve.runtime.tensors import TensorSpec

INPUTS = (TensorSpec("X", "FP32", (-1, 3)),)
OUTPUTS = (TensorSpec("label", "INT64", (-1,)), TensorSpec("score", "FP32", (-1, 2)))
NAMES = ["label", "score"]


def make_monitor(rng: np.random.Generator) -> tuple[ModelMonitor, dict]:
    x = rng.standard_normal((2000, 3)).astype(np.float32)
    label = rng.integers(0, 3, 2000)
    score = rng.random((2000, 2)).astype(np.float32)
    profile = build_profile(x, ["a", "b", "c"], outputs={"label": label, "score": score})
    monitor = ModelMonitor.build(INPUTS, OUTPUTS, MonitoringConfig(), profile, NAMES)
    assert monitor is not None
    return monitor, profile
