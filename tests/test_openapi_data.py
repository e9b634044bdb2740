"""The OpenAPI document's sources: the route modules' declarations (``Operation``) and the
hand-written schema data of ``openapi_data.json``. Every name a declaration uses is in the
data file, everything in the data file is used, the parts that constants in code decide are
left to code (``$derived``) and filled in, and the patterns agree with ``names.py``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mlserve.errors import InvalidInput
from mlserve.http import openapi
from mlserve.names import is_valid_model_name, parse_version

DATA = openapi._DATA


def _walk(value: Any) -> list[Any]:
    """``value`` and everything in it."""
    found = [value]
    if isinstance(value, dict):
        for v in value.values():
            found += _walk(v)
    elif isinstance(value, list):
        for v in value:
            found += _walk(v)
    return found


def test_every_name_a_declaration_uses_is_in_the_data_file_and_all_of_it_is_used() -> None:
    schemas, fragments = set(DATA["schemas"]), set(DATA["fragments"])
    assert not schemas & fragments, "a name both a component and a fragment"
    used: dict[str, set[str]] = {"schema": set(), "parameter": set(), "header": set()}
    examples = set()
    for op in openapi.OPERATIONS:
        answers = [op.ok, *(answer for _, answer in op.answers)]
        for answer in answers:
            used["schema"] |= {name for _, name in answer.content}
            used["header"] |= set(answer.headers)
        if op.body is not None:
            used["schema"] |= {name for _, name in op.body.content}
            if op.body.example is not None:
                examples.add(op.body.example)
        used["parameter"] |= set(op.parameters)
        used["parameter"] |= {n for n in ("model", "version") if f"{{{n}}}" in op.path}
    used["header"] |= {e["headers"] for e in DATA["errors"].values() if "headers" in e}
    assert used["schema"] <= schemas | fragments
    assert fragments <= used["schema"], "fragments no operation uses"
    assert used["parameter"] == set(DATA["parameters"])
    assert used["header"] == set(DATA["headers"])
    assert examples == set(DATA["examples"])
    # Each component is reachable: from an operation, or through another component's $ref.
    text = str(openapi.DOCUMENT["paths"]) + str(openapi.DOCUMENT["components"]["schemas"])
    for name in schemas:
        assert f"#/components/schemas/{name}'" in text, f"component {name} is not used"


def test_the_derived_parts_are_filled_in_and_only_those() -> None:
    placeholders = {
        v["$derived"] for v in _walk(DATA) if isinstance(v, dict) and set(v) == {"$derived"}
    }
    assert placeholders == set(openapi._DERIVED)
    assert not [v for v in _walk(openapi.DOCUMENT) if isinstance(v, dict) and "$derived" in v]
    schemas = openapi.DOCUMENT["components"]["schemas"]
    assert schemas["Datatype"]["enum"] == openapi._DERIVED["datatypes"]


@pytest.mark.parametrize(
    "name",
    ["credit-risk", "a", "_x", "-x", "x.y", "A" * 128, "A" * 129, ".x", "..", "", "a/b", "a b"],
)
def test_the_model_name_pattern_is_names_py_s_rule(name: str) -> None:
    pattern = openapi._DERIVED["model_name_pattern"]
    assert (re.fullmatch(pattern, name) is not None) == is_valid_model_name(name)


@pytest.mark.parametrize("text", ["1", "42", "0", "01", "-1", "1" * 18, "1" * 19, "x"])
def test_the_version_pattern_is_names_py_s_rule(text: str) -> None:
    try:
        parse_version(text)
        valid = True
    except InvalidInput:
        valid = False
    assert (re.fullmatch(openapi._DERIVED["version_pattern"], text) is not None) == valid
