"""Production monitoring: is the deployed champion still seeing the population it learned?"""

from monitoring.drift import (
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    compute_drift,
    plot_drift,
)

__all__ = ["DriftReport", "DriftThresholds", "FeatureDrift", "compute_drift", "plot_drift"]
