"""Drift of undrifted traffic against profiles ``publish`` writes for scikit-learn's bundled data.

For each model (binary, multiclass, regressor) and reference format (CSV, parquet, float64
npz, DataFrame), publish, then send the reference rows themselves as FP32 and report the
largest PSI over the input features, the out-of-range count and the alerting features.
Runs against any checkout: ``PYTHONPATH=/tmp/before/src python benchmarks/own_models_drift.py``
(formats the old code refuses are reported as such).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.governance.publish import publish
from mlserve.monitoring.binning import Binning
from mlserve.monitoring.drift import drift_report
from mlserve.monitoring.profile import load_profile


def models() -> list[tuple[str, pd.DataFrame, object]]:
    out = []
    for name, loader, est in (
        ("breast_cancer", load_breast_cancer, LogisticRegression(max_iter=5000)),
        ("wine", load_wine, LogisticRegression(max_iter=5000)),
        ("diabetes", load_diabetes, Ridge()),
    ):
        bunch = loader(as_frame=True)
        frame = bunch.data
        out.append((name, frame, make_pipeline(StandardScaler(), est).fit(frame, bunch.target)))
    return out


def references(frame: pd.DataFrame, root: Path) -> dict[str, object]:
    frame.to_csv(root / "ref.csv", index=False)
    frame.to_parquet(root / "ref.parquet")
    np.savez(
        root / "ref.npz",
        X=frame.to_numpy(np.float64),
        feature_names=np.array(list(frame.columns), dtype=str),
    )
    return {
        "csv": root / "ref.csv",
        "parquet": root / "ref.parquet",
        "npz": root / "ref.npz",
        "DataFrame": frame,
    }


def main() -> int:
    print(f"{'model':14} {'format':10} {'max PSI':>9} {'out of range':>13}  alerting")
    for name, frame, est in models():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for fmt, ref in references(frame, root).items():
                try:
                    done = publish(root / "registry", name, reference=ref, estimator=est)
                except Exception as exc:  # the old code: formats it cannot read
                    print(f"{name:14} {fmt:10} {'refused':>9} {'':>13}  {type(exc).__name__}")
                    continue
                profile = load_profile(done.path / "reference.json")
                binning = Binning(profile["features"])
                order = [f["name"] for f in sorted(profile["features"], key=lambda e: e["column"])]
                rows = frame[order].to_numpy(np.float64).astype(np.float32)  # requests are FP32
                report = drift_report(binning, binning.count(rows))
                psi = max(f.psi for f in report.features)
                oor = sum(f.out_of_range for f in report.features)
                alerting = ",".join(report.alerting) or "-"
                print(f"{name:14} {fmt:10} {psi:9.4f} {oor:13d}  {alerting}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
