"""``mlserve payloads export``: logged requests back into an evaluation set.

``export_payloads`` reads the payload log (``governance/payloads.py``: every process's
files, rotated ones too) and turns the successful requests of one model in a time range into
an ``.npz`` or ``.parquet`` evaluation set that ``mlserve profile`` and ``mlserve validate``
read, with labels that arrive later joined by request id.
"""

from __future__ import annotations

import csv
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from ..runtime.tensors import V2_TO_NUMPY
from .payloads import FILE_GLOB, REDACTED

__all__ = ["export_payloads", "parse_time"]


def parse_time(value: float | int | str | datetime | None) -> float | None:
    """Unix seconds from unix seconds, an ISO 8601 timestamp (naive: UTC) or a datetime.

    NaN and infinities are refused (a NaN bound would silently disable the filter)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)):
        return _finite(float(value), value)
    else:
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return _finite(number, value)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is neither unix seconds nor an ISO 8601 timestamp"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _finite(number: float, value: Any) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite time")
    return number


@dataclass
class _Labels:
    label: dict[tuple[str, int | None], Any] = field(default_factory=dict)
    group: dict[tuple[str, int | None], Any] = field(default_factory=dict)
    has_group: bool = False
    blank: int = 0  # lines whose label is empty: unlabelled, left out


def export_payloads(
    directory: str | os.PathLike[str],
    model: str,
    *,
    version: int | str | None = None,
    since: float | str | datetime | None = None,
    until: float | str | datetime | None = None,
    out: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    label_output: str | None = None,
    input_name: str | None = None,
    registry: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write the logged successful requests of ``model`` as an evaluation set; a summary.

    Reads every payload file in ``directory`` (all processes, rotated ones too), keeps
    successful requests of ``model`` (and ``version``) with ``since ≤ time < until``, in
    time order, and writes ``out``: ``.npz`` with ``X`` (the feature input's rows, 2-D),
    ``feature_names``, ``request_id``, ``row`` (within its request), ``timestamp`` (unix
    seconds), ``version``, and ``y`` (and ``group``) when labels are given; or ``.parquet``
    with one column per feature and the same per-row columns (needs pyarrow).

    The feature input is the model's only input, or ``input_name``; a model with several
    inputs of one column each (``[n]`` or ``[n, 1]``, text ones included) gives one feature
    per input, named as the input (ordered as in ``reference.json`` under ``registry`` when
    given). Text features need ``.parquet`` (``.npz`` holds no text next to numbers).
    Feature names come from the version's ``reference.json`` under ``registry`` when given,
    else ``f0``… Labels:
    ``labels`` is a CSV with columns ``id`` and ``label`` (optionally ``row``, 0-based, for
    requests of several rows, and ``group``), joined on the request id (rows without a label,
    a blank one included, are dropped and counted; labels are all numbers or all text); or
    ``label_output`` names a served output used as ``y``.
    Problems raise ``ValueError`` naming the file, input or option at fault.
    """
    directory = Path(directory)
    out = Path(out)
    if labels is not None and label_output is not None:
        raise ValueError("give labels or label_output, not both")
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ValueError(f"{out}: the evaluation set is written as .npz or .parquet")
    if not directory.is_dir():
        raise ValueError(f"payload directory {directory} does not exist")
    start, end = _bound("--since", since), _bound("--until", until)
    if start is not None and end is not None and start > end:
        raise ValueError(f"--since is after --until ({since!r} > {until!r})")
    want_version = None if version is None else str(int(version))
    joined = _read_labels(Path(labels)) if labels is not None else None

    files = sorted(directory.glob(FILE_GLOB))
    summary: dict[str, Any] = {"files": len(files), "bad_lines": 0, "failed_skipped": 0}
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # rotated away while we listed
            continue
        for text in raw.splitlines():
            if not text.strip():
                continue
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError:
                summary["bad_lines"] += 1
                continue
            if not isinstance(doc, dict) or doc.get("model") != model:
                continue
            if want_version is not None and doc.get("version") != want_version:
                continue
            unix = doc.get("unix")
            if not isinstance(unix, (int, float)):
                summary["bad_lines"] += 1
                continue
            if (start is not None and unix < start) or (end is not None and unix >= end):
                continue
            if doc.get("status") != 200:
                summary["failed_skipped"] += 1
                continue
            records.append(doc)
    records.sort(key=lambda d: d["unix"])
    if not records:
        where = f"{model}" + (f" version {want_version}" if want_version else "")
        raise ValueError(
            f"no successful requests of {where} in {directory} in the time range "
            f"({len(files)} payload files)"
        )

    logged = [input_name] if input_name else _input_names(records, model)
    name = logged[0] if len(logged) == 1 else ", ".join(logged)
    xs: list[NDArray[Any]] = []
    ys: list[NDArray[Any]] = []
    groups: list[NDArray[Any]] = []
    ids: list[str] = []
    rows: list[int] = []
    stamps: list[float] = []
    versions: list[int] = []
    skipped = {"no_input": 0, "no_label_output": 0}
    unlabeled = 0
    width: int | None = None
    for doc in records:
        x = _features(doc, logged)
        if x is None:
            skipped["no_input"] += 1
            continue
        if width is not None and x.shape[1] != width:
            raise ValueError(
                f"input {name!r} has {x.shape[1]} columns in request {doc.get('id')!r} at "
                f"{doc.get('timestamp')} but {width} before: export one version at a time"
            )
        width = x.shape[1]
        n = x.shape[0]
        raw_id = doc.get("id")
        rid: str = raw_id if isinstance(raw_id, str) else ""
        keep = np.ones(n, dtype=bool)
        y: NDArray[Any] | None = None
        g: NDArray[Any] | None = None
        if label_output is not None:
            out_tensor = _find(doc.get("outputs"), label_output)
            if out_tensor is None:
                skipped["no_label_output"] += 1
                continue
            y = _rows(out_tensor, f"output {label_output!r}")
            if y.shape[0] != n or y.shape[1] != 1:
                raise ValueError(
                    f"output {label_output!r} has shape {out_tensor.get('shape')}: a label "
                    "output needs one value per row"
                )
            y = y[:, 0]
        elif joined is not None:
            values: list[Any] = []
            grp: list[Any] = []
            for r in range(n):
                key = (rid, r) if (rid, r) in joined.label else (rid, None)
                if not rid or key not in joined.label or (key[1] is None and n != 1):
                    keep[r] = False
                    values.append(None)
                    grp.append(None)
                else:
                    values.append(joined.label[key])
                    grp.append(joined.group.get(key))
            unlabeled += int((~keep).sum())
            y = np.array([v for v, k in zip(values, keep, strict=True) if k], dtype=object)
            if joined.has_group:
                g = np.array([v for v, k in zip(grp, keep, strict=True) if k], dtype=object)
        if not keep.any():
            continue
        xs.append(x[keep])
        if y is not None:
            ys.append(y)
        if g is not None:
            groups.append(g)
        count = int(keep.sum())
        ids.extend([rid] * count)
        rows.extend(int(r) for r in np.flatnonzero(keep))
        stamps.extend([float(doc["unix"])] * count)
        versions.extend([int(doc.get("version", 0))] * count)
    if not xs:
        raise ValueError(
            f"none of the {len(records)} requests gave a row: "
            f"{unlabeled} rows had no label, {skipped}"
        )
    X = np.concatenate(xs)
    if len(logged) == 1:
        names = _feature_names(registry, model, sorted(set(versions)), name, X.shape[1])
    else:  # one feature per input, named as the input
        names = logged
        if registry is not None:
            order = _reference_names(registry, model, sorted(set(versions)))
            if sorted(order) != sorted(logged):
                raise ValueError(
                    f"reference.json of {model} names the features {order}; the logged "
                    f"inputs are {logged}"
                )
            X = X[:, [logged.index(n) for n in order]]
            names = order
    if suffix == ".npz" and X.dtype == object:
        raise ValueError(
            f"{model} has text inputs: .npz holds no text next to numbers, write .parquet"
        )
    columns: dict[str, NDArray[Any]] = {
        "X": X,
        "feature_names": np.array(names, dtype=str),
        "request_id": np.array(ids, dtype=str),
        "row": np.array(rows, dtype=np.int64),
        "timestamp": np.array(stamps, dtype=np.float64),
        "version": np.array(versions, dtype=np.int64),
    }
    if ys:
        columns["y"] = _uniform(np.concatenate(ys))
    if groups:
        columns["group"] = _uniform(np.concatenate(groups))
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        _write_npz(out, columns)
    else:
        _write_parquet(out, columns)
    summary.update(
        out=str(out),
        input=name,
        requests=len(records),
        rows=int(X.shape[0]),
        features=int(X.shape[1]),
        feature_names=names,
        versions=sorted(set(versions)),
        labels="y" in columns,
        unlabeled_rows=unlabeled,
        blank_labels=joined.blank if joined is not None else 0,
        skipped=skipped,
    )
    return summary


def _bound(option: str, value: float | str | datetime | None) -> float | None:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def _input_names(records: list[dict[str, Any]], model: str) -> list[str]:
    """The logged inputs' names, in the order first logged."""
    names: dict[str, None] = {}
    for doc in records:
        for t in doc.get("inputs") or ():
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                names.setdefault(t["name"])
    if not names:
        raise ValueError(
            f"the logged requests of {model} carry no inputs ([payloads] fields leaves them out)"
        )
    return list(names)


def _features(doc: Mapping[str, Any], names: Sequence[str]) -> NDArray[Any] | None:
    """A record's rows × features: the one input's rows, or one column per input (float64,
    or an object array of floats and strings with text inputs); None if an input is absent."""
    tensors = [t for t in (_find(doc.get("inputs"), n) for n in names) if t is not None]
    if len(tensors) != len(names):
        return None
    if len(names) == 1:
        return _rows(tensors[0], f"input {names[0]!r}")
    columns = []
    for n, t in zip(names, tensors, strict=True):
        x = _rows(t, f"input {n!r}")
        if x.shape[1] != 1:
            raise ValueError(
                f"{len(names)} inputs {list(names)}, and {n!r} has {x.shape[1]} columns: "
                "choose the feature input (--input)"
            )
        columns.append(x[:, 0])
    if all(c.dtype.kind in "fiub" for c in columns):
        return np.column_stack([c.astype(np.float64) for c in columns])
    rows = len(columns[0])
    if any(len(c) != rows for c in columns):
        raise ValueError(f"the inputs of request {doc.get('id')!r} have different row counts")
    table = np.empty((rows, len(columns)), dtype=object)
    for j, c in enumerate(columns):
        table[:, j] = c.tolist()
    return table


def _find(tensors: Any, name: str) -> dict[str, Any] | None:
    if isinstance(tensors, list):
        for t in tensors:
            if isinstance(t, dict) and t.get("name") == name:
                return t
    return None


def _rows(tensor: Mapping[str, Any], what: str) -> NDArray[Any]:
    """A logged tensor as a rows × columns array of its datatype."""
    data = tensor.get("data")
    if data == REDACTED:
        raise ValueError(
            f"{what} is redacted in the payload log ([payloads] redact): it cannot be exported"
        )
    if not isinstance(data, list):
        raise ValueError(f"{what} has no data in the payload log ({data!r})")
    dtype = V2_TO_NUMPY.get(str(tensor.get("datatype")))
    if dtype is None:
        raise ValueError(f"{what} has an unknown datatype {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    try:
        array = np.asarray(data, dtype=str if dtype.kind == "O" else dtype)
        array = array.reshape(shape if isinstance(shape, list) else -1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: data does not fit shape {shape}: {exc}") from None
    if array.ndim == 0:
        return array.reshape(1, 1)
    return array.reshape(len(array), -1)


def _read_labels(path: Path) -> _Labels:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel writes a BOM
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            table = [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read labels {path}: {exc}") from exc
    if "id" not in fields or "label" not in fields:
        raise ValueError(f"labels {path} need columns 'id' and 'label' (found {fields})")
    result = _Labels(has_group="group" in fields)
    first_number: tuple[int, Any] | None = None
    first_text: tuple[int, Any] | None = None
    for i, row in enumerate(table, start=2):
        label_text = (row.get("label") or "").strip()
        if not label_text:  # a blank cell: no label (not the label "")
            result.blank += 1
            continue
        row_text = (row.get("row") or "").strip()
        try:
            r = int(row_text) if row_text else None
        except ValueError:
            raise ValueError(
                f"labels {path} line {i}: row {row_text!r} is not an integer"
            ) from None
        key = ((row.get("id") or "").strip(), r)
        if key in result.label:
            raise ValueError(f"labels {path} line {i}: id {key[0]!r} row {r} is labelled twice")
        label = result.label[key] = _number(label_text)
        if isinstance(label, str):
            first_text = first_text or (i, label)
        else:
            first_number = first_number or (i, label)
        if first_text is not None and first_number is not None:
            raise ValueError(
                f"labels {path} mix numbers (line {first_number[0]}: {first_number[1]!r}) and "
                f"text (line {first_text[0]}: {first_text[1]!r}): labels are all numbers or all "
                "text"
            )
        if result.has_group:
            result.group[key] = _number((row.get("group") or "").strip())
    return result


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _uniform(values: NDArray[Any]) -> NDArray[Any]:
    """Object arrays of labels as int64, float64 or str (npz stores no Python objects)."""
    if values.dtype != object:
        return values
    items = values.tolist()
    if all(isinstance(v, int) for v in items):
        return np.array(items, dtype=np.int64)
    if all(isinstance(v, (int, float)) for v in items):
        return np.array(items, dtype=np.float64)
    return np.array([str(v) for v in items], dtype=str)


def _feature_names(
    registry: str | os.PathLike[str] | None,
    model: str,
    versions: Sequence[int],
    input_name: str,
    width: int,
) -> list[str]:
    if registry is None:
        return [f"f{j}" for j in range(width)]
    names = _reference_names(registry, model, versions)
    if len(names) != width:
        raise ValueError(
            f"reference.json of {model} names {len(names)} features; input {input_name!r} has "
            f"{width} columns"
        )
    return names


def _reference_names(
    registry: str | os.PathLike[str], model: str, versions: Sequence[int]
) -> list[str]:
    """The feature names of the versions' ``reference.json`` (the same for all of them)."""
    from ..monitoring.profile import load_profile

    found: dict[int, list[str]] = {}
    for v in versions:
        path = Path(registry) / model / str(v) / "reference.json"
        if path.is_file():
            found[v] = [f["name"] for f in load_profile(path)["features"]]
    if not found:
        raise ValueError(
            f"no reference.json for {model} version(s) {list(versions)} under {registry}"
        )
    distinct = {tuple(n) for n in found.values()}
    if len(distinct) > 1:
        raise ValueError(
            f"the versions {sorted(found)} of {model} name their features differently: "
            "export one version at a time"
        )
    return list(distinct.pop())


def _write_npz(out: Path, columns: dict[str, NDArray[Any]]) -> None:
    tmp = out.with_name(f".{out.name}.tmp.npz")
    try:
        np.savez_compressed(tmp, **columns)  # type: ignore[arg-type]
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_parquet(out: Path, columns: dict[str, NDArray[Any]]) -> None:
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ValueError(f"writing {out.name} needs pyarrow: pip install pyarrow") from None
    names = [str(n) for n in columns["feature_names"].tolist()]
    X = columns["X"]
    extra = [k for k in ("y", "group", "request_id", "row", "timestamp", "version") if k in columns]
    clash = sorted(set(names) & set(extra))
    if clash:
        raise ValueError(f"feature names {clash} clash with the export's own columns")
    data = {n: _column(X[:, j]) for j, n in enumerate(names)}
    data.update({k: columns[k] for k in extra})
    table = pa.table(data)
    meta = {
        b"mlserve": orjson.dumps({"feature_names": names, "label": "y" if "y" in columns else None})
    }
    table = table.replace_schema_metadata(meta)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _column(values: NDArray[Any]) -> Any:
    """A feature column for pyarrow: numbers as float64, text (an object column) as a list."""
    if values.dtype != object:
        return values
    items = values.tolist()
    if all(isinstance(v, (int, float)) for v in items):
        return np.array(items, dtype=np.float64)
    return [None if v is None else str(v) for v in items]
