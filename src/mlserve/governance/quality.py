"""Model quality and fairness metrics of the validation gate, in plain numpy.

Definitions follow scikit-learn (accuracy, one-vs-rest macro ROC AUC, MAE, RMSE) and
fairlearn (demographic parity difference, equalized odds difference with the worst case of
the true- and false-positive-rate gaps, both "between groups": largest minus smallest).
The tests compare each with those libraries on the same data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "accuracy",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "group_rates",
    "mae",
    "rmse",
    "roc_auc",
]


def accuracy(y_true: NDArray[Any], y_pred: NDArray[Any]) -> float:
    """Fraction of rows whose predicted label equals the true one."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def mae(y_true: NDArray[Any], y_pred: NDArray[Any]) -> float:
    diff = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.mean(np.abs(diff)))


def rmse(y_true: NDArray[Any], y_pred: NDArray[Any]) -> float:
    diff = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def _average_ranks(x: NDArray[Any]) -> NDArray[np.float64]:
    """1-based ranks of ``x``, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    sorted_x = x[order]
    # Boundaries of runs of equal values in the sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _binary_auc(positive: NDArray[np.bool_], score: NDArray[Any]) -> float:
    """Area under the ROC curve: the Mann–Whitney statistic (ties count one half)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative rows")
    ranks = _average_ranks(np.asarray(score, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: NDArray[Any], scores: NDArray[Any], positive_label: int = 1) -> float:
    """ROC AUC from class scores (rows × classes, column c scoring label c).

    Two columns: the binary AUC of ``positive_label``'s column. More: the unweighted mean of
    the one-vs-rest AUCs of every class (scikit-learn's ``multi_class="ovr"``).
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, np.float64)
    if s.ndim == 1:
        return _binary_auc(y == positive_label, s)
    if s.shape[1] == 2:
        return _binary_auc(y == positive_label, s[:, positive_label])
    return float(np.mean([_binary_auc(y == c, s[:, c]) for c in range(s.shape[1])]))


def group_rates(
    y_pred: NDArray[Any],
    groups: NDArray[Any],
    positive_label: int = 1,
    y_true: NDArray[Any] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per group: rows, selection rate, and (with labels) true and false positive rates."""
    pred = np.asarray(y_pred) == positive_label
    truth = None if y_true is None else np.asarray(y_true) == positive_label
    g = np.asarray(groups)
    out: dict[str, dict[str, float | int | None]] = {}
    for level in np.unique(g):
        mask = g == level
        entry: dict[str, float | int | None] = {
            "rows": int(mask.sum()),
            "selection_rate": float(pred[mask].mean()),
        }
        if truth is not None:
            pos, neg = mask & truth, mask & ~truth
            entry["true_positive_rate"] = float(pred[pos].mean()) if pos.any() else None
            entry["false_positive_rate"] = float(pred[neg].mean()) if neg.any() else None
        out[str(level)] = entry
    return out


def _spread(values: list[float | int | None]) -> float:
    present = [float(v) for v in values if v is not None]
    return max(present) - min(present) if present else 0.0


def demographic_parity_difference(
    y_pred: NDArray[Any], groups: NDArray[Any], positive_label: int = 1
) -> float:
    """Largest minus smallest rate of ``positive_label`` predictions across groups."""
    rates = group_rates(y_pred, groups, positive_label)
    return _spread([r["selection_rate"] for r in rates.values()])


def equalized_odds_difference(
    y_true: NDArray[Any], y_pred: NDArray[Any], groups: NDArray[Any], positive_label: int = 1
) -> float:
    """The larger of the true-positive-rate and false-positive-rate gaps across groups."""
    rates = group_rates(y_pred, groups, positive_label, y_true)
    tpr = _spread([r["true_positive_rate"] for r in rates.values()])
    fpr = _spread([r["false_positive_rate"] for r in rates.values()])
    return max(tpr, fpr)
