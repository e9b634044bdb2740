"""Realistic load on the demo registry: mixed models, batch sizes and encodings, with a ramp.

Start the demo server (``mlserve demo``), then, bounded in time and on loopback only:

    locust -f benchmarks/locustfile.py --headless -H http://127.0.0.1:8080 --run-time 2m

The ramp (``RampShape``) climbs to ``MLSERVE_LOCUST_USERS`` users (default 64) over
the first half of the run, holds, then steps down; set ``MLSERVE_LOCUST_SHAPE=off`` to
use locust's own ``-u``/``-r`` instead. Locust itself costs far more CPU per request
than wrk: use it for behaviour under mixed traffic (errors, tail latency, 503s), and
``benchmarks/serve.py`` for throughput.
"""

from __future__ import annotations

import os
import random

import numpy as np
import orjson
from locust import FastHttpUser, LoadTestShape, between, task

RNG = np.random.default_rng(0)
CREDIT_FEATURES = 20
IRIS_FEATURES = 4


def json_body(rows: int, features: int) -> bytes:
    x = RNG.standard_normal((rows, features)).astype(np.float32)
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [rows, features],
                    "data": x.ravel().tolist(),
                }
            ]
        }
    )


def binary_body(rows: int, features: int) -> tuple[bytes, dict[str, str]]:
    x = RNG.standard_normal((rows, features)).astype(np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [rows, features],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + x.tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


BODIES = {rows: json_body(rows, CREDIT_FEATURES) for rows in (1, 8, 64)}
BINARY = {rows: binary_body(rows, CREDIT_FEATURES) for rows in (1, 64, 1000)}
IRIS = json_body(4, IRIS_FEATURES)


class ModelUser(FastHttpUser):  # type: ignore[misc]
    wait_time = between(0, 0.01)

    @task(10)
    def credit_default_single(self) -> None:
        self.client.post(
            "/v2/models/credit-risk/infer",
            data=BODIES[1],
            headers={"Content-Type": "application/json"},
            name="credit-risk json x1",
        )

    @task(3)
    def credit_pinned_batch(self) -> None:
        rows = random.choice((8, 64))
        self.client.post(
            "/v2/models/credit-risk/versions/1/infer",
            data=BODIES[rows],
            headers={"Content-Type": "application/json"},
            name=f"credit-risk v1 json x{rows}",
        )

    @task(2)
    def credit_binary(self) -> None:
        rows = random.choice((1, 64, 1000))
        body, headers = BINARY[rows]
        self.client.post(
            "/v2/models/credit-risk/infer",
            data=body,
            headers=headers,
            name=f"credit-risk binary x{rows}",
        )

    @task(3)
    def iris(self) -> None:
        self.client.post(
            "/v2/models/iris/infer",
            data=IRIS,
            headers={"Content-Type": "application/json"},
            name="iris json x4",
        )

    @task(1)
    def metadata(self) -> None:
        self.client.get("/v2/models/credit-risk", name="metadata")


if os.environ.get("MLSERVE_LOCUST_SHAPE", "on") != "off":

    class RampShape(LoadTestShape):  # type: ignore[misc]
        """Ramp up over the first half of the run time, hold, then step down."""

        peak = int(os.environ.get("MLSERVE_LOCUST_USERS", "64"))

        def tick(self) -> tuple[int, float] | None:
            run_time = self.get_run_time()
            total = self.runner.environment.parsed_options.run_time or 120
            if run_time >= total:
                return None
            if run_time < total / 2:
                users = max(1, int(self.peak * run_time / (total / 2)))
            elif run_time < total * 0.85:
                users = self.peak
            else:
                users = max(1, self.peak // 4)
            return users, max(1.0, self.peak / 10)
