"""Helpers shared by the test suite, one per job.

- :mod:`.metrics`: parse a Prometheus text exposition; filter samples by name and labels;
  ``wait_metric`` (scrape until a sum reaches a value).
- :mod:`.waiting`: ``wait_for``, the one way to wait for a condition.
- :mod:`.asgi`: drive an ASGI app in-process with a single request.
- :mod:`.timing`: bounds for wall-clock assertions, scaled by a baseline measured in the test.
- :mod:`.raw_http`: HTTP/1.1 over a raw socket: connect, send, read until close, read one
  answer, build a request's bytes (h11), parse pipelined answers in order (``Reader``).
- :mod:`.fast_slow`: the ``fast``/``slow`` registry the HTTP protocol tests serve, a body.
- :mod:`.monitors`: a ``ModelMonitor`` over a small model (``make_monitor``).
- :mod:`.loop_model`: an ONNX model that loops as long as told (runaway runs, deadlines).
- :mod:`.drift_statistics`: a drift window and the statistics a replica's rule gives it.
"""
