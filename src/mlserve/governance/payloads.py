"""Payload logging: sampled request/response records, queued off the request path and
written as JSON lines by one writer thread per process (``PayloadSink``, ``PayloadLogger``),
each record cut to fit its file's bound. The record format and its caps are in
docs/file-formats.md; ``payload_export`` turns the logs into evaluation sets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from random import random
from typing import Any, NamedTuple, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from ..config import PayloadConfig
from ..errors import ConfigError, InferenceFailed, InvalidInput, MLServeError
from ..monitoring.snapshot import PayloadSection, PayloadState
from ..runtime.tensors import encode_json

__all__ = [
    "FILE_GLOB",
    "REDACTED",
    "TRUNCATED",
    "PayloadLogger",
    "PayloadSink",
    "ServedRequest",
]

log = logging.getLogger("mlserve.payloads")

REDACTED = "[redacted]"
OMITTED = "[omitted]"
TRUNCATED = "[truncated]"  # a field cut so that its record fits max_bytes
FILE_GLOB = "payloads-*.jsonl"
# A failed request's raw tensors (as its document held them) with more values than this, all
# together, are logged without their data: their values are Python lists, serialised holding
# the GIL, and would stall the event loop. Strings in them count against MAX_FAILED_CHARS.
MAX_FAILED_VALUES = 65_536
MAX_FAILED_CHARS = 1 << 20
MAX_RAW_CHARS = 256  # a string of a raw field (datatype, a data value, id) is cut here
MAX_NAME_CHARS = 64  # the name of a tensor that is no input of the model is cut here
MAX_RAW_DIMS = 32  # a longer raw shape is "[omitted]"
MAX_RAW_TENSORS = 64  # raw tensors written per failed request; the rest are counted
MAX_PARAMETER_BYTES = 4096  # request parameters serialising to more are "[omitted]"
MAX_ERROR_CHARS = 1024  # the logged error text is cut here
WITHHELD = "the model rejected the input (message withheld: the request carries redacted inputs)"
_CHUNK_VALUES = 65_536  # a large array is serialised in pieces of this many values
# The writer wakes this often, takes everything queued and writes it: the request path
# never wakes a thread (a wake-up per record costs the event loop a GIL hand-over).
POLL_SECONDS = 0.1
# Tensor bytes that may wait in the queue whatever its length (large batches, slow disk).
MAX_QUEUED_BYTES = 256 * 1024 * 1024
_WRITE_BYTES = 1 << 20  # write pending lines once they reach this many bytes
_YIELD_EVERY = 32  # records serialised between GIL hand-overs to the event loop
_DUMPS = orjson.OPT_SERIALIZE_NUMPY


# ----------------------------------------------------------------------------------------------
# the request path's side


@dataclass(eq=False)
class PayloadCounts:
    """One model's payload counters. ``dropped`` is written by the event loop only; the
    others by the writer thread only: no counter has two writers."""

    logged: int = 0
    dropped: int = 0
    errors: int = 0
    bytes: int = 0

    def state(self) -> dict[str, int]:
        return {
            "logged": self.logged,
            "dropped": self.dropped,
            "errors": self.errors,
            "bytes": self.bytes,
        }


class ServedRequest(Protocol):
    """What a successful request's record is drawn from: the payload log's own view of a
    served request (the serving layer's ``InferResult`` is one; the log sits below it)."""

    @property
    def body(self) -> Mapping[str, Any]: ...  # the response document (its ``id``)
    @property
    def role(self) -> str: ...
    @property
    def request(self) -> Any: ...  # the request document (its ``parameters``)
    @property
    def feeds(self) -> dict[str, np.ndarray]: ...
    @property
    def names(self) -> Sequence[str]: ...  # the output names, in ``outputs``' order
    @property
    def outputs(self) -> Sequence[np.ndarray]: ...
    @property
    def queue_s(self) -> float: ...
    @property
    def infer_s(self) -> float: ...


class _Served(NamedTuple):
    role: str
    id: Any
    parameters: Any
    feeds: dict[str, np.ndarray] | None
    names: Sequence[str]
    outputs: Sequence[np.ndarray] | None
    queue_s: float
    infer_s: float


@dataclass(eq=False, slots=True)
class _Failed:
    role: str
    status: int
    code: str
    message: str
    request: Any  # the parsed request document, or None
    feeds: dict[str, np.ndarray] | None  # decoded inputs, when the failure came after them


@dataclass(eq=False)
class PayloadSink:
    """One loaded version's payload settings, built at load (``PayloadLogger.sink``)."""

    logger: PayloadLogger
    model: str
    version: str
    sample: float
    error_sample: float
    inputs: bool
    outputs: bool
    parameters: bool
    redact: frozenset[str]
    counts: PayloadCounts
    # The model's input names (None: unknown, then no raw tensor data of a failure is written).
    input_names: frozenset[str] | None = None
    # Whether an error raised by onnxruntime has its text withheld (a redacted input).
    withhold: bool = False

    def success(self, result: ServedRequest, total_s: float) -> None:
        """Offer a successful request (after its answer was sent), sampled."""
        sample = self.sample
        if sample < 1.0 and (sample <= 0.0 or random() >= sample):
            return
        if len(self.logger._queue) >= self.logger.max_queue:  # full: drop before building
            self.counts.dropped += 1
            return
        # Only what the record needs: holding the whole result (the request document's
        # Python floats, the response body) until the writer runs costs the collector.
        feeds = result.feeds if self.inputs else None
        outputs = result.outputs if self.outputs else None
        params = None
        if self.parameters and isinstance(result.request, dict):
            params = result.request.get("parameters")
        size = 0
        if feeds is not None:
            size += sum(a.nbytes for a in feeds.values())
        if outputs is not None:
            size += sum(a.nbytes for a in outputs)
        rid = result.body.get("id")
        if isinstance(rid, str):  # a long id waits in the queue too
            size += len(rid)
        served = _Served(
            result.role,
            rid,
            params,
            feeds,
            result.names,
            outputs,
            result.queue_s,
            result.infer_s,
        )
        self.logger.offer((time.time(), self, served, total_s, size), self.counts)

    def failure(
        self,
        role: str,
        exc: MLServeError,
        request: Any = None,
        feeds: dict[str, np.ndarray] | None = None,
        body_bytes: int | None = None,
    ) -> None:
        """Offer a failed request, sampled at ``error_sample``.

        ``body_bytes`` is the length of the request's body: the queued record holds the parsed
        document until the writer caps it, so it counts against ``MAX_QUEUED_BYTES`` (without
        it, the document's serialised length is used).
        """
        sample = self.error_sample
        if sample < 1.0 and (sample <= 0.0 or random() >= sample):
            return
        message = exc.message
        if self.withhold and (
            isinstance(exc, InferenceFailed)
            or (isinstance(exc, InvalidInput) and exc.reason == "runtime")
        ):
            message = WITHHELD  # onnxruntime's text may quote input values
        elif len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "…"
        failed = _Failed(role, exc.status_code, exc.code, message, request, feeds)
        size = 0 if feeds is None else sum(a.nbytes for a in feeds.values())
        if request is not None:
            size += body_bytes if body_bytes is not None else _document_bytes(request)
        self.logger.offer((time.time(), self, failed, None, size), self.counts)


class PayloadLogger:
    """The bounded queue, the writer thread and this process's rotating files."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 10,
        max_queue: int = 10_000,
    ) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"payload_dir {self.directory}: {exc}") from exc
        self.max_queue = max_queue
        self._files = _Files(self.directory, max_bytes, backups)
        self._queue: deque[tuple[Any, ...]] = deque()  # append / popleft are thread-safe
        # Tensor bytes queued and taken: one writer each (event loop, writer thread).
        self._bytes_in = 0
        self._bytes_out = 0
        self._wake = threading.Event()
        self._stopping = False
        self._counts: dict[str, PayloadCounts] = {}
        self._placeholder = uuid.uuid4().hex
        self._warned_at = -1e9
        self._second = -1
        self._second_text = ""
        self._thread = threading.Thread(target=self._run, name="mlserve-payloads", daemon=True)
        self._thread.start()

    def sink(
        self,
        model: str,
        version: int | str,
        config: PayloadConfig,
        inputs: Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> PayloadSink | None:
        """The request path's view of ``config`` for one version; None when it logs nothing.

        ``inputs`` and ``outputs`` are the model's tensor names: a failed request's raw data
        is written only for its inputs, and a ``redact`` name that is neither is warned about
        (once per version: this runs at load). Without ``inputs``, no raw data is written.
        """
        if config.sample <= 0 and config.error_sample <= 0:
            return None
        redact = frozenset(config.redact)
        input_names = None if inputs is None else frozenset(inputs)
        if input_names is not None and outputs is not None:
            stray = sorted(redact - input_names - frozenset(outputs))
            if stray:
                log.warning(
                    "%s version %s: [payloads] redact names %s, which the model has neither "
                    "as an input nor as an output (inputs %s, outputs %s): check the spelling",
                    model,
                    version,
                    stray,
                    sorted(input_names),
                    list(outputs),
                )
        # Unknown inputs: withhold whenever anything is redacted (the safe side).
        withhold = bool(redact & input_names) if input_names is not None else bool(redact)
        counts = self._counts.setdefault(model, PayloadCounts())
        return PayloadSink(
            self,
            model,
            str(version),
            config.sample,
            config.error_sample,
            "inputs" in config.fields,
            "outputs" in config.fields,
            "parameters" in config.fields,
            redact,
            counts,
            input_names,
            withhold,
        )

    def offer(self, item: tuple[Any, ...], counts: PayloadCounts) -> None:
        """Queue ``(unix, sink, payload, total_s, tensor_bytes)``; when the queue is full (in
        records or bytes), drop it and count it. Never blocks, never wakes the writer.

        Only the event loop offers, so the queue cannot grow between the check and the append.
        """
        size = item[4]
        if (
            len(self._queue) >= self.max_queue
            or self._bytes_in - self._bytes_out + size > MAX_QUEUED_BYTES
        ):
            counts.dropped += 1
            return
        self._bytes_in += size
        self._queue.append(item)

    def state(self) -> dict[str, Any]:
        """Counters per model as plain data (the benchmarks read them)."""
        return {"payloads": {m: c.state() for m, c in list(self._counts.items())}}

    def snapshot_section(self) -> PayloadSection:
        """Counters per model, for the monitoring snapshot (merged by addition)."""
        return PayloadSection(
            {
                m: PayloadState(c.logged, c.dropped, c.errors, c.bytes)
                for m, c in list(self._counts.items())
            }
        )

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued so far, then stop the writer."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        queued = self._queue
        while True:
            stopping = self._stopping  # read before draining: nothing offered before close is lost
            pending: list[tuple[bytes, PayloadCounts]] = []
            size = taken = 0
            while queued:
                item = queued.popleft()
                self._bytes_out += item[4]
                counts = item[1].counts
                try:
                    line = self._line(*item[:4])
                except Exception as exc:  # an unserialisable value: count it, keep going
                    counts.errors += 1
                    self._warn("could not serialise a payload record of %s: %s", item[1].model, exc)
                else:
                    pending.append((line, counts))
                    size += len(line)
                if size >= _WRITE_BYTES:
                    self._write(pending)
                    pending, size = [], 0
                taken += 1
                if taken % _YIELD_EVERY == 0:
                    time.sleep(0)  # hand the GIL to the event loop if it is waiting
            if pending:
                self._write(pending)
            if stopping:
                break
            self._wake.wait(POLL_SECONDS)
        self._files.close()

    def _write(self, lines: list[tuple[bytes, PayloadCounts]]) -> None:
        try:
            self._files.write([line for line, _ in lines])
        except OSError as exc:
            for _, counts in lines:
                counts.errors += 1
            self._warn("could not write payload records to %s: %s", self.directory, exc)
            return
        for line, counts in lines:
            counts.logged += 1
            counts.bytes += len(line)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60.0:  # at most once a minute: errors come in floods
            self._warned_at = now
            log.warning(message, *args)

    def _line(self, unix: float, sink: PayloadSink, payload: Any, total_s: float | None) -> bytes:
        second = int(unix)
        if second != self._second:  # strftime once a second, not once a record
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        doc: dict[str, Any] = {
            "timestamp": f"{self._second_text}.{int((unix - second) * 1000):03d}Z",
            "unix": unix,
            "model": sink.model,
            "version": sink.version,
        }
        big: list[NDArray[Any]] = []  # arrays serialised in pieces, spliced in at the end
        if isinstance(payload, _Failed):
            request = payload.request
            doc["role"] = payload.role
            doc["id"] = _request_id(request)
            doc["status"] = payload.status
            doc["code"] = payload.code
            doc["error"] = payload.message
            params = request.get("parameters") if isinstance(request, dict) else None
            if sink.parameters and params is not None:
                doc["parameters"] = _capped_parameters(params)
            if sink.inputs:
                if payload.feeds is not None:
                    doc["inputs"] = [
                        self._tensor(sink, n, a, big) for n, a in payload.feeds.items()
                    ]
                elif isinstance(request, dict) and isinstance(request.get("inputs"), list):
                    raw = request["inputs"]
                    budget = _Budget()
                    doc["inputs"] = [_raw_tensor(sink, t, budget) for t in raw[:MAX_RAW_TENSORS]]
                    if len(raw) > MAX_RAW_TENSORS:
                        doc["inputs_omitted"] = len(raw) - MAX_RAW_TENSORS
        else:
            served: _Served = payload
            doc["role"] = served.role
            doc["id"] = served.id
            doc["status"] = 200
            doc["timing_ms"] = {  # to the microsecond (round() costs more than the rest)
                "queue": int(served.queue_s * 1e6) / 1e3,
                "infer": int(served.infer_s * 1e6) / 1e3,
                "total": int((total_s or 0.0) * 1e6) / 1e3,
            }
            if served.parameters is not None:
                doc["parameters"] = _capped_parameters(served.parameters)
            if served.feeds is not None:
                doc["inputs"] = [self._tensor(sink, n, a, big) for n, a in served.feeds.items()]
            if served.outputs is not None:
                doc["outputs"] = [
                    self._tensor(sink, n, a, big)
                    for n, a in zip(served.names, served.outputs, strict=True)
                ]
        pieces = [_chunked(array) for array in big]
        line = self._render(doc, pieces)
        limit = self._files.max_bytes
        return line if len(line) <= limit else self._fit(doc, pieces, limit, len(line))

    def _render(self, doc: dict[str, Any], pieces: list[bytes]) -> bytes:
        line = orjson.dumps(doc, option=_DUMPS | orjson.OPT_APPEND_NEWLINE, default=_default)
        for i, piece in enumerate(pieces):
            line = line.replace(f'"{self._placeholder}-{i}"'.encode(), piece, 1)
        return line

    def _fit(self, doc: dict[str, Any], pieces: list[bytes], limit: int, size: int) -> bytes:
        """A record longer than ``limit`` (the files' ``max_bytes``) cut until it fits: the
        id to ``MAX_RAW_CHARS``, then the data of the largest tensors, then whole sections,
        each cut field named in ``"truncated"``. Raises ``ValueError`` when even the bare
        record (model, version, status, timings) does not fit."""
        cut: list[str] = []
        doc["truncated"] = cut  # rendered with the record: its length counts
        rid = doc.get("id")
        if isinstance(rid, str) and len(rid) > MAX_RAW_CHARS:
            doc["id"] = rid[:MAX_RAW_CHARS] + "…"
            cut.append("id")
            line = self._render(doc, pieces)
            if len(line) <= limit:
                return line
            size = len(line)
        # The tensors' data, largest first, until the estimate fits (then checked).
        sized: list[tuple[int, str, dict[str, Any]]] = []
        for section in ("inputs", "outputs"):
            tensors = doc.get(section)
            for i, t in enumerate(tensors if isinstance(tensors, list) else ()):
                if not isinstance(t, dict) or "data" not in t:
                    continue
                data = t["data"]
                if isinstance(data, str) and data.startswith(self._placeholder):
                    n = len(pieces[int(data.rsplit("-", 1)[1])])
                elif isinstance(data, str):
                    continue  # already a marker ([redacted], [omitted])
                else:
                    n = len(orjson.dumps(data, option=_DUMPS, default=_default))
                name = t.get("name")
                field = f"{section}.{name if isinstance(name, str) else i}"
                sized.append((n, field[: MAX_NAME_CHARS + 8], t))
        sized.sort(key=lambda item: -item[0])
        for n, field, t in sized:
            if size <= limit:
                break
            t["data"] = TRUNCATED
            cut.append(field)
            size -= n - len(TRUNCATED) - 2 - len(field) - 3
        line = self._render(doc, pieces)
        if len(line) <= limit:
            return line
        # Last: whole sections, and the error text.
        for key in ("inputs", "outputs", "parameters", "inputs_omitted"):
            if key in doc:
                doc[key] = TRUNCATED
                cut.append(key)
        if isinstance(doc.get("error"), str) and len(doc["error"]) > MAX_RAW_CHARS:
            doc["error"] = doc["error"][:MAX_RAW_CHARS] + "…"
            cut.append("error")
        line = self._render(doc, [])
        if len(line) > limit:
            raise ValueError(
                f"the record does not fit max_bytes ({limit}) even cut to {len(line)} bytes"
            )
        return line

    def _tensor(
        self, sink: PayloadSink, name: str, array: np.ndarray, big: list[NDArray[Any]]
    ) -> dict[str, Any]:
        if name in sink.redact:
            tensor = encode_json(name, array, with_data=False)
            tensor["data"] = REDACTED
            return tensor
        if array.size <= _CHUNK_VALUES or array.dtype == object:
            return encode_json(name, array)
        # One orjson call per piece: the request path can take the GIL between pieces.
        tensor = encode_json(name, array, with_data=False)
        tensor["data"] = f"{self._placeholder}-{len(big)}"
        big.append(array.ravel())
        return tensor


def _chunked(flat: NDArray[Any]) -> bytes:
    parts = [
        orjson.dumps(flat[i : i + _CHUNK_VALUES], option=_DUMPS, default=_default)[1:-1]
        for i in range(0, flat.size, _CHUNK_VALUES)
    ]
    return b"[" + b",".join(parts) + b"]"


def _request_id(request: Any) -> Any:
    rid = request.get("id") if isinstance(request, dict) else None
    return _capped_scalar(rid) if isinstance(rid, str) else None


def _document_bytes(request: Any) -> int:
    """The serialised length of a request document (when the caller did not give it)."""
    try:
        return len(orjson.dumps(request, option=_DUMPS, default=_default))
    except (TypeError, orjson.JSONEncodeError):
        return 0


@dataclass(slots=True)
class _Budget:
    """What the raw tensors of one failed record may still write, all together."""

    values: int = MAX_FAILED_VALUES
    chars: int = MAX_FAILED_CHARS


_NUMBERS = frozenset((float, int, bool, type(None)))


def _capped_scalar(value: Any) -> Any:
    """A JSON leaf as logged: numbers, booleans and null as they are, strings cut at
    ``MAX_RAW_CHARS``, anything else (an object) ``"[omitted]"``."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_RAW_CHARS else value[:MAX_RAW_CHARS] + "…"
    return OMITTED


def _raw_tensor(sink: PayloadSink, tensor: Any, budget: _Budget) -> Any:
    """An input of a failed request as its document held it (redacted, size-capped).

    Its data is written only when its name is an input of the model that is not redacted: a
    sensitive tensor sent under a wrong name (``"x"``, ``"X "``) or a non-string name is
    ``"[omitted]"``, never written in clear.
    """
    if not isinstance(tensor, dict):
        return None
    name = tensor.get("name")
    known = isinstance(name, str) and sink.input_names is not None and name in sink.input_names
    if known or name is None:
        shown = name
    elif isinstance(name, str):
        shown = name[:MAX_NAME_CHARS]
    else:
        shown = OMITTED
    shape = tensor.get("shape")
    if isinstance(shape, list):
        shape = [_capped_scalar(d) for d in shape] if len(shape) <= MAX_RAW_DIMS else OMITTED
    else:
        shape = _capped_scalar(shape)
    out = {"name": shown, "datatype": _capped_scalar(tensor.get("datatype")), "shape": shape}
    if "data" in tensor:
        if not known:
            out["data"] = OMITTED
        elif name in sink.redact:
            out["data"] = REDACTED
        else:
            out["data"] = _capped_data(tensor["data"], budget)
    return out


def _capped_data(data: Any, budget: _Budget) -> Any:
    """A copy of raw (nested) list data with long strings cut, objects omitted; ``"[omitted]"``
    when it is no list or would overrun the record's budget (then nothing is taken from it)."""
    if not isinstance(data, list):
        return OMITTED
    values, chars = budget.values, budget.chars
    root: list[Any] = []
    stack: list[tuple[list[Any], list[Any]]] = [(data, root)]
    while stack:
        source, target = stack.pop()
        values -= len(source)  # every item counts, nested lists too (``[[], [], …]``)
        if values < 0:
            return OMITTED
        for item in source:
            if item.__class__ in _NUMBERS:  # the common case, without a call
                target.append(item)
                continue
            if isinstance(item, list):
                nested: list[Any] = []
                target.append(nested)
                stack.append((item, nested))
                continue
            item = _capped_scalar(item)
            if isinstance(item, str):
                chars -= len(item)
                if chars < 0:
                    return OMITTED
            target.append(item)
    budget.values, budget.chars = values, chars
    return root


def _capped_parameters(params: Any) -> Any:
    """Request parameters as logged: as they are when they serialise to at most
    ``MAX_PARAMETER_BYTES``, else ``"[omitted]"`` (the walk stops as soon as they are over)."""
    left = MAX_PARAMETER_BYTES  # a lower bound of the serialised length, counted down
    stack = [params]
    while stack:
        value = stack.pop()
        left -= 1
        if isinstance(value, str):
            left -= len(value)
        elif isinstance(value, (dict, list)):
            left -= len(value)  # each item takes a byte or more: bounds the loops below
            if left < 0:
                return OMITTED
            if isinstance(value, dict):
                for key, item in value.items():
                    left -= len(key) if isinstance(key, str) else 1
                    stack.append(item)
            else:
                stack.extend(value)
        if left < 0:
            return OMITTED
    try:  # small now: at most a few thousand items
        size = len(orjson.dumps(params, option=_DUMPS, default=_default))
    except (TypeError, orjson.JSONEncodeError):
        return OMITTED
    return params if size <= MAX_PARAMETER_BYTES else OMITTED


def _default(obj: Any) -> Any:
    """What orjson cannot write natively: non-contiguous or object arrays, bytes, scalars."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to a payload record")


class _Files:
    """This process's payload files: ``payloads-<host>-<pid>-<seq>.jsonl``, rotated by size."""

    def __init__(self, directory: Path, max_bytes: int, backups: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.backups = backups
        host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"
        self.prefix = f"payloads-{host}-{os.getpid()}-"
        # A restarted process with the same host and pid (containers) carries on numbering
        # after the files it finds, and counts them against its backups.
        found = sorted(
            (int(m.group(1)), p)
            for p in directory.glob(self.prefix + "*.jsonl")
            if (m := re.fullmatch(re.escape(self.prefix) + r"(\d+)\.jsonl", p.name))
        )
        self.files: deque[Path] = deque(p for _, p in found)
        self.seq = found[-1][0] + 1 if found else 0
        self.fd: int | None = None
        self.size = 0

    def write(self, lines: list[bytes]) -> None:
        batch: list[bytes] = []
        batch_size = 0
        for line in lines:
            if self.fd is None or (
                self.size + batch_size and self.size + batch_size + len(line) > self.max_bytes
            ):
                self._put(batch)
                batch, batch_size = [], 0
                self._rotate()
            batch.append(line)
            batch_size += len(line)
        self._put(batch)

    def _put(self, batch: list[bytes]) -> None:
        if not batch or self.fd is None:
            return
        data = memoryview(b"".join(batch))
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
                self.size += written
        except OSError:
            self._close_fd()  # a torn line ends that file: the next write starts a new one
            raise

    def _rotate(self) -> None:
        self._close_fd()
        path = self.directory / f"{self.prefix}{self.seq:06d}.jsonl"
        self.seq += 1
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.files.append(path)
        while len(self.files) > self.backups + 1:
            with contextlib.suppress(FileNotFoundError):
                self.files.popleft().unlink()

    def _close_fd(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def close(self) -> None:
        self._close_fd()
