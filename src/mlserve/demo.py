"""Builder of the built-in demo workspace: a small, deterministic ONNX model registry.

Trains scikit-learn models on local data (seeded synthetic loan eligibility, bundled iris; no
downloads) and puts them through the same steps as any user's model: ``publish`` (ONNX export
checked against scikit-learn, reference profile, golden samples, lineage) and ``validate``
(the ``[gate]`` of ``model.toml``, including fairness on the evaluation set's sensitive
``group`` column). Credit-risk version 3 is trained on deliberately biased decisions and
fails the fairness criteria, so it can serve only as a shadow. Needs the optional ``[demo]``
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

log = logging.getLogger("mlserve.demo")

BUILDER_VERSION = 4  # bump whenever the workspace's content changes: old ones rebuild
MARKER = ".mlserve-demo.json"
MODEL_TOML = """\
# mlserve built-in demo model (made by mlserve.demo)
[versions]
policy = "all"

# version 1 serves, version 2 is a 10 % canary and also shadows half the stable traffic;
# version 3 failed its gate (fairness), so it may serve only as a shadow
[routing]
stable = 1
canary = 2
canary_weight = 10
shadows = [2]
shadow_sample = 0.5

# what a version must pass (mlserve validate) before it may take traffic
[gate]
require_gate = true
min_accuracy = 0.70
min_roc_auc = 0.85
max_demographic_parity_difference = 0.25
max_equalized_odds_difference = 0.20
max_p99_ms_batch1 = 5.0
max_p99_ms_batch = 20.0
latency_batch_size = 64
min_agreement = 0.70
"""


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


def _biased_labels(data: dict[str, np.ndarray], seed: int = 7) -> np.ndarray:
    """Training labels as a biased lender decided them: most approvals of group 1 withheld."""
    rng = np.random.default_rng(seed)
    y = data["y_train"].copy()
    y[(data["group_train"] == 1) & (rng.random(len(y)) < 0.8)] = 0
    return y


def _build_into(root: Path) -> dict[str, Any]:
    """Train, publish and validate into ``registry``, with the data in ``datasets``."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .governance.gate import validate_version
    from .governance.publish import publish

    (root / "datasets").mkdir()
    registry = root / "registry"
    credit, iris = _credit_risk_data(), _iris_data()
    data_files = {}
    for name, data in (("credit-risk", credit), ("iris", iris)):
        data_files[name] = root / "datasets" / f"{name}.npz"
        np.savez(data_files[name], **data)  # type: ignore[arg-type]
    (registry / "credit-risk").mkdir(parents=True)
    (registry / "credit-risk" / "model.toml").write_text(MODEL_TOML)
    plans = [
        ("credit-risk", credit, credit["y_train"], 1e-5, "logistic regression",
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
        ("credit-risk", credit, credit["y_train"], 1e-4, "gradient boosting",
         GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)),
        ("credit-risk", credit, _biased_labels(credit), 1e-4,
         "gradient boosting on historically biased decisions (fails the fairness gate)",
         GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)),
        ("iris", iris, iris["y_train"], 1e-5, "logistic regression",
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
    ]  # fmt: skip
    models: dict[str, Any] = {}
    for name, data, y_train, tol, about, model in plans:
        model.fit(data["X_train"], y_train)
        metrics = {"accuracy": float(model.score(data["X_test"], data["y_test"]))}
        done = publish(
            registry, name, reference=data_files[name], estimator=model, tolerance=tol,
            metrics=metrics, tags={"source": "mlserve demo", "about": about},
        )  # fmt: skip
        report = validate_version(registry, name, done.version, data_files[name])
        log.info(
            "demo: published %s/%d (%s): gate %s",
            name, done.version, about, "passed" if report.passed else "FAILED: " + ", ".join(
                c.name for c in report.failed()
            ),
        )  # fmt: skip
        models[f"{name}/{done.version}"] = {
            "model_sha256": done.lineage["model_sha256"],
            "metrics": metrics,
            "gate_passed": report.passed,
        }
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
