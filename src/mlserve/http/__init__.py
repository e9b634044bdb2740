"""HTTP: mlserve's own HTTP/1.1 connection (``connection``, ``timers``), the fast lane that
answers infer itself (``fast_lane``), the ASGI lane to the Starlette application (``asgi``,
``app``), and the routes (infer, explain, V2, admin, monitoring, dashboard, docs, OpenAPI)."""
