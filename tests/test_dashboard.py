"""The live dashboard (``/dashboard``) in a real headless Chromium against a real server.

Debian's ``chromium`` driven by Playwright (never ``playwright install``): the page loads
with no console errors and asks nothing of any host but the server; traffic figures update
as requests flow; a drift alert appears on the shifted feature only; an admin routing change
shows in the split and in the audit panel; text from files is shown as text, never markup;
and the page says "disconnected" while the stream is gone, then carries on when it is back.
The browser is required, not optional: a missing one fails the test, as promtool does.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from playwright.sync_api import sync_playwright

from mlserve.governance import audit
from mlserve.governance.audit import AuditLog
from mlserve.monitoring import build_profile, save_profile

from .conftest import linear_model, running_server, write_version

# Slow (Chromium against a real server): deselected by -m "not slow".
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dashboard-admin-token"
HOSTILE = '<img src=x onerror="document.title=1">'  # a feature name that must stay text
NAMES = ["income", "debt_ratio", "age", "tenure", HOSTILE, "utilisation"]
SHIFTED = "debt_ratio"
TITLE = "mlserve dashboard"

# Every drift chip as the page shows it.
CHIPS = """() => [...document.querySelectorAll('.feature')].map(e => ({
    endpoint: e.dataset.endpoint, section: e.dataset.section, name: e.dataset.feature,
    text: e.querySelector('.name').textContent, alert: e.classList.contains('alert'),
    figures: e.querySelector('.psi').textContent, title: e.title}))"""


@pytest.fixture()
def credit_registry(tmp_path: Path) -> Path:
    """``credit`` v1 and v2 with reference profiles, guardrails on (judging, not acting on
    drift), v1 stable."""
    root = tmp_path / "registry"
    x_ref = np.random.default_rng(7).standard_normal((4000, len(NAMES))).astype(np.float32)
    for version in (1, 2):
        vdir = write_version(root, "credit", version, linear_model(len(NAMES), seed=version))
        sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
        scores, label = sess.run(None, {"X": x_ref})
        profile = build_profile(x_ref, NAMES, outputs={"scores": scores, "label": label})
        save_profile(profile, vdir / "reference.json")
    (root / "credit" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n[routing]\nstable = 1\n'
        "[monitoring]\nmin_window = 200\nbucket_seconds = 5\nwindow_buckets = 12\nalpha = 0.001\n"
        "[guardrails]\nenabled = true\ncheck_seconds = 1\nwindow_seconds = 30\n"
        "min_requests = 20\nmax_p99_ratio = 100\nrollback_on_drift = false\n"
    )
    return root


def body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


class Traffic(threading.Thread):
    """Unpinned one-row requests with sticky routing keys, about 30 a second."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.done = threading.Event()
        self.statuses: list[int] = []

    def run(self) -> None:
        rng = np.random.default_rng(1)
        with httpx.Client(base_url=self.url, timeout=10) as c:
            i = 0
            while not self.done.is_set():
                x = rng.standard_normal((1, len(NAMES))).astype(np.float32)
                headers = {"mlserve-routing-key": f"customer-{i}"}
                r = c.post("/v2/models/credit/infer", json=body(x), headers=headers)
                self.statuses.append(r.status_code)
                i += 1
                time.sleep(0.03)


def wait_in_page(page: Any, script: str, arg: Any = None, timeout_s: float = 15.0) -> Any:
    """Until ``script`` is truthy in the page (Playwright's polling in the browser)."""
    return page.wait_for_function(script, arg=arg, polling=100, timeout=timeout_s * 1000)


def traffic_row(page: Any, version: str, role: str) -> dict[str, str] | None:
    return page.evaluate(
        """([v, r]) => {
            const row = document.querySelector(
                `tr.traffic-row[data-model="credit"][data-version="${v}"][data-role="${r}"]`);
            return row && {rate: row.dataset.rate, p99: row.dataset.p99,
                           rateText: row.querySelector('.rate').textContent,
                           p99Text: row.querySelector('.p99').textContent};
        }""",
        [version, role],
    )


ROW_IS_BUSY = """([v, r]) => {
    const row = document.querySelector(
        `tr.traffic-row[data-model="credit"][data-version="${v}"][data-role="${r}"]`);
    return row !== null && Number(row.dataset.rate) > 0 && row.dataset.p99 !== '';
}"""


def test_dashboard_live_in_chromium(credit_registry: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does)")
    artifacts = Path(os.environ.get("MLSERVE_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {"MLSERVE_ADMIN_TOKEN": TOKEN}
    with running_server(credit_registry, env=env) as srv, sync_playwright() as p:
        origin = srv.url
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        traffic = Traffic(origin)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            external: list[str] = []
            errors: list[str] = []

            def outside(route: Any) -> None:
                external.append(route.request.url)
                route.abort()

            # Anything not addressed to the server is recorded and refused before it leaves.
            context.route(re.compile("^(?!" + re.escape(origin + "/") + ")"), outside)
            page = context.new_page()

            streams: list[str] = []

            def on_request(request: Any) -> None:
                parts = urlsplit(request.url)
                if parts.path == "/v2/monitor/stream":
                    streams.append(request.url)
                if parts.scheme != "data" and parts.hostname not in ("127.0.0.1", "localhost"):
                    external.append(request.url)

            page.on("request", on_request)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # The stream ends every 4 s and the page reconnects throughout the test.
            page.goto(origin + "/dashboard?interval=0.5&max_seconds=4")
            assert page.title() == TITLE
            wait_in_page(page, "() => document.querySelector('#status').dataset.state === 'live'")

            # Traffic: requests/s and p99 appear for the stable version.
            traffic.start()
            wait_in_page(page, ROW_IS_BUSY, ["1", "stable"])
            row = traffic_row(page, "1", "stable")
            assert row is not None and float(row["rate"]) > 0 and float(row["p99"]) > 0
            assert row["rateText"] != "–" and row["p99Text"].endswith(("µs", "ms", "s"))

            # An admin routing change: the split, the canary's traffic and the audit panel.
            r = httpx.put(
                origin + "/v2/admin/models/credit/routing",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"canary": 2, "canary_weight": 50},
            )
            assert r.status_code == 200, r.text
            wait_in_page(
                page,
                """() => [...document.querySelectorAll('tr.audit-row')].some(
                    e => e.dataset.action === 'set_routing' && e.dataset.model === 'credit')""",
            )
            change = page.locator("tr.audit-row[data-action='set_routing']").first
            assert "canary – → 2; canary_weight 0 → 50" in change.inner_text()
            assert "(admin: set_routing)" in change.inner_text()
            # the kind of actor only: the unauthenticated stream carries no token hash
            assert change.get_attribute("data-actor") == "token"
            assert TOKEN not in page.content()
            card = page.locator(".model-card[data-model='credit']")
            wait_in_page(
                page,
                """() => document.querySelector(
                    ".model-card[data-model='credit'] [data-field='canary_weight']"
                    ).textContent === '50 %'""",
            )
            assert card.locator("[data-field='canary']").inner_text() == "v2"
            assert (
                card.locator("[data-field='guardrails']").inner_text().startswith("guardrails on")
            )
            wait_in_page(page, ROW_IS_BUSY, ["2", "canary"])

            # No alert on normal traffic; shifted rows to v2 raise one on that feature only.
            chips = page.evaluate(CHIPS)
            assert {c["endpoint"] for c in chips} == {"credit/1", "credit/2"}
            assert not [c for c in chips if c["alert"] and c["section"] == "inputs"]
            rng = np.random.default_rng(3)
            column = NAMES.index(SHIFTED)
            with httpx.Client(base_url=origin, timeout=10) as c:
                for _ in range(25):
                    x = rng.standard_normal((20, len(NAMES))).astype(np.float32)
                    x[:, column] += 1.5
                    assert c.post("/v2/models/credit/versions/2/infer", json=body(x)).is_success
            wait_in_page(
                page,
                """(name) => [...document.querySelectorAll('.feature.alert')].some(
                    e => e.dataset.endpoint === 'credit/2' && e.dataset.section === 'inputs'
                    && e.dataset.feature === name)""",
                SHIFTED,
            )
            chips = page.evaluate(CHIPS)
            alerting = {
                (c["endpoint"], c["name"]) for c in chips if c["alert"] and c["section"] == "inputs"
            }
            assert alerting == {("credit/2", SHIFTED)}
            # The effect size beside the test: PSI against its bound, the rank test's AUC.
            (shifted,) = [c for c in chips if c["alert"] and c["section"] == "inputs"]
            assert re.fullmatch(r"PSI \d\.\d{3} / \d\.\d{3} · AUC \d\.\d{3}", shifted["figures"])
            fired = r"(PSI|the rank test \(AUC\)|PSI and the rank test)"
            assert re.search(rf"significant and large by {fired}: alert", shifted["title"])
            assert "|AUC - 0.5| floor 0.050" in shifted["title"]
            drift_card = page.locator(".drift-card[data-endpoint='credit/2']")
            assert "drift alert" in drift_card.inner_text()

            # Names from files are text: the hostile feature name is shown, never parsed.
            hostile = [c for c in chips if c["name"] == HOSTILE]
            assert len(hostile) == 2 and all(c["text"] == HOSTILE for c in hostile)
            assert page.evaluate("document.querySelectorAll('img').length") == 0
            assert page.title() == TITLE

            deadline = time.monotonic() + 10
            while len(streams) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(100)  # the stream ends every 4 s: see it reconnect
            wait_in_page(page, "() => document.querySelector('#status').dataset.state === 'live'")
            wait_in_page(page, ROW_IS_BUSY, ["1", "stable"])
            shot = artifacts / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
            assert not errors, errors
            assert not external, external
            assert len(streams) >= 2, streams  # it has reconnected and carried on

            # The stream goes away: "disconnected"; it comes back: live figures again.
            page.route("**/v2/monitor/stream*", lambda route: route.abort())
            wait_in_page(
                page,
                "() => document.querySelector('#status').dataset.state === 'disconnected'",
            )
            assert "disconnected" in page.locator("#status").inner_text()
            page.unroute("**/v2/monitor/stream*")
            wait_in_page(page, "() => document.querySelector('#status').dataset.state === 'live'")
            before = page.locator("#updated").inner_text()
            wait_in_page(
                page, "(t) => document.querySelector('#updated').textContent !== t", before
            )
            wait_in_page(page, ROW_IS_BUSY, ["1", "stable"])
            assert not external, external
            page.close()
        finally:
            traffic.done.set()
            if traffic.is_alive():
                traffic.join(10)
            browser.close()
        check_stream_and_headers(origin)
    assert traffic.statuses and set(traffic.statuses) == {200}


def check_stream_and_headers(origin: str) -> None:
    """What the page reads, as any client sees it; the page's own security headers."""
    page = httpx.get(origin + "/dashboard")
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for asset in ("dashboard.js", "dashboard.css"):
        assert httpx.get(f"{origin}/dashboard/{asset}").status_code == 200
    with httpx.stream("GET", origin + "/v2/monitor/stream?interval=0.5&max_seconds=2") as r:
        line = next(x for x in r.iter_lines() if x.startswith("data: "))
    event = json.loads(line[6:])
    credit = event["models"]["credit"]
    assert credit["routing"]["canary"] == "2" and credit["routing"]["canary_weight"] == 50
    assert credit["guardrails"]["enabled"] is True
    [entry] = [e for e in event["audit"] if e["action"] == "set_routing"]  # the first event
    assert "prev" not in entry and entry["actor"] == "token"  # the kind, no token hash
    assert TOKEN not in line
    v2 = event["endpoints"]["credit/2"]
    assert [f["name"] for f in v2["features"]["inputs"]] == NAMES
    alerting = [f["name"] for f in v2["features"]["inputs"] if f["alert"]]
    assert alerting == v2["alerting"]["inputs"] == [SHIFTED]
    counts = v2["roles"]["canary"]["duration_counts"]
    assert len(counts) == len(event["latency_buckets"]) + 1 and sum(counts) > 0


def test_audit_latest_reads_the_end_of_the_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert audit.latest(log.path, 5) == []
    for i in range(30):
        log.append("token:abc", "set_routing", f"m{i}", {"canary": 0}, {"canary": i})
    entries = audit.latest(log.path, 5)
    assert [e["model"] for e in entries] == [f"m{i}" for i in range(25, 30)]
    assert all("prev" not in e for e in entries)
    assert audit.verify(log.path) == (30, None)  # reading took nothing away
    # A window that starts mid-line: the cut line is left out, never misread.
    tail = audit.latest(log.path, 50, max_bytes=400)
    assert tail and tail[-1]["model"] == "m29" and len(tail) < 30
    assert len(audit.latest(log.path, 100)) == 30
