"""Where a JSON body's parse and decode cost ~2 ms: the threshold for doing both off the loop.

    python -m benchmarks.json_offload

For V2 JSON bodies of a 20-feature FP32 input (flat and nested ``data``) of growing rows,
the CPU time of ``orjson.loads`` plus the tensor decode (``runtime.tensors.decode_json``,
what the codec runs for a model's own input), best of several runs, in ms and ns per body
byte. ``serving/codec.py``'s ``DECODE_OFF_LOOP_FROM`` is the body size where this reaches ~2 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import orjson

from mlserve.runtime.tensors import InputLimits, TensorSpec, decode_json

FEATURES = 20


def cost(body: bytes, spec: TensorSpec, limits: InputLimits, repeat: int) -> float:
    """The best CPU seconds of parse + decode over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        doc = orjson.loads(body)
        decode_json(spec, doc["inputs"][0], limits)
        best = min(best, time.process_time() - start)
        del doc
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    spec = TensorSpec("X", "FP32", (-1, FEATURES))
    limits = InputLimits(max_elements=16 << 20, max_rows=100_000, allow_nan=False)
    rng = np.random.default_rng(0)
    print(f"{'rows':>6} {'layout':>7} {'KiB':>7} {'ms':>7} {'ns/B':>6}")
    for rows in (250, 500, 1000, 1500, 2000, 3000, 5000, 10_000):
        x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
        for nested in (False, True):
            doc = {
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP32",
                        "shape": [rows, FEATURES],
                        "data": x if nested else x.ravel(),
                    }
                ]
            }
            body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
            seconds = cost(body, spec, limits, args.repeat)
            layout = "nested" if nested else "flat"
            print(
                f"{rows:>6} {layout:>7} {len(body) / 1024:>7.0f} {seconds * 1e3:>7.2f} "
                f"{seconds * 1e9 / len(body):>6.2f}"
            )


if __name__ == "__main__":
    main()
