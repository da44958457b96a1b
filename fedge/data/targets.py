"""How far a regression model's predictions are from their targets, with numpy only (a device
that checks a release on its own labelled records has no torch)."""

import numpy as np

__all__ = ["regression_metrics"]


def regression_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of ``predicted`` against ``actual`` (in the same units)."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    if len(actual) == 0:
        return {"mae": 0.0, "rmse": 0.0, "r2": 0.0}
    error = predicted - actual
    spread = float(((actual - actual.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / spread if spread > 0 else 0.0,
    }
