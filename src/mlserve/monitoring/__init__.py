"""Feature and prediction monitoring: reference profiles, binned windows, drift statistics.

A reference profile (``profile.py``) fixes per-feature bins from reference data; live rows
are counted into the same bins by a compiled kernel (``kernel.py``: Cython, or its numpy
twin) in time-bucketed windows (``drift.WindowedCounts``); drift statistics and calibrated
alerts are computed from the counts alone (``drift.py``), so counts from workers and
replicas merge by addition. See docs/monitoring.md (profile format: docs/file-formats.md).
"""

from .binning import Binning, encode_levels
from .drift import (
    PSI_PSEUDO_COUNT,
    ChiSquare,
    DriftReport,
    FeatureDrift,
    WindowedCounts,
    binned_ks,
    chi_square,
    drift_report,
    js_distance,
    merge,
    psi,
    psi_threshold,
    rank_z,
)
from .kernel import IMPLEMENTATION, BinCounts
from .profile import SCHEMA_VERSION, build_profile, load_profile, save_profile, validate_profile

__all__ = [
    "IMPLEMENTATION",
    "PSI_PSEUDO_COUNT",
    "SCHEMA_VERSION",
    "BinCounts",
    "Binning",
    "ChiSquare",
    "DriftReport",
    "FeatureDrift",
    "WindowedCounts",
    "binned_ks",
    "build_profile",
    "chi_square",
    "drift_report",
    "encode_levels",
    "js_distance",
    "load_profile",
    "merge",
    "psi",
    "psi_threshold",
    "rank_z",
    "save_profile",
    "validate_profile",
]
