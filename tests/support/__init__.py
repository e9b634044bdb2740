"""Helpers shared by the test suite, one per job.

- :mod:`.metrics`: parse a Prometheus text exposition; filter samples by name and labels.
- :mod:`.waiting`: ``wait_for``, the one way to wait for a condition.
- :mod:`.asgi`: drive an ASGI app in-process with a single request.
- :mod:`.timing`: bounds for wall-clock assertions, scaled by a baseline measured in the test.
"""
