"""What a device's model sees and predicts, summarised per window with noise added on the device.

Every prediction the inference server answers is counted into histograms: the predicted
class, the bin of the input's mean and, for a release whose reference names its input
features, the bin of each feature (the bins the release's reference defines, see
:mod:`fedge.protocol.drift`). When a window holds ``window`` predictions it is closed: Laplace
noise of scale ``(2 + F) / epsilon`` is added to every count (adding or removing one
prediction changes one count of each of the 2 + F histograms by one: the L1 sensitivity), which
makes each window's report ``epsilon``-differentially private with respect to any single input. Only
those noisy counts leave the device, with its telemetry; never an input or a prediction.
The noise comes from the operating system's randomness (:class:`random.SystemRandom`) unless a
seed is given: a predictable noise would be no protection. The standard library draws it, not
``numpy.random``, whose import alone would cost a serving device 3 MB.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import numpy as np

from fedge.errors import ConfigError
from fedge.protocol.drift import DriftReference, NoisyWindow, bin_features, bin_inputs

__all__ = ["DriftMonitor", "DriftSettings"]


@dataclass(frozen=True)
class DriftSettings:
    """Window size (predictions) and the privacy spent on each window's counts."""

    window: int = 200
    epsilon: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError("--drift-window", self.window, "must be an integer >= 1")
        if not self.epsilon > 0:
            raise ConfigError("--drift-epsilon", self.epsilon, "must be positive")


class DriftMonitor:
    """Counts predictions of the serving release; closes noisy windows (thread-safe)."""

    def __init__(self, settings: DriftSettings | None = None) -> None:
        self.settings = settings or DriftSettings()
        seed = self.settings.seed
        self._rng = random.SystemRandom() if seed is None else random.Random(seed)
        self._lock = threading.Lock()
        self._version = 0
        self._reference: DriftReference | None = None
        self._edges = np.zeros(0)
        self._classes = np.zeros(0)
        self._inputs = np.zeros(0)
        self._features: list[np.ndarray] = []
        self._count = 0
        self._windows = 0
        self._closed: NoisyWindow | None = None

    def reset(self, version: int, reference: DriftReference | None) -> None:
        """Start counting for ``version`` (nothing is counted without a reference)."""
        with self._lock:
            self._version = version
            self._reference = reference
            self._closed = None
            if reference is not None:
                self._edges = np.asarray(reference.input_edges)
                self._classes = np.zeros(len(reference.classes))
                self._inputs = np.zeros(len(reference.inputs))
                self._features = [np.zeros(len(s)) for s in reference.feature_shares]
            self._count = 0

    def observe(self, x: np.ndarray, logits: np.ndarray, version: int) -> None:
        """Count one answered request (a batch) of ``version``."""
        with self._lock:
            ref = self._reference
            if ref is None or version != self._version or logits.ndim != 2:
                return
            if logits.shape[1] != len(self._classes) or len(x) != len(logits):
                return
            self._classes += np.bincount(np.argmax(logits, axis=1), minlength=len(self._classes))
            self._inputs += np.bincount(bin_inputs(x, self._edges), minlength=len(self._inputs))
            for counts, bins in zip(
                self._features, bin_features(x, ref.feature_edges), strict=False
            ):
                counts += np.bincount(bins, minlength=len(counts))
            self._count += len(x)
            if self._count >= self.settings.window:
                self._close()

    def _close(self) -> None:
        # One prediction changes one count of each histogram by one: the class, the input
        # mean's bin and one bin per named feature, so the L1 sensitivity is 2 + features.
        scale = (2.0 + len(self._features)) / self.settings.epsilon
        classes = self._classes + self._laplace(scale, len(self._classes))
        inputs = self._inputs + self._laplace(scale, len(self._inputs))
        features = [c + self._laplace(scale, len(c)) for c in self._features]
        self._windows += 1
        self._closed = NoisyWindow(
            version=self._version,
            window=self._windows,
            samples=float(max(classes.sum(), 0.0)),  # post-processing: no extra privacy cost
            class_counts=tuple(classes.tolist()),
            input_counts=tuple(inputs.tolist()),
            epsilon=self.settings.epsilon,
            feature_counts=tuple(tuple(f.tolist()) for f in features),
        )
        self._classes[:] = 0
        self._inputs[:] = 0
        for counts in self._features:
            counts[:] = 0
        self._count = 0

    def _laplace(self, scale: float, size: int) -> np.ndarray:
        # The difference of two exponential draws of mean ``scale`` is Laplace(0, scale).
        draw = self._rng.expovariate
        return np.array([scale * (draw(1.0) - draw(1.0)) for _ in range(size)])

    def take(self) -> NoisyWindow | None:
        """The latest closed window not yet taken (a report carries only the newest)."""
        with self._lock:
            closed, self._closed = self._closed, None
            return closed
