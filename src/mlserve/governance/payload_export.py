"""``mlserve payloads export``: logged requests back into an evaluation set.

``export_payloads`` reads the payload log (``governance/payloads.py``: every process's
files, rotated ones too) and turns the successful requests of one model in a time range into
an ``.npz`` or ``.parquet`` evaluation set that ``mlserve profile`` and ``mlserve validate``
read, with labels that arrive later joined by request id.
"""

from __future__ import annotations

import abc
import csv
import importlib
import math
import os
import shutil
import tempfile
import zipfile
from array import array
from collections.abc import Iterator, Mapping, Sequence
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

    Memory stays bounded whatever the log holds: the files are read a line at a time into
    an index (file, offset, length, time: a few dozen bytes a record), then the records are
    read back in time order twice, once to learn every column's type and size and once to
    write them ``CHUNK_ROWS`` rows (or about ``CHUNK_BYTES``) at a time (a parquet row group
    each; an .npz column by column through temporary files). Text is never held as
    fixed-width unicode of the log's longest value: .parquet writes arrow strings; .npz
    (fixed-width by format) cuts request ids at ``MAX_NPZ_ID_CHARS`` (counted in the
    summary's ``ids_cut``). Records the payload log cut to fit its ``max_bytes`` (their
    ``"truncated"`` names a feature input or the label output) are left out and counted in
    ``skipped["truncated"]``.
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
    with _Log(files) as log:
        names_first: dict[str, tuple[float, int, int]] | None = None if input_name else {}
        order = log.scan(model, want_version, start, end, summary, names_first)
        if not len(order):
            where = f"{model}" + (f" version {want_version}" if want_version else "")
            raise ValueError(
                f"no successful requests of {where} in {directory} in the time range "
                f"({len(files)} payload files)"
            )
        if input_name:
            logged = [input_name]
        elif not names_first:
            raise ValueError(
                f"the logged requests of {model} carry no inputs ([payloads] fields leaves "
                "them out)"
            )
        else:  # in the order first logged
            logged = sorted(names_first, key=lambda n: names_first[n])
        name = logged[0] if len(logged) == 1 else ", ".join(logged)
        plan = _Plan(logged, name, label_output, joined, suffix == ".npz")

        # Pass 1 over the records, in time order: the shape and types of every column.
        stats = _Stats()
        for block in plan.blocks(log.docs(order), plan.tally()):
            stats.add(block)
        tally = plan.last
        if not stats.rows:
            raise ValueError(
                f"none of the {len(order)} requests gave a row: "
                f"{tally.unlabeled} rows had no label, {tally.skipped}"
            )
        versions = sorted(stats.versions)
        width = stats.width or 0
        perm: list[int] | None = None
        if len(logged) == 1:
            names = _feature_names(registry, model, versions, name, width)
        else:  # one feature per input, named as the input
            names = logged
            if registry is not None:
                reference = _reference_names(registry, model, versions)
                if sorted(reference) != sorted(logged):
                    raise ValueError(
                        f"reference.json of {model} names the features {reference}; the "
                        f"logged inputs are {logged}"
                    )
                perm = [logged.index(n) for n in reference]
                names = reference
        if suffix == ".npz" and stats.x.objects:
            raise ValueError(
                f"{model} has text inputs: .npz holds no text next to numbers, write .parquet"
            )
        if suffix == ".parquet":
            clash = sorted(set(names) & {"y", "group", "request_id", "row", "timestamp", "version"})
            if clash:
                raise ValueError(f"feature names {clash} clash with the export's own columns")

        # Pass 2: the same records again, written a bounded chunk of rows at a time.
        out.parent.mkdir(parents=True, exist_ok=True)
        writer: _Writer
        if suffix == ".npz":
            writer = _NpzWriter(out, names, stats)
        else:
            writer = _ParquetWriter(out, names, stats, perm)
        with writer:
            chunk: list[_Block] = []
            rows = size = 0
            for block in plan.blocks(log.docs(order), plan.tally()):
                chunk.append(block)
                rows += block.n
                size += block.nbytes
                if rows >= writer.chunk_rows or size >= CHUNK_BYTES:
                    writer.write(chunk, perm)
                    chunk, rows, size = [], 0, 0
            if chunk:
                writer.write(chunk, perm)
            writer.finish()
    summary.update(
        out=str(out),
        input=name,
        requests=len(order),
        rows=stats.rows,
        features=width,
        feature_names=names,
        versions=versions,
        labels=stats.y is not None,
        unlabeled_rows=tally.unlabeled,
        blank_labels=joined.blank if joined is not None else 0,
        skipped=tally.skipped,
    )
    if suffix == ".npz":
        summary["ids_cut"] = stats.ids_cut
    return summary


# Rows are written in chunks of at most this many rows (parquet: one row group each) and
# about this many bytes of decoded data: the export's memory does not grow with the log,
# nor with its longest field (a request's id, a text feature) beyond one record.
CHUNK_ROWS = 16_384
CHUNK_BYTES = 16 << 20
# .npz stores text as fixed-width unicode: a request id longer than this is cut (counted
# in the summary's ``ids_cut``); .parquet keeps ids whole.
MAX_NPZ_ID_CHARS = 1024


class _Log:
    """The payload files, read a line at a time: an index of the records to export (file,
    offset, length, time) and then those records, parsed again one by one, in time order.
    The files stay open between the passes, so one rotated away meanwhile still reads."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.handles: dict[int, Any] = {}

    def __enter__(self) -> _Log:
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in self.handles.values():
            fh.close()

    def scan(
        self,
        model: str,
        want_version: str | None,
        start: float | None,
        end: float | None,
        summary: dict[str, Any],
        names_first: dict[str, tuple[float, int, int]] | None,
    ) -> NDArray[np.intp]:
        """Index the successful records of ``model`` in the time range; their order in time
        (ties in file order). ``names_first``: each input name's first appearance."""
        unix, where, offsets, lengths = array("d"), array("q"), array("q"), array("q")
        for f, path in enumerate(self.files):
            try:
                fh = path.open("rb")
            except FileNotFoundError:  # rotated away while we listed
                continue
            kept = False
            offset = 0
            for text in fh:
                at, offset = offset, offset + len(text)
                if text.isspace():
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
                moment = doc.get("unix")
                if isinstance(moment, bool) or not isinstance(moment, (int, float)):
                    summary["bad_lines"] += 1
                    continue
                if (start is not None and moment < start) or (end is not None and moment >= end):
                    continue
                if doc.get("status") != 200:
                    summary["failed_skipped"] += 1
                    continue
                if names_first is not None:
                    seq = len(unix)
                    for pos, t in enumerate(doc.get("inputs") or ()):
                        if isinstance(t, dict) and isinstance(t.get("name"), str):
                            key = (float(moment), seq, pos)
                            if key < names_first.get(t["name"], (math.inf, 0, 0)):
                                names_first[t["name"]] = key
                unix.append(float(moment))
                where.append(f)
                offsets.append(at)
                lengths.append(len(text))
                kept = True
            if kept:
                self.handles[f] = fh
            else:
                fh.close()
        self.where, self.offsets, self.lengths = where, offsets, lengths
        return np.argsort(np.frombuffer(unix, dtype=np.float64), kind="stable")

    def docs(self, order: NDArray[np.intp]) -> Iterator[dict[str, Any]]:
        for k in order.tolist():
            fh = self.handles[self.where[k]]
            fh.seek(self.offsets[k])
            doc: dict[str, Any] = orjson.loads(fh.read(self.lengths[k]))
            yield doc


@dataclass
class _Block:
    """The rows one request gives."""

    x: NDArray[Any]
    y: NDArray[Any] | None
    g: NDArray[Any] | None
    rid: str
    rows: NDArray[np.int64]
    unix: float
    version: int

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return int(self.x.nbytes) + 64 * self.n + len(self.rid) * 4 * self.n


@dataclass
class _Tally:
    skipped: dict[str, int] = field(
        default_factory=lambda: {"no_input": 0, "no_label_output": 0, "truncated": 0}
    )
    unlabeled: int = 0
    width: int | None = None


@dataclass
class _Plan:
    """How a record becomes rows: the feature inputs, the labels."""

    logged: list[str]
    name: str
    label_output: str | None
    joined: _Labels | None
    npz: bool
    last: _Tally = field(default_factory=_Tally)

    def tally(self) -> _Tally:
        self.last = _Tally()
        return self.last

    def needed(self) -> set[str]:
        """The fields of a record whose truncation (``"truncated"``) leaves it out."""
        need = {"inputs", *(f"inputs.{n}" for n in self.logged)}
        if self.label_output is not None:
            need |= {"outputs", f"outputs.{self.label_output}"}
        return need

    def blocks(self, docs: Iterator[dict[str, Any]], tally: _Tally) -> Iterator[_Block]:
        need = self.needed()
        name, joined, label_output = self.name, self.joined, self.label_output
        for doc in docs:
            cut = doc.get("truncated")
            if isinstance(cut, list) and need.intersection(c for c in cut if isinstance(c, str)):
                tally.skipped["truncated"] += 1  # a feature (or the label) was cut to fit
                continue
            x = _features(doc, self.logged)
            if x is None:
                tally.skipped["no_input"] += 1
                continue
            if tally.width is not None and x.shape[1] != tally.width:
                raise ValueError(
                    f"input {name!r} has {x.shape[1]} columns in request "
                    f"{_short(doc.get('id'))} at {doc.get('timestamp')} but {tally.width} "
                    "before: export one version at a time"
                )
            tally.width = x.shape[1]
            n = x.shape[0]
            raw_id = doc.get("id")
            rid: str = raw_id if isinstance(raw_id, str) else ""
            keep: NDArray[np.bool_] | None = None  # None: every row
            y: NDArray[Any] | None = None
            g: NDArray[Any] | None = None
            if label_output is not None:
                out_tensor = _find(doc.get("outputs"), label_output)
                if out_tensor is None:
                    tally.skipped["no_label_output"] += 1
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
                keep = np.ones(n, dtype=bool)
                for r in range(n):
                    key = (rid, r) if (rid, r) in joined.label else (rid, None)
                    if not rid or key not in joined.label or (key[1] is None and n != 1):
                        keep[r] = False
                    else:
                        values.append(joined.label[key])
                        grp.append(joined.group.get(key))
                tally.unlabeled += int((~keep).sum())
                y = _objects(values)
                if joined.has_group:
                    g = _objects(grp)
            if keep is None or keep.all():
                rows = np.arange(n, dtype=np.int64)
            elif not keep.any():
                continue
            else:
                x, rows = x[keep], np.flatnonzero(keep).astype(np.int64)
            yield _Block(x, y, g, rid, rows, float(doc["unix"]), int(doc.get("version", 0)))


def _objects(values: list[Any]) -> NDArray[Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


class _Kind:
    """The type a column ends up with over all its chunks: numpy's promotion of typed
    chunks; object chunks (labels, text features) as numbers when all their values are
    numbers (int64 when all are integers, unless ``float_numbers``: float64), else text."""

    def __init__(self, float_numbers: bool = False) -> None:
        self.dtype: np.dtype[Any] | None = None
        self.float_numbers = float_numbers
        self.objects = False
        self.all_int = True
        self.all_num = True
        self.chars = 1

    def add(self, values: NDArray[Any]) -> None:
        if values.dtype != object:
            if self.dtype is None:
                self.dtype = values.dtype
            elif values.dtype != self.dtype:
                try:
                    self.dtype = np.result_type(self.dtype, values.dtype)
                except TypeError:
                    raise ValueError(
                        f"a column is logged as {self.dtype} and as {values.dtype}: export one "
                        "version at a time"
                    ) from None
            if values.dtype.kind == "U":
                self.chars = max(self.chars, values.dtype.itemsize // 4)
            return
        self.objects = True
        for v in values.tolist():
            self.chars = max(self.chars, len(str(v)))
            if isinstance(v, int):
                continue
            self.all_int = False
            if not isinstance(v, float):
                self.all_num = False

    @property
    def text(self) -> bool:
        if self.objects and not self.all_num:
            return True
        return self.dtype is not None and self.dtype.kind in "US"

    def final(self) -> np.dtype[Any]:
        """The column's dtype in an .npz (fixed-width unicode for text)."""
        if self.text:
            return np.dtype(f"<U{self.chars}")
        if self.objects:
            kind = np.dtype(np.int64 if self.all_int and not self.float_numbers else np.float64)
            return kind if self.dtype is None else np.result_type(kind, self.dtype)
        assert self.dtype is not None
        return self.dtype

    def cast(self, values: NDArray[Any]) -> NDArray[Any]:
        final = self.final()
        if values.dtype == object:
            items = values.tolist()
            if final.kind == "U":
                return np.array([str(v) for v in items], dtype=final)
            return np.array(items, dtype=final)
        return values.astype(final, copy=False)

    def arrow(self, values: NDArray[Any]) -> Any:
        """A chunk for pyarrow: text as a list of str (an arrow string array, never
        fixed-width), numbers as the column's dtype."""
        if self.text:
            return [None if v is None else str(v) for v in values.tolist()]
        return self.cast(values)


class _Stats:
    """What pass 1 learns: rows, versions, widths and every column's type."""

    def __init__(self) -> None:
        self.rows = 0
        self.width: int | None = None
        self.versions: set[int] = set()
        self.x = _Kind(float_numbers=True)  # the typed blocks' dtype; whether any is objects
        self.object_columns: list[_Kind] = []  # per feature, over the object blocks only
        self.y: _Kind | None = None
        self.g: _Kind | None = None
        self.id_chars = 1
        self.ids_cut = 0

    def add(self, block: _Block) -> None:
        self.rows += block.n
        self.width = block.x.shape[1]
        self.versions.add(block.version)
        if block.x.dtype == object:  # text among the features: each column's values count
            self.x.objects = True
            if not self.object_columns:
                self.object_columns = [_Kind(float_numbers=True) for _ in range(self.width)]
            for j, kind in enumerate(self.object_columns):
                kind.add(block.x[:, j])
        else:
            self.x.add(block.x)
        if block.y is not None:
            self.y = self.y or _Kind()
            self.y.add(block.y)
        if block.g is not None:
            self.g = self.g or _Kind()
            self.g.add(block.g)
        self.id_chars = max(self.id_chars, min(len(block.rid), MAX_NPZ_ID_CHARS))
        if len(block.rid) > MAX_NPZ_ID_CHARS:
            self.ids_cut += block.n

    @property
    def columns(self) -> list[_Kind]:
        """Each feature column's type: the typed blocks' dtype, with what the object blocks
        held in that column."""
        out = []
        for j in range(self.width or 0):
            kind = _Kind(float_numbers=True)
            kind.dtype, kind.chars = self.x.dtype, self.x.chars
            if self.object_columns:
                seen = self.object_columns[j]
                kind.objects, kind.all_int, kind.all_num = True, seen.all_int, seen.all_num
                kind.chars = max(kind.chars, seen.chars)
            out.append(kind)
        return out


class _Writer(abc.ABC):
    """An export's output file, written a chunk of rows at a time (.npz or .parquet)."""

    chunk_rows = CHUNK_ROWS

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def write(self, chunk: list[_Block], perm: list[int] | None) -> None:
        """Append one chunk's rows (in ``perm`` order when given)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Complete the file once every chunk is written."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the writer holds (after ``finish``, or instead of it on failure)."""


def _stacked(chunk: list[_Block], x_kind: _Kind | None) -> dict[str, NDArray[Any]]:
    """A chunk's per-row columns. The feature rows: each request's cast to ``x_kind``'s
    dtype (.npz), or, with text among them, as objects (.parquet): never concatenated as
    fixed-width text of the chunk's longest value."""
    xs = [b.x for b in chunk]
    if x_kind is not None:
        xs = [x_kind.cast(x) for x in xs]
    elif any(x.dtype == object or x.dtype.kind in "US" for x in xs):
        xs = [x.astype(object) for x in xs]
    counts = [b.n for b in chunk]
    return {
        "X": np.concatenate(xs),
        "row": np.concatenate([b.rows for b in chunk]),
        "timestamp": np.repeat(np.array([b.unix for b in chunk], dtype=np.float64), counts),
        "version": np.repeat(np.array([b.version for b in chunk], dtype=np.int64), counts),
    }


class _NpzWriter(_Writer):
    """``.npz`` written column by column: each column's ``.npy`` (header first, its shape
    known from pass 1) is filled a chunk at a time in a temporary directory beside ``out``,
    then deflated into the archive (as ``np.savez_compressed``) and renamed into place."""

    def __init__(self, out: Path, names: list[str], stats: _Stats) -> None:
        self.out = out
        self.stats = stats
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        rows = stats.rows
        width = stats.width or 0
        self.dtypes: dict[str, np.dtype[Any]] = {
            "X": stats.x.final(),
            "request_id": np.dtype(f"<U{stats.id_chars}"),
            "row": np.dtype(np.int64),
            "timestamp": np.dtype(np.float64),
            "version": np.dtype(np.int64),
        }
        shapes: dict[str, tuple[int, ...]] = {
            "X": (rows, width),
            "request_id": (rows,),
            "row": (rows,),
            "timestamp": (rows,),
            "version": (rows,),
        }
        if stats.y is not None:
            self.dtypes["y"], shapes["y"] = stats.y.final(), (rows,)
        if stats.g is not None:
            self.dtypes["group"], shapes["group"] = stats.g.final(), (rows,)
        row_bytes = sum(d.itemsize * (width if k == "X" else 1) for k, d in self.dtypes.items())
        self.chunk_rows = max(1, min(CHUNK_ROWS, CHUNK_BYTES // max(1, row_bytes)))
        self.files: dict[str, Any] = {}
        self.order = ["X", "feature_names", "request_id", "row", "timestamp", "version"]
        self.order += [k for k in ("y", "group") if k in self.dtypes]
        np.save(self.tmpdir / "feature_names.npy", np.array(names, dtype=str))
        for key, dtype in self.dtypes.items():
            fh = (self.tmpdir / f"{key}.npy").open("wb")
            self.files[key] = fh
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": shapes[key],
            }
            np.lib.format.write_array_header_2_0(fh, header)

    def write(self, chunk: list[_Block], perm: list[int] | None) -> None:
        stats = self.stats
        cols = _stacked(chunk, stats.x)
        ids = [b.rid[:MAX_NPZ_ID_CHARS] for b in chunk for _ in range(b.n)]
        cols["request_id"] = np.array(ids, dtype=self.dtypes["request_id"])
        if stats.y is not None:
            cols["y"] = stats.y.cast(np.concatenate([b.y for b in chunk if b.y is not None]))
        if stats.g is not None:
            cols["group"] = stats.g.cast(np.concatenate([b.g for b in chunk if b.g is not None]))
        for key, fh in self.files.items():
            data = np.ascontiguousarray(cols[key], dtype=self.dtypes[key])
            fh.write(data.tobytes())

    def finish(self) -> None:
        for fh in self.files.values():
            fh.close()
        tmp = self.out.with_name(f".{self.out.name}.tmp.npz")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
                for key in self.order:
                    zf.write(self.tmpdir / f"{key}.npy", arcname=f"{key}.npy")
            os.replace(tmp, self.out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class _ParquetWriter(_Writer):
    """``.parquet`` written one row group per chunk; text columns are arrow strings."""

    def __init__(self, out: Path, names: list[str], stats: _Stats, perm: list[int] | None) -> None:
        try:
            self.pa = importlib.import_module("pyarrow")
            pq = importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise ValueError(f"writing {out.name} needs pyarrow: pip install pyarrow") from None
        pa = self.pa
        self.out = out
        self.stats = stats
        columns = stats.columns if perm is None else [stats.columns[j] for j in perm]
        self.kinds = dict(zip(names, columns, strict=True))
        self.names = names
        fields_ = [(n, self._type(k)) for n, k in self.kinds.items()]
        if stats.y is not None:
            fields_.append(("y", self._type(stats.y)))
        if stats.g is not None:
            fields_.append(("group", self._type(stats.g)))
        fields_ += [
            ("request_id", pa.string()),
            ("row", pa.int64()),
            ("timestamp", pa.float64()),
            ("version", pa.int64()),
        ]
        meta = {
            b"mlserve": orjson.dumps(
                {"feature_names": names, "label": "y" if stats.y is not None else None}
            )
        }
        self.schema = pa.schema(fields_, metadata=meta)
        self.tmp = out.with_name(f".{out.name}.tmp")
        # Ids are unique and may be long: no dictionary, no min/max statistics for them.
        others = [n for n in self.schema.names if n != "request_id"]
        self.writer = pq.ParquetWriter(
            self.tmp, self.schema, use_dictionary=others, write_statistics=others
        )

    def _type(self, kind: _Kind) -> Any:
        if kind.text:
            return self.pa.string()
        return self.pa.from_numpy_dtype(kind.final())

    def write(self, chunk: list[_Block], perm: list[int] | None) -> None:
        cols = _stacked(chunk, None)
        X = cols["X"] if perm is None else cols["X"][:, perm]
        stats = self.stats
        data: dict[str, Any] = {
            n: kind.arrow(X[:, j]) for j, (n, kind) in enumerate(self.kinds.items())
        }
        if stats.y is not None:
            data["y"] = stats.y.arrow(np.concatenate([b.y for b in chunk if b.y is not None]))
        if stats.g is not None:
            data["group"] = stats.g.arrow(np.concatenate([b.g for b in chunk if b.g is not None]))
        data["request_id"] = [b.rid for b in chunk for _ in range(b.n)]
        data["row"] = cols["row"]
        data["timestamp"] = cols["timestamp"]
        data["version"] = cols["version"]
        self.writer.write_table(self.pa.table(data, schema=self.schema))

    def finish(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.out)

    def close(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _bound(option: str, value: float | str | datetime | None) -> float | None:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


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
