"""A Python client for people: predictions from numpy arrays, dicts of columns or DataFrames.

``Client(url).predict(model, data)`` speaks the Open Inference Protocol (KServe V2 REST) to
mlserve (``pip install 'mlserve[client]'`` for httpx): named columns go as one input each,
arrays as the model's own inputs; rows travel in chunks, large or NaN-holding ones with the
binary tensor extension; a DataFrame comes back as a DataFrame (``output_columns``).
``score_file`` is the library behind ``mlserve predict``. The conventions are in
docs/api.md, "Python client and batch scoring".

Errors::

    ClientError               the base; data this client cannot send is a ValueError
    ├── ServerError           the server answered an error: status_code, code, message
    └── TransportError        no answer: connection refused, timeout, a malformed response
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import orjson

from .errors import InvalidInput
from .runtime.binary import binary_size, decode_binary, encode_binary
from .runtime.columns import cast_column, datatype_of
from .runtime.tensors import V2_TO_NUMPY, InputLimits, TensorSpec, encode_json

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BINARY_THRESHOLD",
    "DEFAULT_BATCH_ROWS",
    "Client",
    "ClientError",
    "ServerError",
    "TransportError",
    "output_columns",
    "score_file",
    "write_outputs",
]

DEFAULT_BATCH_ROWS = 1000
BINARY_THRESHOLD = 1000  # values per request above which tensors travel binary
_HEADER_LENGTH = "inference-header-content-length"
_ROUTING_KEY = "mlserve-routing-key"
# Response tensors are decoded with the server's own codec, without request limits.
_NO_LIMITS = InputLimits(max_elements=1 << 62, max_rows=1 << 62, allow_nan=True)

Progress = Callable[[int, int], None]


class ClientError(Exception):
    """Base of the errors of ``mlserve.client``."""


class ServerError(ClientError):
    """The server answered with an error status: ``status_code``, its ``code`` and message."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


class TransportError(ClientError):
    """No usable answer: the connection failed or timed out, or the response was malformed."""


def _httpx() -> Any:
    try:
        return importlib.import_module("httpx")
    except ImportError:
        raise ImportError("mlserve.client needs httpx: pip install 'mlserve[client]'") from None


def _is_frame(data: object) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is already imported
    return pandas is not None and isinstance(data, pandas.DataFrame)


class Client:
    """A connection to one mlserve server; use as a context manager or ``close()`` it.

    ``headers`` go with every request (e.g. ``Authorization``); ``batch_rows`` and
    ``binary_threshold`` are the defaults of ``predict`` (see the module doc).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        binary_threshold: int = BINARY_THRESHOLD,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        self.url = url.rstrip("/")
        self.batch_rows = batch_rows
        self.binary_threshold = binary_threshold
        self._httpx = _httpx()
        self._http: httpx.Client = self._httpx.Client(
            base_url=self.url, timeout=timeout, headers=dict(headers or {})
        )
        # (model, version) → the model's inputs from its metadata, asked once.
        self._inputs: dict[tuple[str, int | None], list[TensorSpec]] = {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ plain calls
    def ready(self, model: str | None = None, version: int | None = None) -> bool:
        """Whether the server (or the model, or one version) is ready; unknown → ServerError."""
        path = "/v2/health/ready" if model is None else _model_path(model, version) + "/ready"
        response = self._send("GET", path)
        if response.status_code == 503:  # not ready yet (loading, or no ready version)
            return False
        _raise_for_status(response)
        return True

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """The model's (or version's) V2 metadata: inputs, outputs, versions, parameters."""
        response = self._send("GET", _model_path(model, version))
        _raise_for_status(response)
        doc = _json(response.content)
        if not isinstance(doc, dict):
            raise TransportError("the metadata response is not a JSON object")
        return doc

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        model: str,
        data: Any,
        *,
        version: int | None = None,
        routing_key: str | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool | None = None,
        batch_rows: int | None = None,
        progress: Progress | None = None,
    ) -> Any:
        """The model's outputs on ``data`` (see the module doc for what ``data`` may be).

        Returns a dict of output name → numpy array, or a DataFrame when ``data`` is one.
        ``outputs`` picks outputs by name (default all); ``progress(done, total)`` is called
        after each chunk with the rows answered so far. Raises ``ServerError`` with the
        server's status and code, ``TransportError``, or ``ValueError`` for data that cannot
        be sent.
        """
        rows = batch_rows or self.batch_rows
        if rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {rows}")
        frame = _is_frame(data)
        tensors, named, chunked = self._tensors(model, version, data, frame)
        n = next(iter(tensors.values())).shape[0] if chunked else 0
        step = rows if chunked else 1
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, max(n, 1), step):
            chunk = {k: v[start : start + step] for k, v in tensors.items()} if chunked else tensors
            parts.append(self._infer(model, version, chunk, named, routing_key, outputs, binary))
            if progress is not None:
                progress(min(start + step, n), n)
        result = _concatenate(parts)
        if not frame:
            return result
        pandas = importlib.import_module("pandas")
        return pandas.DataFrame(output_columns(result), index=data.index)

    def _tensors(
        self, model: str, version: int | None, data: Any, frame: bool
    ) -> tuple[dict[str, np.ndarray], bool, bool]:
        """The tensors to send, whether they are named columns, and whether to chunk them."""
        if frame:
            columns = {str(c): data[c].to_numpy() for c in data.columns}
            return _named_columns(columns), True, True
        specs = None
        if isinstance(data, Mapping):
            specs = self._model_inputs(model, version)
            if not set(data) <= {s.name for s in specs} or not data:
                return _named_columns({str(k): v for k, v in data.items()}), True, True
            missing = sorted({s.name for s in specs} - set(data))
            if missing:
                raise ValueError(f"model {model!r} also needs input(s) {missing}")
            given = {s.name: np.asarray(data[s.name]) for s in specs}
        else:
            specs = self._model_inputs(model, version)
            if len(specs) != 1:
                names = [s.name for s in specs]
                raise ValueError(
                    f"model {model!r} has {len(specs)} inputs {names}: pass a dict of them"
                )
            given = {specs[0].name: np.asarray(data)}
        tensors = {s.name: _own_input(s, given[s.name]) for s in specs}
        # Rows are chunked when every input has a free first dimension of the same length.
        lengths = {t.shape[0] if t.ndim else -1 for t in tensors.values()}
        chunked = all(s.shape and s.shape[0] == -1 for s in specs) and len(lengths) == 1
        return tensors, False, chunked

    def _model_inputs(self, model: str, version: int | None) -> list[TensorSpec]:
        key = (model, version)
        if key not in self._inputs:
            try:
                specs = [
                    TensorSpec(
                        str(i["name"]), str(i["datatype"]), tuple(int(d) for d in i["shape"])
                    )
                    for i in self.metadata(model, version)["inputs"]
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise TransportError(f"malformed metadata for model {model!r}: {exc}") from exc
            if not specs:
                raise ServerError(503, "model_not_ready", f"model {model!r} has no ready version")
            self._inputs[key] = specs
        return self._inputs[key]

    def _infer(
        self,
        model: str,
        version: int | None,
        tensors: Mapping[str, np.ndarray],
        named: bool,
        routing_key: str | None,
        outputs: Sequence[str] | None,
        binary: bool | None,
    ) -> dict[str, np.ndarray]:
        """One V2 inference request and its decoded outputs."""
        if binary is None:
            values = sum(t.size for t in tensors.values())
            binary = values > self.binary_threshold or any(map(_not_finite, tensors.values()))
        elif not binary:
            bad = next((k for k, t in tensors.items() if _not_finite(t)), None)
            if bad is not None:
                raise ValueError(
                    f"{bad!r} holds NaN or infinite values, which JSON cannot carry: "
                    "send them binary (binary=None or True)"
                )
        inputs: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for name, array in tensors.items():
            if binary:
                blob = encode_binary(array)
                tensor = encode_json(name, array, with_data=False)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor = encode_json(name, array)
            inputs.append(tensor)
        request: dict[str, Any] = {"inputs": inputs}
        parameters: dict[str, Any] = {}
        if named:
            parameters["content_type"] = "pd"  # MLServer's marker for named columns
        if binary:
            parameters["binary_data_output"] = True
        if parameters:
            request["parameters"] = parameters
        if outputs is not None:
            request["outputs"] = [{"name": o} for o in outputs]
        head = orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {"content-type": "application/json"}
        if blobs:
            headers = {
                "content-type": "application/octet-stream",
                _HEADER_LENGTH: str(len(head)),
            }
        if routing_key is not None:
            headers[_ROUTING_KEY] = routing_key
        body = b"".join((head, *blobs))
        response = self._send("POST", _model_path(model, version) + "/infer", body, headers)
        _raise_for_status(response)
        return _decode_response(response.content, response.headers.get(_HEADER_LENGTH))

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response: httpx.Response = self._http.request(
                method, path, content=body, headers=headers
            )
        except self._httpx.HTTPError as exc:
            raise TransportError(f"{method} {self.url}{path}: {exc}") from exc
        return response


# ---------------------------------------------------------------------- requests
def _model_path(model: str, version: int | None) -> str:
    path = "/v2/models/" + quote(model, safe="")
    return path if version is None else f"{path}/versions/{int(version)}"


def _named_columns(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each column as a 1-D array of a V2 datatype (text as an object array of str)."""
    if not columns:
        raise ValueError("the data has no columns")
    out: dict[str, np.ndarray] = {}
    rows = None
    for name, values in columns.items():
        array = np.asarray(values)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {list(array.shape)}")
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise ValueError(f"column {name!r} has {array.shape[0]} rows, the first {rows}")
        out[name] = _sendable(name, array)
    return out


def _own_input(spec: TensorSpec, values: np.ndarray) -> np.ndarray:
    """``values`` as the model input's datatype, cast by the server's "safe" rule."""
    try:
        return cast_column(spec.name, _sendable(spec.name, values), spec.datatype)
    except InvalidInput as exc:
        raise ValueError(str(exc).replace("column", "input", 1)) from None


def _sendable(name: str, array: np.ndarray) -> np.ndarray:
    """Native byte order, text as str objects; refuse what V2 has no datatype for."""
    if array.dtype.kind in "US":
        array = array.astype(str).astype(object)
    elif array.dtype.kind == "O":
        bad = next((v for v in array.ravel() if not isinstance(v, str)), None)
        if array.size and bad is not None:
            raise ValueError(
                f"column {name!r} mixes text with {type(bad).__name__} values ({bad!r}); "
                "send one type per column (text columns must not have missing values)"
            )
        return array
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        datatype_of(array)
    except InvalidInput as exc:
        raise ValueError(f"column {name!r}: {exc}") from None
    return array


def _not_finite(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and not np.isfinite(array).all()


# ---------------------------------------------------------------------- responses
def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, message = "http_error", response.text[:500]
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
        code = str(doc.get("code", code))
    raise ServerError(response.status_code, code, message)


def _json(raw: bytes | memoryview) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TransportError(f"the response is not JSON: {exc}") from exc


def _decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """A V2 inference response (JSON, or JSON header + binary outputs) as numpy arrays."""
    view = memoryview(body)
    if header_length is None:
        doc, blobs = _json(view), view[len(view) :]
    else:
        if not header_length.isdigit() or int(header_length) > len(view):
            raise TransportError(f"bad Inference-Header-Content-Length {header_length[:32]!r}")
        doc = _json(view[: int(header_length)])
        blobs = view[int(header_length) :]
    tensors = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(tensors, list):
        raise TransportError("the response has no 'outputs' list")
    out: dict[str, np.ndarray] = {}
    offset = 0
    try:
        for tensor in tensors:
            name, datatype = str(tensor["name"]), str(tensor["datatype"])
            shape = tuple(int(d) for d in tensor["shape"])
            size = binary_size(tensor)
            if size is None:
                array = np.array(tensor["data"], dtype=V2_TO_NUMPY[datatype])
                out[name] = array.reshape(shape)
                continue
            spec = TensorSpec(name, datatype, shape)
            out[name] = decode_binary(spec, tensor, blobs[offset : offset + size], _NO_LIMITS)
            offset += size
    except (InvalidInput, KeyError, TypeError, ValueError) as exc:
        raise TransportError(f"malformed inference response: {exc}") from exc
    return out


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The chunks' outputs joined along rows (always a fresh, writable array)."""
    out: dict[str, np.ndarray] = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if arrays[0].ndim == 0:
            if len(parts) > 1:
                raise ClientError(f"output {name!r} has no row dimension to join chunks on")
            out[name] = arrays[0].copy()
        else:
            out[name] = np.concatenate(arrays, axis=0)
    return out


def output_columns(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One 1-D array per output column, named as in the module doc (for tables)."""
    columns: dict[str, np.ndarray] = {}
    for name, array in outputs.items():
        if array.ndim == 0:
            raise ValueError(f"output {name!r} is a scalar, not a column")
        flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array[:, None]
        if array.ndim == 1 or flat.shape[1] == 1:
            columns[name] = flat[:, 0]
        else:
            for j in range(flat.shape[1]):
                columns[f"{name}_{j}"] = flat[:, j]
    return columns


# ---------------------------------------------------------------------- files
def score_file(
    client: Client,
    model: str,
    data: Path,
    *,
    version: int | None = None,
    out: Path | None = None,
    batch_rows: int | None = None,
    progress: Progress | None = None,
    drop: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], int]:
    """Score a CSV, parquet or npz file; write the outputs to ``out`` (by its suffix).

    CSV and parquet columns, and npz files with ``feature_names``, are named columns; an
    npz without them is the model's own input (its ``X``, ``X_train`` or only 2-D array), or
    its inputs when it holds an array named as each. ``drop`` names columns not to send (a
    label, an id). Returns the outputs and the version that answered (``version``, else the
    model's default version, pinned for every chunk).
    """
    from .reference_data import read_reference

    data = Path(data)
    if version is None:
        default = client.metadata(model).get("parameters", {}).get("default_version")
        if default is None:
            raise ServerError(503, "model_not_ready", f"model {model!r} has no default version")
        version = int(default)
    payload: Any = None if drop else _npz_inputs(client, model, version, data)
    if payload is None:
        X, names = read_reference(data, what="the data to score")
        named = data.suffix.lower() != ".npz" or _npz_has_names(data)
        if drop:
            if not named:
                raise ValueError(
                    f"{data.name}: --drop needs named columns (CSV, parquet, or an npz with "
                    "feature_names)"
                )
            unknown = sorted(set(drop) - set(names))
            if unknown:
                raise ValueError(
                    f"{data.name}: no column {unknown[0]!r} to drop; its columns are "
                    f"{names[:20]}{' …' if len(names) > 20 else ''}"
                )
            keep = [j for j, n in enumerate(names) if n not in set(drop)]
            X, names = X[:, keep], [names[j] for j in keep]
        payload = _table_columns(X, names) if named else X
    if out is not None:
        _check_out(out)
    outputs = client.predict(
        model, payload, version=version, batch_rows=batch_rows, progress=progress
    )
    if out is not None:
        write_outputs(outputs, out)
    return outputs, version


def _npz_has_names(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as npz:
        return "feature_names" in npz.files


def _npz_inputs(
    client: Client, model: str, version: int, path: Path
) -> dict[str, np.ndarray] | None:
    """An npz's arrays named as every input of the model (a multi-input model), or None."""
    if path.suffix.lower() != ".npz" or not zipfile.is_zipfile(path):
        return None
    names = [s.name for s in client._model_inputs(model, version)]
    if len(names) < 2:
        return None
    with np.load(path, allow_pickle=False) as npz:
        if not set(names) <= set(npz.files) or "feature_names" in npz.files:
            return None
        return {n: npz[n] for n in names}


def _table_columns(X: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``read_reference``'s table as columns: numeric ones float64 (NaN missing), text as
    str objects."""
    if X.dtype != object:
        return {n: X[:, j] for j, n in enumerate(names)}
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        col = X[:, j]
        numeric = all(isinstance(v, float) for v in col)
        columns[name] = col.astype(np.float64) if numeric else col
    return columns


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz"):
        raise ValueError(f"--out {out}: unknown format {out.suffix!r} (.csv, .parquet, .npz)")


def write_outputs(outputs: Mapping[str, np.ndarray], out: Path | Any) -> None:
    """Write outputs as ``.npz`` (each output by name, its own shape), ``.parquet`` or
    ``.csv`` (``output_columns``); ``out`` may also be a text stream (CSV)."""
    if not isinstance(out, Path):
        _write_csv(output_columns(outputs), out)
        return
    _check_out(out)
    suffix = out.suffix.lower()
    if suffix == ".npz":
        arrays = {k: v.astype(str) if v.dtype == object else v for k, v in outputs.items()}
        np.savez(out, **arrays)  # type: ignore[arg-type]
    elif suffix == ".csv":
        with out.open("w", newline="", encoding="utf-8") as fh:
            _write_csv(output_columns(outputs), fh)
    else:
        try:
            pa = importlib.import_module("pyarrow")
            pq = importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise ValueError(f"writing {out.name} needs pyarrow: pip install pyarrow") from None
        columns = output_columns(outputs)
        table = pa.table({k: pa.array(v) for k, v in columns.items()})
        pq.write_table(table, out)


def _write_csv(columns: Mapping[str, np.ndarray], fh: Any) -> None:
    import csv

    # numpy's shortest round-trip text per value (a float32 stays 0.9647184, not 0.96471840…)
    text = [c.astype(str) for c in columns.values()]
    writer = csv.writer(fh)
    writer.writerow(list(columns))
    writer.writerows(zip(*(t.tolist() for t in text), strict=True))
