"""Builder of the built-in demo workspace: a small, deterministic ONNX model registry.

Trains scikit-learn models on local data (seeded synthetic loan eligibility, bundled iris; no
downloads), exports them to ONNX (input ``X``, outputs ``label``/``probabilities``), verifies them
with onnxruntime, and writes each version's reference profile (``reference.json``, built from its
training data and the model's outputs on it) for drift monitoring. Needs the optional ``[demo]``
extra (scikit-learn, skl2onnx, onnx).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .monitoring.profile import build_profile, save_profile

log = logging.getLogger("mlserve.demo")

BUILDER_VERSION = 3  # bump whenever the workspace's content changes: old ones rebuild
MARKER = ".mlserve-demo.json"
N_SAMPLES = 32
OUTPUTS = ("label", "probabilities")
MODEL_TOML = (
    "# mlserve built-in demo model (made by mlserve.demo)\n"
    '[versions]\npolicy = "all"\n'
    "# version 1 serves, version 2 is a 10 % canary and also shadows half the stable traffic\n"
    "[routing]\nstable = 1\ncanary = 2\ncanary_weight = 10\nshadows = [2]\nshadow_sample = 0.5\n"
)


def _credit_risk_data(n: int = 6000, seed: int = 20240611) -> dict[str, np.ndarray]:
    """Synthetic loan-eligibility data; ``group`` is sensitive, correlated with a few features."""
    rng = np.random.default_rng(seed)
    group = rng.binomial(1, 0.4, n)
    age = np.clip(rng.normal(41, 12, n), 18, 80)
    income = rng.lognormal(np.log(55) - 0.3 * group, 0.45, n)  # yearly
    employment = np.minimum(age - 18, rng.gamma(2.0, 3.5, n))
    history = (age - 18) * rng.uniform(0.3, 1.0, n)
    debt_ratio = np.clip(rng.beta(2, 5, n) + 0.06 * group, 0, 1.2)
    utilization = rng.beta(2, 3, n)
    loan = income * rng.lognormal(np.log(0.35), 0.5, n)
    late = rng.poisson(0.4 + 1.5 * debt_ratio)
    savings = income * rng.lognormal(np.log(0.2) - 0.4 * group, 0.8, n)
    home = rng.binomial(1, 1 / (1 + np.exp(-(age - 40) / 10 - 0.8 * np.log(income / 55))))
    inquiries = rng.poisson(0.8 + 1.5 * utilization)
    bankrupt = rng.binomial(1, 0.03 + 0.05 * (late > 2))
    z = (
        1.6 * np.log(income / 55) - 4.0 * (debt_ratio - 0.3) + 0.05 * history - 0.5 * late
        - 2.5 * (utilization - 0.4) - 1.2 * np.log(loan / income / 0.35) + 0.5 * home
        + 0.4 * np.log1p(savings / income) - 0.25 * inquiries - 2.0 * bankrupt
        - 1.5 * ((debt_ratio > 0.4) & (utilization > 0.55)) - 0.004 * (age - 45) ** 2
        + 0.03 * employment + 0.6
    )  # fmt: skip
    eligible = (rng.random(n) < 1 / (1 + np.exp(-2.0 * z))).astype(np.int64)
    features = {  # name -> column, in feature order; money amounts are in thousands
        "income": income, "debt_ratio": debt_ratio, "credit_history_years": history,
        "num_open_accounts": rng.poisson(2 + history / 5), "loan_amount": loan,
        "loan_term_months": rng.choice([12, 24, 36, 48, 60], n),
        "interest_rate": np.clip(rng.normal(8 + 8 * debt_ratio, 2, n), 2, 30),
        "employment_years": employment, "age": age, "num_late_payments": late,
        "credit_utilization": utilization, "savings_balance": savings,
        "num_dependents": rng.poisson(1.1, n), "home_ownership": home,
        "num_credit_inquiries": inquiries,
        "monthly_expenses": income / 12 * rng.uniform(0.3, 0.7, n),
        "existing_loans": rng.poisson(0.8, n),
        "property_value": home * income * rng.lognormal(np.log(4), 0.4, n),
        "bankruptcies": bankrupt, "region_cost_index": rng.normal(100 + 8 * group, 10, n),
    }  # fmt: skip
    X = np.round(np.column_stack(list(features.values())), 3).astype(np.float32)
    cut = int(n * 0.8)
    parts = {"X": X, "y": eligible, "group": group.astype(np.int64)}
    data = {f"{k}_{s}": v[:cut] if s == "train" else v[cut:]
            for k, v in parts.items() for s in ("train", "test")}  # fmt: skip
    return {**data, "feature_names": np.array(list(features))}


def _iris_data() -> dict[str, np.ndarray]:
    """sklearn's bundled iris data (no download), stratified 70/30 split."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    X_train, X_test, y_train, y_test = train_test_split(
        iris.data.astype(np.float32), iris.target.astype(np.int64),
        test_size=0.3, random_state=0, stratify=iris.target,
    )  # fmt: skip
    names = [n.removesuffix(" (cm)").replace(" ", "_") for n in iris.feature_names]
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test,
            "feature_names": np.array(names)}  # fmt: skip


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(sess: Any, X: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs on ``X``, by name."""
    return dict(zip(OUTPUTS, sess.run(list(OUTPUTS), {"X": X}), strict=True))


def _export(
    name: str, model: Any, data: dict[str, Any], tol: float
) -> tuple[bytes, Any, dict[str, Any]]:
    """Convert to ONNX, check onnxruntime against sklearn; return bytes, session, test outputs."""
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model, initial_types=[("X", FloatTensorType([None, data["X_train"].shape[1]]))],
        name=name,  # a fixed graph name (the default is a random uuid) keeps builds byte-identical
        options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3},
    )  # fmt: skip
    blob = onx.SerializeToString()
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    X_test = data["X_test"]
    out = _run(sess, X_test)
    agree = float(np.mean(out["label"] == model.predict(X_test)))
    err = float(np.max(np.abs(out["probabilities"] - model.predict_proba(X_test))))
    if agree < 0.995 or err > tol:
        raise RuntimeError(
            f"ONNX export of {name} ({type(model).__name__}) diverges from scikit-learn: "
            f"label agreement {agree:.4f}, max probability error {err:.2e} (tolerance {tol:.0e})"
        )
    return blob, sess, out


def _write_version(
    model_dir: Path, version: int, model: Any, data: dict[str, np.ndarray], tol: float
) -> dict[str, Any]:
    """Export and verify a version: model.onnx, samples.npz, reference.json, lineage.json."""
    import onnx
    import skl2onnx
    import sklearn
    from sklearn.metrics import accuracy_score, roc_auc_score

    blob, sess, out = _export(model_dir.name, model, data, tol)
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(blob)
    X = data["X_test"][:N_SAMPLES]  # golden outputs: a run on exactly these rows
    golden = {"inputs.X": X, **{f"outputs.{k}": v for k, v in _run(sess, X).items()}}
    np.savez(vdir / "samples.npz", **golden)  # type: ignore[arg-type]
    X_train, names = data["X_train"], [str(n) for n in data["feature_names"]]
    profile = build_profile(X_train, names, outputs=_run(sess, X_train), bins=10)
    save_profile(profile, vdir / "reference.json")  # all demo features are numeric
    y_test = data["y_test"]
    metrics = {"accuracy": float(accuracy_score(y_test, out["label"]))}
    if out["probabilities"].shape[1] == 2:
        metrics["roc_auc"] = float(roc_auc_score(y_test, out["probabilities"][:, 1]))
    train_bytes = np.ascontiguousarray(data["X_train"]).tobytes() + data["y_train"].tobytes()
    lineage = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_sha256": _sha256(blob),
        "training_data_sha256": _sha256(train_bytes),
        "parent_version": version - 1 if version > 1 else None,
        "framework": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                      "onnx": onnx.__version__},
        "estimator": type(model[-1] if hasattr(model, "steps") else model).__name__,
        "metrics": metrics,
        "tags": {"source": "mlserve demo"},
    }  # fmt: skip
    (vdir / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
    log.info("demo: wrote %s/%d (%s, %s)", model_dir.name, version, lineage["estimator"], metrics)
    return {"model_sha256": lineage["model_sha256"], "metrics": metrics}


def _build_into(root: Path) -> dict[str, Any]:
    """Train, export and write ``registry`` and ``datasets`` under ``root``."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (root / "datasets").mkdir()
    registry = root / "registry"
    models: dict[str, Any] = {}
    credit, iris = _credit_risk_data(), _iris_data()
    for name, data in (("credit-risk", credit), ("iris", iris)):
        np.savez(root / "datasets" / f"{name}.npz", **data)  # type: ignore[arg-type]
    (registry / "credit-risk").mkdir(parents=True)
    (registry / "credit-risk" / "model.toml").write_text(MODEL_TOML)
    plans = [
        ("credit-risk", 1, credit, 1e-5,
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
        ("credit-risk", 2, credit, 1e-4,
         GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)),
        ("iris", 1, iris, 1e-5, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
    ]  # fmt: skip
    for name, version, data, tol, model in plans:
        model.fit(data["X_train"], data["y_train"])
        models[f"{name}/{version}"] = _write_version(registry / name, version, model, data, tol)
    return models


def _is_built(directory: Path) -> bool:
    """True when the marker is current and every model it lists is present and unchanged."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        models = marker["models"]
        if marker.get("builder_version") != BUILDER_VERSION or not models:
            return False
        reg, ds = directory / "registry", directory / "datasets"
        return all(
            _sha256((reg / k / "model.onnx").read_bytes()) == v["model_sha256"]
            and (reg / k / "reference.json").is_file()
            for k, v in models.items()
        ) and all((ds / f"{n}.npz").is_file() for n in ("credit-risk", "iris"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def build_demo(directory: str | Path, *, force: bool = False) -> Path:
    """Build (idempotently) the demo workspace in `directory` and return `directory/registry`.

    Everything is built in a hidden temporary sibling and moved into place, so a crash never
    leaves a half-written registry. Only ``registry``, ``datasets`` and the marker are replaced;
    existing ones not made by this builder (no marker) are only replaced with ``force=True``.
    """
    directory = Path(directory)
    registry = directory / "registry"
    if not force and _is_built(directory):
        return registry
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        msg = f"the demo needs scikit-learn, skl2onnx and onnx ({exc}): pip install 'mlserve[demo]'"
        raise RuntimeError(msg) from exc
    directory.mkdir(parents=True, exist_ok=True)
    owned = (directory / MARKER).exists()
    clash = [p.name for p in (registry, directory / "datasets") if p.exists()]
    if clash and not (owned or force):
        raise FileExistsError(
            f"{directory} already has {', '.join(clash)} not made by the demo builder; "
            "pass force=True to replace them"
        )
    log.info("demo: building into %s", directory)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=directory))
    try:
        models = _build_into(tmp)
        for name in ("registry", "datasets"):
            if (directory / name).exists():  # park the old copy, then swap the new one in
                (directory / name).rename(tmp / f"old-{name}")
            (tmp / name).rename(directory / name)
        marker = {"builder_version": BUILDER_VERSION,
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "models": models}  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.replace(tmp / MARKER, directory / MARKER)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    log.info("demo: registry ready at %s", registry)
    return registry
