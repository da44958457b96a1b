"""A slot's personal last layer: the delivered model's ``features`` through ``W`` and ``b``.

A personalised slot (:mod:`fedge.edge.personalize`) holds the release's own verified model and
``head.npz`` beside it; every place that loads a slot's model (the health check, the inference
server) loads it through :func:`personal_runner`, so the personal layer is what is checked and
served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedge.edge.slots import HEAD_FILE
from fedge.inference.runners import Runner, load_runner
from fedge.protocol.manifest import FEATURES_OUTPUT

__all__ = ["FEATURES_OUTPUT", "HeadRunner", "personal_runner"]


class HeadRunner(Runner):
    """A delivered model's features through a personal last layer: ``features @ W + b``."""

    def __init__(self, path: Path, weights: np.ndarray, bias: np.ndarray, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.log_severity_level = 3
        self.session: Any = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.weights, self.bias = weights, bias

    def run(self, x: np.ndarray) -> np.ndarray:
        """Personal logits of the batch ``x``."""
        (features,) = self.session.run([FEATURES_OUTPUT], {self.input_name: x})
        flat = np.asarray(features, dtype=np.float32).reshape(len(x), -1)
        return flat @ self.weights + self.bias


def personal_runner(path: Path, engine: str, *, threads: int = 1) -> Runner:
    """The runner of a slot's model: through its personal layer when the slot holds one."""
    head = Path(path).parent / HEAD_FILE
    if not head.is_file():
        return load_runner(engine, path, threads=threads)
    with np.load(head) as arrays:
        weights, bias = np.asarray(arrays["W"]), np.asarray(arrays["b"])
    return HeadRunner(Path(path), weights, bias, threads=threads)
