"""``mlserve publish``: a fitted estimator or an ONNX file becomes the next registry version.

From a scikit-learn estimator (an object, or a joblib/pickle file loaded only from the path
the caller names — unpickling runs code, so only publish files you trust) or an existing
ONNX file, plus reference data (``.npz``, ``.csv``, ``.parquet``):

1. convert with skl2onnx (plain tensor outputs: no ZipMap) unless an ONNX file is given;
2. check that onnxruntime's outputs equal the estimator's on the reference data within
   ``tolerance`` (refuse otherwise);
3. write ``model.onnx``, ``reference.json`` (the drift profile of the data and of the
   model's outputs on it), ``samples.npz`` (golden inputs and outputs) and
   ``lineage.json`` (hashes, code revision, parent version, metrics, tags, library versions)
   into a hidden temporary directory of the model, then rename it to the next version
   number under a lock file, so readers never see half a version and two publishers never
   take the same number.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..errors import MLServeError, ModelLoadError
from ..monitoring.profile import build_profile, save_profile
from ..registry.layout import (
    LINEAGE_FILE,
    MODEL_FILE,
    SAMPLES_FILE,
    fsync_dir,
    is_valid_model_name,
)

__all__ = ["PublishError", "Published", "publish"]

N_SAMPLES = 32  # golden rows in samples.npz
MAX_CHECK_ROWS = 10_000  # reference rows compared between onnxruntime and the estimator
LOCK_FILE = ".publish.lock"
_LIBRARIES = ("numpy", "onnxruntime", "onnx", "skl2onnx", "scikit-learn")


class PublishError(ValueError):
    """Publishing was refused; the message says why (nothing was written)."""


@dataclass(frozen=True)
class Published:
    """Where a published version went and what its lineage says."""

    model: str
    version: int
    path: Path
    lineage: dict[str, Any]
    max_error: float | None


def publish(
    registry: str | os.PathLike[str],
    model: str,
    *,
    reference: str | os.PathLike[str],
    estimator: Any = None,
    onnx_model: str | os.PathLike[str] | None = None,
    input_name: str = "X",
    input_key: str | None = None,
    feature_names: Sequence[str] | None = None,
    categorical: Collection[str] = (),
    tolerance: float = 1e-4,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    parent: int | None = None,
    code_dir: str | os.PathLike[str] | None = None,
    target_opset: int = 17,
) -> Published:
    """Publish the next version of ``model`` in ``registry`` (see the module doc).

    ``estimator`` is a fitted scikit-learn object or a path to a joblib/pickle file.
    With ``onnx_model`` given too, the file is used as is and compared with the estimator;
    alone, it is checked to run on the reference data. ``parent`` defaults to the highest
    existing version. Raises ``PublishError`` and leaves the registry untouched on refusal.
    """
    from ..profiling import read_reference

    if not is_valid_model_name(model):
        raise PublishError(
            f"invalid model name {model!r}: letters, digits, '_', '.', '-' (not starting with '.')"
        )
    if estimator is None and onnx_model is None:
        raise PublishError("publish needs an estimator or an ONNX model")
    if not tolerance >= 0:
        raise PublishError(f"tolerance must be >= 0, got {tolerance}")
    if parent is not None and parent < 1:
        raise PublishError(f"parent must be a version (>= 1), got {parent}")
    for key, number in (metrics or {}).items():
        if not isinstance(number, (int, float)) or not math.isfinite(number):
            raise PublishError(f"metric {key!r} must be a finite number, got {number!r}")
    reference = Path(reference)
    try:
        X, names = read_reference(reference, input_key=input_key, feature_names=feature_names)
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    if X.dtype == object:
        raise PublishError(
            f"{reference.name} has text columns; publish needs numeric features "
            "(encode categories as numbers first)"
        )
    source: dict[str, Any] = {}
    if isinstance(estimator, (str, os.PathLike)):
        path = Path(estimator)
        estimator = _load_estimator(path)
        source["estimator_file"] = path.name
        source["estimator_sha256"] = _sha256_file(path)
    if estimator is not None and not callable(getattr(estimator, "predict", None)):
        raise PublishError(
            f"the estimator is a {type(estimator).__name__}, not a fitted scikit-learn "
            "estimator (no predict method)"
        )
    if onnx_model is not None:
        path = Path(onnx_model)
        if not path.is_file():
            raise PublishError(f"ONNX model {path} does not exist")
        blob = path.read_bytes()
        source["onnx_file"] = path.name
    else:
        blob = _convert(estimator, model, X.shape[1], input_name, target_opset)
    with tempfile.TemporaryDirectory() as scratch:  # outside the registry: nothing appears
        session, input_name, x = _session(blob, X, Path(scratch))
    outputs = _run(session, x)
    max_error = None
    if estimator is not None:
        max_error = _compare(estimator, x[:MAX_CHECK_ROWS], outputs, tolerance)
    for name, value in outputs.items():
        if not np.all(np.isfinite(value)) and value.dtype.kind == "f":
            raise PublishError(f"output {name!r} is not finite on some reference rows")
    profile = build_profile(X, names, categorical=set(categorical), outputs=outputs, bins=10)
    lineage: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "reference_data_sha256": _sha256_file(reference),
        "reference_data": {"file": reference.name, "rows": int(X.shape[0])},
        "code_revision": _git_revision(Path(code_dir) if code_dir else Path.cwd()),
        "parent_version": None,  # set under the lock, once the version number is known
        "source": "estimator" if onnx_model is None else "onnx",
        **source,
        "estimator": _estimator_name(estimator) if estimator is not None else None,
        "verification": {
            "rows": int(min(len(x), MAX_CHECK_ROWS)) if estimator is not None else 0,
            "max_abs_error": max_error,
            "tolerance": tolerance,
        },
        "input": {"name": input_name, "features": names},
        "metrics": dict(metrics or {}),
        "tags": dict(tags or {}),
        "libraries": _libraries(),
    }
    model_dir = Path(registry) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the version from other users
    try:
        (tmp / MODEL_FILE).write_bytes(blob)
        save_profile(profile, tmp / "reference.json")
        golden = {f"inputs.{input_name}": x[:N_SAMPLES]}
        golden.update(
            {f"outputs.{k}": v[:N_SAMPLES] for k, v in _run(session, x[:N_SAMPLES]).items()}
        )
        np.savez(tmp / SAMPLES_FILE, **golden)  # type: ignore[arg-type]
        with _locked(model_dir):
            existing = _versions(model_dir)
            version = max(existing, default=0) + 1
            lineage["parent_version"] = (
                parent if parent is not None else max(existing, default=None)
            )
            lineage["version"] = version
            (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
            _fsync_tree(tmp)
            os.rename(tmp, model_dir / str(version))  # fails if that number exists
            fsync_dir(model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Published(model, version, model_dir / str(version), lineage, max_error)


# ----------------------------------------------------------------------------------------------


def _load_estimator(path: Path) -> Any:
    if not path.exists():
        raise PublishError(f"estimator file {path} does not exist")
    if not path.is_file():
        raise PublishError(f"estimator file {path} is not a file")
    try:
        import joblib

        return joblib.load(path)  # runs pickle: only files the user named and trusts
    except ImportError as exc:
        raise PublishError(
            "loading an estimator needs scikit-learn: pip install 'mlserve[demo]'"
        ) from exc
    except Exception as exc:  # unpickling raises anything
        raise PublishError(f"cannot load estimator {path.name}: {exc}") from exc


def _is_classifier(estimator: Any) -> bool:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return hasattr(final, "predict_proba") and hasattr(final, "classes_")


def _estimator_name(estimator: Any) -> str:
    if hasattr(estimator, "steps"):
        return " → ".join(type(step).__name__ for _, step in estimator.steps)
    return type(estimator).__name__


def _convert(estimator: Any, model: str, n_features: int, input_name: str, opset: int) -> bytes:
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:
        raise PublishError(
            "converting an estimator needs skl2onnx: pip install 'mlserve[demo]'"
        ) from exc
    options = {"zipmap": False} if _is_classifier(estimator) else None
    try:
        onx = convert_sklearn(
            estimator,
            initial_types=[(input_name, FloatTensorType([None, n_features]))],
            name=model,  # a fixed graph name (the default is random) keeps builds reproducible
            options=options,
            target_opset={"": opset, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported models
        raise PublishError(f"skl2onnx cannot convert {_estimator_name(estimator)}: {exc}") from exc
    return bytes(onx.SerializeToString())


def _session(blob: bytes, X: NDArray[Any], directory: Path) -> tuple[Any, str, NDArray[Any]]:
    """The model as the server would load it (``ModelSession``), its input's name, and the
    reference rows cast to that input's type."""
    from ..config import ExecutionConfig, InputPolicy
    from ..runtime.session import ModelSession

    path = directory / MODEL_FILE
    path.write_bytes(blob)
    try:
        session = ModelSession("publish", 0, path, ExecutionConfig(), InputPolicy(), 1 << 40)
    except ModelLoadError as exc:
        raise PublishError(str(exc)) from exc
    if len(session.inputs) != 1:
        raise PublishError(f"the model has {len(session.inputs)} inputs; publish handles one")
    spec = session.inputs[0]
    if spec.datatype not in ("FP32", "FP64"):
        raise PublishError(f"model input {spec.name!r} is {spec.datatype}; expected FP32 or FP64")
    return session, spec.name, np.ascontiguousarray(X, dtype=spec.dtype)


def _run(session: Any, x: NDArray[Any]) -> dict[str, NDArray[Any]]:
    try:
        return session.run_rows(x)  # type: ignore[no-any-return]
    except MLServeError as exc:
        raise PublishError(f"the model fails on the reference data: {exc}") from exc


def _compare(
    estimator: Any, x: NDArray[Any], outputs: dict[str, NDArray[Any]], tolerance: float
) -> float:
    """Largest difference between onnxruntime and the estimator; refuse beyond ``tolerance``.

    Classifiers: probabilities within ``tolerance``, and labels equal except on rows whose two
    best classes are within ``2 × tolerance`` (a tie that rounding may break either way).
    Regressors: predictions within ``tolerance × max(1, |prediction|)``.
    """
    n = len(x)
    floats = [v for v in outputs.values() if v.dtype.kind == "f"]
    labels = [v for v in outputs.values() if v.dtype.kind in "iub"]
    if _is_classifier(estimator):
        expected = np.asarray(estimator.predict_proba(x), np.float64)
        probs = next((v for v in floats if v.shape == expected.shape), None)
        if probs is None:
            raise PublishError(f"no output of shape {expected.shape} holds the probabilities")
        err = float(np.max(np.abs(probs - expected)))
        if err > tolerance:
            raise PublishError(
                f"onnxruntime's probabilities differ from the estimator's by up to {err:.3g} "
                f"(tolerance {tolerance:g}); not published"
            )
        if labels:
            predicted = np.asarray(estimator.predict(x)).reshape(n)
            got = labels[0].reshape(n)
            top2 = np.sort(expected, axis=1)[:, -2:]
            tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
            bad = (got != predicted) & ~tie
            if bad.any():
                raise PublishError(
                    f"onnxruntime's labels differ from the estimator's on {int(bad.sum())} of "
                    f"{n} reference rows; not published"
                )
        return err
    expected = np.asarray(estimator.predict(x), np.float64).reshape(n, -1)
    values = next((v for v in floats if v.size == expected.size), None)
    if values is None:
        raise PublishError(f"no output has the estimator's {expected.shape[1]} value(s) per row")
    diff = np.abs(values.reshape(expected.shape) - expected) / np.maximum(1.0, np.abs(expected))
    err = float(np.max(diff))
    if err > tolerance:
        raise PublishError(
            f"onnxruntime's predictions differ from the estimator's by up to {err:.3g} "
            f"(relative, tolerance {tolerance:g}); not published"
        )
    return err


def _versions(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.name[0] != "0"]


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """An exclusive lock on the model's ``.publish.lock`` (processes and threads alike)."""
    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fsync_tree(directory: Path) -> None:
    for p in directory.iterdir():
        with p.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(directory)


def _sha256_file(path: Path) -> str:
    from ..registry.layout import sha256_file

    return sha256_file(path)


def _git_revision(directory: Path) -> str | None:
    """``HEAD`` of the git checkout holding ``directory`` (``+dirty`` with local changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def _libraries() -> dict[str, str]:
    found = {"python": platform.python_version(), "mlserve": __version__}
    for name in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found
