"""The single-model release pipeline's ONNX Runtime figures: batched prediction, accuracy and
interleaved batch-1 latency of ``.onnx`` files, in the sessions a device runs them in."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fedge.inference.runners import OnnxRuntimeRunner

__all__ = ["LatencyStats", "accuracy", "measure_latency", "predict", "session"]


def session(path: Path, *, threads: int = 1) -> ort.InferenceSession:
    """A fresh CPU session of ``path`` pinned to ``threads`` intra- and inter-op threads (the
    session a device's :class:`~fedge.inference.runners.OnnxRuntimeRunner` runs)."""
    return OnnxRuntimeRunner(path, threads).session


def predict(
    path: Path | ort.InferenceSession, x: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """Logits of the model for every row of ``x``, computed in batches."""
    sess = path if isinstance(path, ort.InferenceSession) else session(path, threads=1)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model on ``(x, y)``."""
    return float((predict(path, x).argmax(1) == y).mean())


@dataclass(frozen=True)
class LatencyStats:
    """Batch-1, single-thread latency percentiles in milliseconds."""

    p50_ms: float
    p99_ms: float
    runs: int


def measure_latency(
    paths: list[Path], sample: np.ndarray, *, runs: int = 300, warmup: int = 30
) -> list[LatencyStats]:
    """Batch-1 latency of each model on one thread, interleaved run by run.

    Interleaving (model A, B, C, A, B, C, ...) exposes every model to the same background load,
    so the ratios between them stay meaningful on a busy machine.
    """
    sessions = [session(p, threads=1) for p in paths]
    feeds = [{s.get_inputs()[0].name: sample[None].astype(np.float32)} for s in sessions]
    for sess, feed in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, (sess, feed) in enumerate(zip(sessions, feeds, strict=True)):
            begin = time.perf_counter_ns()
            sess.run(None, feed)
            times[i].append((time.perf_counter_ns() - begin) / 1e6)
    return [
        LatencyStats(float(np.percentile(t, 50)), float(np.percentile(t, 99)), runs) for t in times
    ]
