"""The server's own OpenAPI document (``GET /v2/openapi.json``): valid OpenAPI 3.0, complete
(every route the app registers is in it), and true of the live server: schemathesis fuzzes
every operation of a real server on a loopback port, with bounded, derandomized examples,
and checks that no answer is a 5xx and that every status, content type, header and body is
one the document allows.

The server runs on its own registry (the admin routes change routing files and unload
models, which must not leak into other tests): scikit-learn and hand-built ONNX models,
good, broken, misconfigured and explainable ones, so that the fuzzed requests reach the
success paths as well as the error paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR
from starlette.routing import Route

from mlserve.config import ServerSettings
from mlserve.http.app import create_app
from mlserve.http.infer import INFER_PREFIX, INFER_SUFFIX, _route
from mlserve.http.openapi import DOCUMENT, OPENAPI_PATH, OPERATIONS
from mlserve.monitoring.profile import build_profile, save_profile
from mlserve.runtime.tensors import V2_TO_NUMPY

from .conftest import ServerProcess, echo_model, linear_model, running_server, write_version

TOKEN = "openapi-fuzz-token"
MAX_EXAMPLES = 50  # per operation; the whole file takes ~30 s on 2 shared cores
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Real names and versions, so that generated requests reach loaded models, not only 404s.
MODELS = ["credit-risk", "iris", "mixed", "badconfig", "echo"]
VERSIONS = ["1", "2", "3"]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def fuzz_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``credit-risk``: 20 FP32 features as ``X`` (the document's example), v1 explainable;
    ``iris``: a scikit-learn classifier to ONNX, explainable; ``mixed``: v1 good, v2 corrupt;
    ``badconfig``: an invalid model.toml; ``echo``: every V2 datatype."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("openapi") / "registry"
    rng = np.random.default_rng(0)
    vdir = write_version(root, "credit-risk", 1, linear_model(seed=1))
    reference = rng.normal(size=(500, 20))
    save_profile(build_profile(reference, [f"f{i}" for i in range(20)]), vdir / "reference.json")
    write_version(root, "credit-risk", 2, linear_model(seed=2))
    (root / "credit-risk" / "model.toml").write_text('[versions]\npolicy = "all"\n')

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    proto = convert_sklearn(
        clf,
        initial_types=[("X", FloatTensorType([None, 4]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={"zipmap": False},
    )
    vdir = write_version(root, "iris", 1, proto)
    save_profile(build_profile(X, ["sl", "sw", "pl", "pw"]), vdir / "reference.json")

    write_version(root, "mixed", 1, linear_model(seed=3))
    (root / "mixed" / "2").mkdir(parents=True)
    (root / "mixed" / "2" / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    (root / "mixed" / "model.toml").write_text('[versions]\npolicy = "all"\n')
    write_version(root, "badconfig", 1, linear_model())
    (root / "badconfig" / "model.toml").write_text("[inputs]\nmax_rowz = 3\n")
    write_version(root, "echo", 1, echo_model())
    return root


@pytest.fixture(scope="module")
def fuzz_server(fuzz_registry: Path) -> Iterator[ServerProcess]:
    with running_server(
        fuzz_registry, "--poll-seconds", "0", env={"MLSERVE_ADMIN_TOKEN": TOKEN}
    ) as srv:
        yield srv


def _tensor() -> st.SearchStrategy[dict[str, Any]]:
    """Input tensors near the valid ones: real names and datatypes, small shapes, data of
    every JSON kind (where the tensor decoding's error paths are)."""
    leaf = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.integers(min_value=-(2**65), max_value=2**65),
        st.booleans(),
        st.text(max_size=4),
        st.none(),
    )
    data = st.lists(st.one_of(leaf, st.lists(leaf, max_size=4)), max_size=24)
    return st.fixed_dictionaries(
        {
            "name": st.sampled_from(["X", "in_FP32", "in_BYTES", "in_BOOL", "x"]),
            "datatype": st.sampled_from(sorted(V2_TO_NUMPY)),
            "shape": st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=3),
            "data": data,
        }
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> schemathesis.BaseSchema:
    """The document as the live server serves it, loaded by schemathesis."""
    # Any 5xx fails, but 503: a model with a bad model.toml or a version that failed to load
    # is unavailable by design (with the documented error body and Retry-After, checked).
    config = schemathesis.Config.from_dict(
        {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}}
    )
    schema = schemathesis.openapi.from_url(fuzz_server.url + OPENAPI_PATH, config=config)

    @schema.hook
    def flatmap_path_parameters(
        context: schemathesis.HookContext, path_parameters: dict[str, Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        # Keep the generated value sometimes (odd names: 400, unknown ones: 404).
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        choices: dict[str, st.SearchStrategy[Any]] = {
            "model": st.sampled_from(MODELS),
            "version": st.sampled_from(VERSIONS),
        }
        return st.fixed_dictionaries(
            {
                key: st.one_of(st.just(value), choices[key]) if key in choices else st.just(value)
                for key, value in path_parameters.items()
            }
        )

    @schema.hook
    def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        path = context.operation.path if context.operation is not None else ""
        if not isinstance(body, dict) or not path.endswith(("/infer", "/explain")):
            return st.just(body)
        near = st.fixed_dictionaries(
            {"inputs": st.lists(_tensor(), min_size=1, max_size=2)},
            optional={
                "id": st.text(max_size=8),
                "outputs": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["scores", "label", "probabilities", "y"])},
                        optional={"parameters": st.just({"binary_data": True})},
                    ),
                    max_size=2,
                ),
                "parameters": st.sampled_from(
                    [{"binary_data_output": True}, {"explain_outputs": ["scores"]}, {}]
                ),
            },
        )
        return st.one_of(st.just(body), near)

    return schema


def _operations() -> list[tuple[str, str]]:
    return sorted(
        (path, method.upper())
        for path, item in DOCUMENT["paths"].items()
        for method in item
        # A stream answers for up to `max_seconds` (3600 s allowed): generated calls would
        # hang the run. It is checked against the document below, with bounded parameters.
        if path != "/v2/monitor/stream"
    )


# Deterministic (derandomize, no example database), and no shrinking: a failure is reported
# as found, where each shrink step would be one more request.
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(("path", "method"), _operations())
@pytest.mark.slow
def test_the_server_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema, fuzz_server: ServerProcess, path: str, method: str
) -> None:
    """Positive and negative cases of one operation (the document's examples included): no
    5xx, and every status, content type, header and body as documented."""
    op = api_schema[path][method]
    headers = None
    if path.startswith(("/v2/admin/", "/v2/repository/")):
        headers = {"Authorization": f"Bearer {TOKEN}"}

    def run(strategy: st.SearchStrategy[schemathesis.Case], config: settings) -> None:
        @config
        @given(strategy)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=fuzz_server.url, headers=headers, checks=CHECKS, timeout=30
            )

        check()

    examples = op.get_strategies_from_examples()  # the document's own examples first
    if examples:
        run(st.one_of(examples), settings(FUZZ, max_examples=2 * len(examples)))
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    run(st.one_of([op.as_strategy(generation_mode=mode) for mode in modes]), FUZZ)


@pytest.mark.parametrize("raw", [False, True], ids=["binary-tensors", "raw-body"])
def test_binary_inference_conforms(
    api_schema: schemathesis.BaseSchema, fuzz_server: ServerProcess, raw: bool
) -> None:
    """The binary tensor extension both ways: an octet-stream body with a JSON header, binary
    outputs back as ``application/octet-stream`` with ``Inference-Header-Content-Length``."""
    admin = {"Authorization": f"Bearer {TOKEN}"}  # the fuzzed admin calls may have unloaded it
    load = httpx.post(f"{fuzz_server.url}/v2/repository/models/credit-risk/load", headers=admin)
    assert load.status_code == 200, load.text
    tensor = np.arange(40, dtype="<f4").tobytes()
    if raw:
        header = b""
    else:
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP32",
                        "shape": [2, 20],
                        "parameters": {"binary_data_size": len(tensor)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
    op = api_schema["/v2/models/{model}/versions/{version}/infer"]["POST"]
    case = op.Case(
        path_parameters={"model": "credit-risk", "version": "1"},
        headers={"Inference-Header-Content-Length": str(len(header))},
        body=header + tensor,
        media_type="application/octet-stream",
    )
    response = case.call(base_url=fuzz_server.url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ["application/octet-stream"]
    case.validate_response(response, checks=CHECKS)
    length = int(response.headers["inference-header-content-length"][0])
    assert orjson.loads(response.content[:length])["model_version"] == "1"


def test_admin_refusals_conform(
    api_schema: schemathesis.BaseSchema, fuzz_server: ServerProcess
) -> None:
    """Without credentials, or with a wrong token: 401 with the documented body and header."""
    op = api_schema["/v2/admin/models/{model}/routing"]["GET"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        case = op.Case(path_parameters={"model": "credit-risk"})
        response = case.call(base_url=fuzz_server.url, headers=headers)
        assert response.status_code == 401
        case.validate_response(response, checks=CHECKS)


def test_a_disabled_admin_api_conforms(api_schema: schemathesis.BaseSchema, tmp_path: Path) -> None:
    """Without a configured token every admin operation answers 403, as documented (the app
    in-process: the refusal comes before any model is looked at)."""
    admin = [
        (path, method)
        for path, method in _operations()
        if path.startswith(("/v2/admin/", "/v2/repository/"))
    ]
    assert len(admin) == 8
    cases = []
    for path, method in admin:
        kwargs: dict[str, Any] = {}
        if "{model}" in path:
            kwargs["path_parameters"] = {"model": "credit-risk"}
        if method in ("PUT", "POST"):
            kwargs.update(body={}, media_type="application/json")
        cases.append(api_schema[path][method].Case(**kwargs))
    app = create_app(ServerSettings(registry=tmp_path, monitoring="off"))

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.request(
                    case.method,
                    case.formatted_path,
                    json=case.body if case.method in ("PUT", "POST") else None,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                for case in cases
            ]

    try:
        responses = asyncio.run(send_all())
    finally:
        app.service.close()
    for case, response in zip(cases, responses, strict=True):
        assert response.status_code == 403, (case.method, case.path, response.text)
        case.validate_response(response, checks=CHECKS)


@pytest.mark.slow
def test_the_event_stream_conforms(
    api_schema: schemathesis.BaseSchema, fuzz_server: ServerProcess
) -> None:
    op = api_schema["/v2/monitor/stream"]["GET"]
    for query, status in (
        ({"interval": 0.5, "max_seconds": 1}, 200),
        ({"interval": 0.1}, 400),
        ({"max_seconds": "soon"}, 400),
    ):
        case = op.Case(query=query)
        response = case.call(base_url=fuzz_server.url, timeout=10)
        assert response.status_code == status, response.text
        case.validate_response(response, checks=CHECKS)
        if status == 200:
            assert b"event: snapshot" in response.content


def test_the_document_is_valid_openapi_and_served_as_built(fuzz_server: ServerProcess) -> None:
    served = httpx.get(fuzz_server.url + OPENAPI_PATH, timeout=10)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    document = served.json()
    for doc in (DOCUMENT, document):
        OPENAPI_30_VALIDATOR.validate(doc)
        schemathesis.openapi.from_dict(doc).validate()
    # As built, plus one request schema and one infer example per loaded version.
    schemas = document["components"]["schemas"]
    loaded = sorted(k for k in schemas if k.endswith(".InferenceRequest"))
    candidates = [("credit-risk", 1), ("credit-risk", 2), ("echo", 1), ("iris", 1), ("mixed", 1)]
    assert loaded == [  # the fuzzed admin calls may have unloaded some
        f"{m}.v{v}.InferenceRequest"
        for m, v in candidates
        if httpx.get(f"{fuzz_server.url}/v2/models/{m}/versions/{v}/ready").status_code == 200
    ]
    for name in loaded:
        del schemas[name]
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        media = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        # OpenAPI 3.0: `examples` (one per version, and the generic one) replace `example`.
        if loaded:
            examples = media.pop("examples")
            assert len(examples) == len(loaded) + 1
            media["example"] = examples["generic"]["value"]
    assert document == DOCUMENT


def _documented() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_the_app_serves_is_documented(tmp_path: Path) -> None:
    """Starlette's routes and the infer dispatcher's, against the route modules' declarations
    and the document's operations, both ways: a new endpoint without its one declaration, or a
    declaration of no endpoint, fails."""
    app = create_app(ServerSettings(registry=tmp_path, monitoring="off"))
    try:
        served = set()
        for route in app.starlette.routes:
            assert isinstance(route, Route), route
            # Starlette answers HEAD on every GET route by itself; the document leaves it out.
            served |= {(route.path, m) for m in (route.methods or ()) if m != "HEAD"}
    finally:
        app.service.close()
    documented = _documented()
    declared = [(op.path, op.method) for op in OPERATIONS]
    assert len(declared) == len(set(declared)), "an operation declared twice"
    assert set(declared) == documented
    infer = set()
    for path, method in documented:
        concrete = path.replace("{model}", "m").replace("{version}", "1")
        if concrete.startswith(INFER_PREFIX) and concrete.endswith(INFER_SUFFIX):
            # The app sends these to the infer handler, before Starlette's routes.
            assert method == "POST"
            assert _route(concrete) == ("m", 1 if "{version}" in path else None)
            infer.add((path, method))
    assert infer == {
        ("/v2/models/{model}/infer", "POST"),
        ("/v2/models/{model}/versions/{version}/infer", "POST"),
    }
    assert served - documented == set(), "routes without documentation"
    assert documented - infer - served == set(), "documented operations the app lacks"


def test_every_operation_documents_its_errors() -> None:
    """Each operation answers the JSON error body for its failures, 500 included."""
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            assert "500" in op["responses"], (method, path)
            if "{model}" in path:
                assert {"400", "404"} <= set(op["responses"]), (method, path)
            if path.startswith(("/v2/admin/", "/v2/repository/")):
                assert op["security"] == [{"bearerAuth": []}]
                assert {"401", "403"} <= set(op["responses"]), (method, path)
