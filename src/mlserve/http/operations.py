"""The declaration of an HTTP operation, written by each route module beside its routes.

An ``Operation`` names what the OpenAPI document says of one route and method: its summary
and tag, its success answer, the error statuses it can answer, its extra parameters, its
request body and whether it needs the admin token. Schemas, parameters and headers are named,
not written: they live in ``openapi_data.json``, and ``openapi.py`` assembles the document
from the declarations, that file and the error classes. This module imports nothing of http.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MODEL", "VERSION", "Answer", "Body", "Operation", "json_ok", "per_target"]

MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"


@dataclass(frozen=True)
class Answer:
    """An answer: its description, per media type the name of its schema (a component or a
    fragment of the data file), and the header sets of the data file it carries."""

    description: str
    content: tuple[tuple[str, str], ...]
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Body:
    """A request body: per media type the name of its schema, and the name of the data file's
    example shown on its JSON form."""

    content: tuple[tuple[str, str], ...]
    required: bool = True
    description: str | None = None
    example: str | None = None


@dataclass(frozen=True)
class Operation:
    """One route and method as documented. ``errors``: the statuses answered with the error
    body (those every request may get, and 408 with a body, are added); ``answers``: other
    documented answers, by status, in place of the error body; ``parameters``: the data
    file's, after the path's own (``{model}``, ``{version}``)."""

    path: str
    method: str
    summary: str
    tag: str
    ok: Answer
    errors: tuple[int, ...] = ()
    answers: tuple[tuple[int, Answer], ...] = ()
    parameters: tuple[str, ...] = ()
    body: Body | None = None
    admin: bool = False


def json_ok(description: str, schema: str, *headers: str) -> Answer:
    """A JSON answer of the data file's ``schema``."""
    return Answer(description, (("application/json", schema),), headers)


def per_target(suffix: str) -> tuple[tuple[str, str, bool], ...]:
    """A model-scoped route with and without a version: (path, what it targets, pinned)."""
    return (
        (MODEL + suffix, "the model (its default version)", False),
        (VERSION + suffix, "the version", True),
    )
