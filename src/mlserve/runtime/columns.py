"""A model's features by name, and data as people have it → the model's own tensors.

A ``FeatureSchema`` names each feature of a model and says where it goes: a column of the
model's one 2-D input (names from the version's reference profile or lineage), or a
one-column input of its own (a multi-input export, e.g. skl2onnx's ColumnTransformer with
one input per column, named as the inputs). Requests, reference data, evaluation sets and
the client all go through it, so named columns and casts behave the same everywhere.

``cast_column`` is the one rule for data whose type is not the model's: under the
``"safe"`` policy (``model.toml [inputs] cast``, the default) a value is converted when the
model receives the same number it would have computed with — floats rounded to the input's
float precision, integers that the float type holds exactly, integral floats into integer
inputs — and refused otherwise (overflow, fractions, text in a numeric column), naming the
column. ``"none"`` accepts only the model's own datatype. Rounding to a narrower float is
to the nearest value, as numpy casts: a value below the narrower type's smallest subnormal
becomes zero, as it would in the model's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import CAST_POLICIES
from ..errors import InvalidInput
from .tensors import NUMPY_TO_V2, V2_TO_NUMPY, TensorSpec

__all__ = [
    "CAST_POLICIES",
    "Feature",
    "FeatureSchema",
    "cast_column",
    "datatype_of",
    "listed",
]

# Largest integer each float type holds exactly (a larger one would be rounded).
_EXACT_INT = {"e": 2**11, "f": 2**24, "d": 2**53}


def datatype_of(values: np.ndarray) -> str:
    """The V2 datatype of a numpy array (strings of any width are BYTES)."""
    if values.dtype.kind in "USO":
        return "BYTES"
    found = NUMPY_TO_V2.get(values.dtype)
    if found is None:
        raise InvalidInput(f"numpy dtype {values.dtype} has no V2 datatype", reason="datatype")
    return found


def listed(names: Sequence[str], most: int = 12) -> str:
    """Names for an error message: all of a short list, the first ``most`` of a long one."""
    if len(names) <= most:
        return str(list(names))
    head = str(list(names[:most]))[:-1]
    return f"{head}, … ({len(names)} in all: see the model metadata's parameters.features)]"


def _refuse(name: str, got: str, want: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"column {name!r} is {got} but the model takes {want}: {why}", reason="datatype"
    )


def cast_column(name: str, values: np.ndarray, datatype: str, policy: str = "safe") -> np.ndarray:
    """``values`` as the numpy dtype of V2 ``datatype`` under ``policy`` (see the module doc).

    Raises ``InvalidInput`` naming the column, the datatype received and the one expected.
    """
    target = V2_TO_NUMPY[datatype]
    got = datatype_of(values)
    if got == datatype:
        return values if values.dtype == target else values.astype(target)
    if policy == "none":
        raise _refuse(name, got, datatype, 'send the model\'s datatype ([inputs] cast = "none")')
    src = values.dtype.kind
    if target.kind == "O":
        raise _refuse(name, got, datatype, "send text (strings) for this column")
    if src in "OUS":
        raise _refuse(name, got, datatype, "send numbers for this column, not text")
    if target.kind == "f":
        if src in "iu" and values.size:
            limit = _EXACT_INT[target.char]
            if int(values.max()) > limit or int(values.min()) < -limit:
                why = f"integers beyond ±{limit} would be rounded; send {datatype}"
                raise _refuse(name, got, datatype, why)
        with np.errstate(over="ignore", invalid="ignore"):
            out = values.astype(target)
        if src == "f" and values.size:
            overflow = np.isinf(out) & np.isfinite(values)
            if overflow.any():
                raise _refuse(
                    name, got, datatype, f"values beyond the range of {datatype} (overflow)"
                )
        return out
    if target.kind == "b":
        if src in "iuf" and values.size and not np.isin(values, (0, 1)).all():
            raise _refuse(name, got, datatype, "only 0 and 1 convert to booleans")
        return values.astype(target)
    # integer targets
    if values.size:
        fractional = src == "f" and (
            not np.isfinite(values).all() or (np.trunc(values) != values).any()
        )
        if fractional:
            raise _refuse(name, got, datatype, "values with fractions or NaN are not integers")
        info = np.iinfo(target)
        low, high = (values.min(), values.max()) if src != "b" else (0, 1)
        if src == "f":
            # In the float's own precision info.max may round up (float(2**63 - 1) == 2**63):
            # compare against the exclusive bound, a power of two every float holds exactly.
            beyond = float(low) < float(info.min) or float(high) >= float(info.max) + 1.0
        else:
            beyond = int(low) < info.min or int(high) > info.max
        if beyond:
            raise _refuse(name, got, datatype, f"values beyond [{info.min}, {info.max}]")
    return values.astype(target)


@dataclass(frozen=True)
class Feature:
    """One named feature: which model input it goes to, and the column there (None: the
    input is this feature alone, shape ``[n]`` or ``[n, 1]``)."""

    name: str
    datatype: str
    input: str
    column: int | None

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "input": self.input}
        if self.column is not None:
            out["column"] = self.column
        return out


class FeatureSchema:
    """The named features of a model, and the conversions between columns and its tensors."""

    def __init__(self, features: Sequence[Feature], inputs: Sequence[TensorSpec]) -> None:
        self.features = tuple(features)
        self.names = tuple(f.name for f in self.features)
        self.inputs = tuple(inputs)
        self._by_name = {f.name: f for f in self.features}
        # One 2-D input holding every feature (columns), or one input per feature.
        self.single = len(self.inputs) == 1 and self.features[0].column is not None
        kinds = {V2_TO_NUMPY[f.datatype].kind for f in self.features}
        self.numeric = "O" not in kinds

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def from_inputs(
        cls, inputs: Sequence[TensorSpec], names: Sequence[str] | None = None
    ) -> FeatureSchema | None:
        """The schema of a model with ``inputs``, or None when its features are not named.

        One 2-D input ``[n, F]``: its columns, named by ``names`` (F of them; without names,
        None). Every input of shape ``[n]`` or ``[n, 1]``: one feature per input, named as
        the input (``names``, if given, must list the same names; their order wins).
        Anything else: None.
        """
        if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1:
            spec = inputs[0]
            if names is None or (spec.shape[1] != -1 and len(names) != spec.shape[1]):
                return None
            if len(set(names)) != len(names) or not names:
                return None
            features = [Feature(str(n), spec.datatype, spec.name, j) for j, n in enumerate(names)]
            return cls(features, inputs)
        if not inputs or any(not _one_column(s) for s in inputs):
            return None
        by_name = {s.name: s for s in inputs}
        order = list(by_name)
        if names is not None and set(names) == set(by_name) and len(names) == len(by_name):
            order = [str(n) for n in names]
        features = [Feature(n, by_name[n].datatype, n, None) for n in order]
        return cls(features, inputs)

    def metadata(self) -> list[dict[str, Any]]:
        """What a client needs to send named columns: each feature's name and datatype."""
        return [f.metadata() for f in self.features]

    def check_names(self, given: Sequence[str]) -> None:
        """Refuse a set of column names that is not exactly the features, naming the
        difference."""
        missing = [n for n in self.names if n not in set(given)]
        extra = [n for n in given if n not in self._by_name]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {listed(missing)}")
            if extra:
                parts.append(f"unknown {listed(extra)}")
            raise InvalidInput(
                f"the columns do not match the model's features ({'; '.join(parts)}); "
                f"the features are {listed(self.names)}",
                reason="name",
            )

    def feeds(
        self, columns: Mapping[str, np.ndarray], policy: str = "safe"
    ) -> dict[str, np.ndarray]:
        """The model's tensors from one array per feature (``[n]`` or ``[n, 1]``), cast by
        ``policy``; the names must be exactly the features."""
        self.check_names(list(columns))
        rows: int | None = None
        cast: dict[str, np.ndarray] = {}
        for f in self.features:
            values = np.asarray(columns[f.name])
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim != 1:
                raise InvalidInput(
                    f"column {f.name!r} must have shape [n] or [n, 1], got {list(values.shape)}",
                    reason="shape",
                )
            if rows is None:
                rows = values.shape[0]
            elif values.shape[0] != rows:
                raise InvalidInput(
                    f"column {f.name!r} has {values.shape[0]} rows, the first column {rows}",
                    reason="shape",
                )
            cast[f.name] = cast_column(f.name, values, f.datatype, policy)
        if self.single:
            spec = self.inputs[0]
            stacked = np.empty((rows or 0, len(self.features)), dtype=spec.dtype)
            for f in self.features:
                stacked[:, f.column] = cast[f.name]
            return {spec.name: stacked}
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            spec = next(s for s in self.inputs if s.name == f.input)
            out[f.input] = cast[f.name].reshape(-1, 1) if len(spec.shape) == 2 else cast[f.name]
        return out

    def table(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rows × features in feature order: the input itself for a one-input model, float64
        when every feature is numeric, else an object array."""
        if self.single:
            return feeds[self.inputs[0].name]
        first = feeds[self.features[0].input]
        n = first.shape[0]
        out = np.empty((n, len(self.features)), dtype=np.float64 if self.numeric else object)
        for j, f in enumerate(self.features):
            out[:, j] = feeds[f.input].reshape(n)
        return out

    def split(self, table: np.ndarray) -> dict[str, np.ndarray]:
        """The model's tensors from a rows × features table (the inverse of ``table``)."""
        if self.single:
            spec = self.inputs[0]
            return {spec.name: np.ascontiguousarray(table, dtype=spec.dtype)}
        out: dict[str, np.ndarray] = {}
        for j, f in enumerate(self.features):
            spec = next(s for s in self.inputs if s.name == f.input)
            col = np.ascontiguousarray(table[:, j]).astype(spec.dtype)
            out[f.input] = col.reshape(-1, 1) if len(spec.shape) == 2 else col
        return out


def _one_column(spec: TensorSpec) -> bool:
    return len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)
