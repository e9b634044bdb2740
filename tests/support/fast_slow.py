"""The registry the HTTP protocol tests serve, and a request body for it.

``fast``: the linear model (``X``: FP32 [rows, 20]); ``slow``: a MatMul of a size the request
picks, in thread mode (so it runs while the connection reads on).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..conftest import linear_model, matmul_model, write_version

X = {"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}


def write_fast_slow(root: Path) -> Path:
    """``fast`` and ``slow`` at version 1 under ``root``; ``root``."""
    write_version(root, "fast", 1, linear_model())
    write_version(root, "slow", 1, matmul_model(fixed=None))
    (root / "slow" / "model.toml").write_text('[execution]\nmode = "thread"\n')
    return root


def infer_body(rows: int = 1) -> bytes:
    """A JSON inference request for ``fast`` with ``rows`` rows (seeded by ``rows``)."""
    data = np.random.default_rng(rows).normal(size=(rows, 20)).round(3).tolist()
    return json.dumps({"inputs": [{**X, "shape": [rows, 20], "data": data}]}).encode()
