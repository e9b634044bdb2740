"""The API page (``/docs``) in a real headless Chromium against a real server, the per-model
request schemas of ``/v2/openapi.json``, and the root page.

Debian's ``chromium`` driven by Playwright (never ``playwright install``), as for the
dashboard: the page loads with no request leaving the server's origin and no console error
(a CSP violation is one); a request tried from the page reaches a real model and the outputs
it shows equal onnxruntime's in process; each loaded version's schema is in the document
and on the page, and its example body is one the version accepts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from playwright.sync_api import sync_playwright

from mlserve.monitoring import build_profile, save_profile

from .conftest import echo_model, linear_model, running_server, wait_for, write_version

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FEATURES = ["income", "debt_ratio", "age", "tenure"]
INFER_PATH = "/v2/models/{model}/versions/{version}/infer"


@pytest.fixture(scope="module")
def docs_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``credit``: 4 named FP32 features (a reference profile), versions 1 and 2 (policy
    all); ``echo``: every V2 datatype. Not conftest's ``registry``: other models."""
    root = tmp_path_factory.mktemp("docs") / "registry"
    rng = np.random.default_rng(0)
    for v in (1, 2):
        vdir = write_version(root, "credit", v, linear_model(len(FEATURES), seed=v))
        save_profile(build_profile(rng.normal(size=(300, 4)), FEATURES), vdir / "reference.json")
    (root / "credit" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    write_version(root, "echo", 1, echo_model())
    return root


@pytest.fixture(scope="module")
def docs_server(docs_registry: Path) -> Any:
    with running_server(docs_registry, "--poll-seconds", "0") as srv:
        yield srv


def _ort_scores(registry: Path, version: int, x: np.ndarray) -> list[float]:
    sess = ort.InferenceSession(
        str(registry / "credit" / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return [float(v) for v in sess.run(["scores"], {"X": x})[0].ravel()]


def test_docs_page_tries_a_request_with_nothing_from_outside(
    docs_server: Any, docs_registry: Path, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does)")
    origin = docs_server.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            seen: list[str] = []
            external: list[str] = []
            errors: list[str] = []

            def outside(route: Any) -> None:
                external.append(route.request.url)
                route.abort()

            # Anything not addressed to the server is recorded and refused before it leaves.
            context.route(re.compile("^(?!" + re.escape(origin + "/") + ")"), outside)
            page = context.new_page()

            def on_request(request: Any) -> None:
                seen.append(request.url)
                parts = urlsplit(request.url)
                if parts.scheme != "data" and f"{parts.scheme}://{parts.netloc}" != origin:
                    external.append(request.url)

            page.on("request", on_request)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(origin + "/docs")
            block = page.locator(f'.opblock:has(.opblock-summary-path[data-path="{INFER_PATH}"])')
            block.wait_for(timeout=30_000)
            assert page.title() == "mlserve API"

            # The per-model schema is on the page (Swagger UI's schema list), with the
            # version's input and its features by name.
            models = page.locator("section.models")
            models.locator(".models-control").click()
            schema = models.locator('[id="model-credit.v2.InferenceRequest"]')
            schema.wait_for()
            schema.locator(".model-box-control").first.click()
            schema.get_by_text("debt_ratio").first.wait_for()

            # Try a request: version 2 of credit, with the document's example for it.
            block.locator(".opblock-summary").click()
            block.locator('tr[data-param-name="model"] input').fill("credit")
            block.locator('tr[data-param-name="version"] input').fill("2")
            block.locator(".examples-select-element").select_option(value="credit v2")
            block.locator(".btn.execute").click()
            live = block.locator(".live-responses-table")
            status = live.locator("tbody .response-col_status").first
            status.wait_for(timeout=30_000)
            assert status.inner_text().strip() == "200"
            body = live.locator("tbody .response-col_description .microlight").first
            shown = json.loads(body.inner_text())
            artifact = tmp_path / "docs.png"
            page.screenshot(path=str(artifact))
        finally:
            browser.close()
    assert external == [], external
    assert errors == [], errors
    assert any(urlsplit(u).path == "/v2/models/credit/versions/2/infer" for u in seen), seen
    assert shown["model_name"] == "credit" and shown["model_version"] == "2"
    scores = next(o for o in shown["outputs"] if o["name"] == "scores")
    expected = _ort_scores(docs_registry, 2, np.zeros((1, len(FEATURES)), np.float32))
    assert np.allclose(scores["data"], expected, rtol=1e-6), (scores, expected)


def test_document_has_one_schema_per_loaded_version(docs_server: Any, docs_registry: Path) -> None:
    doc = httpx.get(docs_server.url + "/v2/openapi.json").json()
    schemas = doc["components"]["schemas"]
    ours = sorted(k for k in schemas if k.endswith(".InferenceRequest"))
    assert ours == [
        "credit.v1.InferenceRequest",
        "credit.v2.InferenceRequest",
        "echo.v1.InferenceRequest",
    ]
    credit = schemas["credit.v1.InferenceRequest"]
    variants = credit["properties"]["inputs"]["items"]["oneOf"]
    # The model's own input, then one column per feature, by the profile's names.
    assert [v["properties"]["name"]["enum"] for v in variants] == [["X"]] + [[f] for f in FEATURES]
    assert variants[0]["properties"]["datatype"]["default"] == "FP32"
    assert "[-1, 4]" in variants[0]["description"]
    assert credit["properties"]["outputs"]["items"]["properties"]["name"]["enum"] == [
        "scores",
        "label",
    ]
    echo = schemas["echo.v1.InferenceRequest"]
    echo_inputs = {
        v["properties"]["name"]["enum"][0]: v["properties"]["datatype"]["default"]
        for v in echo["properties"]["inputs"]["items"]["oneOf"]
    }
    assert echo_inputs == {f"in_{dt}": dt for dt in echo_inputs.values()}
    assert len(echo_inputs) == 13

    # Each example is a request its version answers, with outputs equal to onnxruntime's.
    examples = doc["paths"][INFER_PATH]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    assert set(examples) == {"credit v1", "credit v2", "echo v1", "generic"}
    for key, path in (
        ("credit v1", "/v2/models/credit/versions/1/infer"),
        ("credit v2", "/v2/models/credit/versions/2/infer"),
        ("echo v1", "/v2/models/echo/versions/1/infer"),
    ):
        r = httpx.post(docs_server.url + path, json=examples[key]["value"])
        assert r.status_code == 200, (key, r.text)
    r = httpx.post(
        docs_server.url + "/v2/models/credit/versions/1/infer", json=examples["credit v1"]["value"]
    )
    scores = next(o for o in r.json()["outputs"] if o["name"] == "scores")["data"]
    assert np.allclose(
        scores, _ort_scores(docs_registry, 1, np.zeros((1, 4), np.float32)), rtol=1e-6
    )


def test_assets_are_served_with_a_same_origin_policy(docs_server: Any) -> None:
    for path in ("/docs", "/docs/docs.js", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        plain = httpx.get(docs_server.url + path, headers={"accept-encoding": "identity"})
        assert plain.status_code == 200, path
        csp = plain.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
        assert "connect-src 'self'" in csp and "http" not in csp, csp
        assert plain.headers.get("content-encoding") is None
        # The large assets go compressed to a client that takes gzip: the same bytes once
        # decoded (httpx decodes), fewer on the wire.
        packed = httpx.get(docs_server.url + path, headers={"accept-encoding": "gzip"})
        assert packed.content == plain.content, path
        if path.startswith("/docs/swagger-ui"):
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.num_bytes_downloaded < len(plain.content) / 3
    bundle = httpx.get(docs_server.url + "/docs/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content


def test_root_points_to_docs_dashboard_and_metrics(docs_server: Any) -> None:
    page = httpx.get(docs_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    links = re.findall(r'href="(/[^"]*)"', page.text)
    assert {"/docs", "/dashboard", "/metrics"} <= set(links), links
    as_json = httpx.get(docs_server.url + "/", headers={"accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    found = as_json.json()["links"]
    assert {"/docs", "/dashboard", "/metrics"} <= set(found.values()), found
    for link in {*links, *found.values()}:  # every link answers
        assert httpx.get(docs_server.url + link).status_code == 200, link


def test_document_follows_the_loaded_versions(tmp_path: Path) -> None:
    """A version that loads later gets its schema; one that leaves takes it away."""
    root = tmp_path / "registry"
    write_version(root, "credit", 1, linear_model(len(FEATURES), seed=1))
    (root / "credit" / "model.toml").write_text('[versions]\npolicy = "all"\n')

    def loaded(url: str) -> list[str]:
        schemas = httpx.get(url + "/v2/openapi.json").json()["components"]["schemas"]
        return sorted(k for k in schemas if k.endswith(".InferenceRequest"))

    with running_server(root, "--poll-seconds", "0.2") as srv:
        assert loaded(srv.url) == ["credit.v1.InferenceRequest"]
        staging = tmp_path / "staging"
        write_version(staging, "credit", 2, linear_model(6, seed=2))
        (staging / "credit" / "2").rename(root / "credit" / "2")  # complete, in one step
        wait_for(lambda: len(loaded(srv.url)) == 2)
        doc = httpx.get(srv.url + "/v2/openapi.json").json()
        v2 = doc["components"]["schemas"]["credit.v2.InferenceRequest"]
        assert "[-1, 6]" in v2["properties"]["inputs"]["items"]["oneOf"][0]["description"]
        for path in (root / "credit" / "1").iterdir():
            path.unlink()
        (root / "credit" / "1").rmdir()
        wait_for(lambda: loaded(srv.url) == ["credit.v2.InferenceRequest"])


def test_document_is_compressed_for_clients_that_take_gzip(docs_server: Any) -> None:
    """The same document, gzip on the wire when accepted (fewer bytes), plain otherwise."""
    plain = httpx.get(docs_server.url + "/v2/openapi.json", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and plain.headers.get("content-encoding") is None
    assert "accept-encoding" in plain.headers["vary"]
    for _ in range(2):  # compressed once, then served from the cache
        packed = httpx.get(
            docs_server.url + "/v2/openapi.json", headers={"accept-encoding": "gzip"}
        )
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.json() == plain.json()
        assert packed.num_bytes_downloaded < len(plain.content) / 3
