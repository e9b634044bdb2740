"""Model and version names: which are acceptable, one rule for everything that takes one.

The registry's directories (``<registry>/<model>/<version>/``), ``--model-name``, the URLs
and gRPC requests that name a model or version all go by these rules, so that a name can
never lead out of the registry directory.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
VERSION_RE = re.compile(r"[1-9][0-9]{0,17}")


def is_valid_model_name(name: str) -> bool:
    """``[A-Za-z0-9_.-]+``, at most 128 characters, not starting with a dot (no ``..``)."""
    return NAME_RE.fullmatch(name) is not None and not name.startswith(".")


def check_model_name(name: str) -> str:
    """Return ``name`` or raise ``InvalidInput`` for a name that could escape the registry."""
    if not is_valid_model_name(name):
        raise InvalidInput(
            f"invalid model name {name[:130]!r}: use letters, digits, '_', '.', '-' "
            "(not starting with '.')",
            reason="name",
        )
    return name


def parse_version(text: str) -> int:
    """A version is a positive integer written without leading zeros."""
    if VERSION_RE.fullmatch(text) is None:
        raise InvalidInput(
            f"invalid version {text[:40]!r}: versions are positive integers", reason="version"
        )
    return int(text)
