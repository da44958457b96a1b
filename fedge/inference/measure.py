"""Measure a release artifact as a device runs it: in a fresh process, on one thread.

``measure_session("litert", path, sample)`` starts ``python -m fedge.inference.measure`` for
the artifact. The child imports the engine, records its resident memory, loads the artifact
through :mod:`fedge.inference.runners` and runs batch-1 inferences (warm-up, then timed runs);
the peak resident memory above that baseline is the session's peak memory. A fresh process
keeps what a long-running process already holds (an earlier session's freed pages, an engine
imported before) out of the figure: measured in the device agent itself, a second model would
add "0 MB". The release build's probe (:mod:`fedge.builder.targets.probe`) measures with the same
:class:`PeakMemory`.

Peak memory is read from ``/proc/self/status`` (``VmHWM`` after resetting it through
``/proc/self/clear_refs``); where that is unavailable, from ``getrusage``'s peak, which cannot
be reset and so over-states nothing but may under-state a session smaller than what the
process already peaked at.

A leaf: numpy, the standard library and :mod:`fedge.inference.runners`; never torch.
"""

import gc
import importlib
import io
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedge.errors import FedgeError
from fedge.inference.runners import ENGINE_PACKAGES, load_runner

if TYPE_CHECKING:
    import argparse

__all__ = ["PeakMemory", "SessionFigures", "measure_session"]

#: Longest a measuring child may take before it is stopped (a hung engine is a failure).
MEASURE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class SessionFigures:
    """What one artifact did in its own process: batch-1 latency and peak memory."""

    latency_p50_ms: float
    latency_p99_ms: float
    peak_memory_mb: float


class PeakMemory:
    """The peak resident memory added since this object was made (see the module docstring)."""

    def __init__(self) -> None:
        gc.collect()
        self.exact = _reset_peak() and _memory_kib("VmRSS") is not None
        self._baseline = (_memory_kib("VmRSS") if self.exact else None) or _peak_kib()

    def added_mb(self) -> float:
        """Peak resident memory above the baseline so far, in MiB."""
        peak = (_memory_kib("VmHWM") if self.exact else None) or _peak_kib()
        return max(0, peak - self._baseline) / 1024


def measure_session(
    engine: str,
    path: Path,
    sample: np.ndarray,
    *,
    runs: int = 200,
    warmup: int = 10,
    threads: int = 1,
) -> SessionFigures:
    """Batch-1 latency on ``sample`` (one input, no batch axis) and the session's peak memory,
    measured in a fresh process; :class:`FedgeError` saying why when the child fails."""
    if engine not in ENGINE_PACKAGES:
        raise ValueError(f"unknown engine {engine!r}; valid choices: {sorted(ENGINE_PACKAGES)}")
    command = [sys.executable, "-m", "fedge.inference.measure", engine, str(path)]
    command += [f"--runs={runs}", f"--warmup={warmup}", f"--threads={threads}"]
    sample_bytes = _npy_bytes(np.asarray(sample, dtype=np.float32)[None])
    try:
        proc = subprocess.run(
            command, input=sample_bytes, capture_output=True, timeout=MEASURE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise FedgeError(f"measuring {path.name} took over {MEASURE_TIMEOUT_S:.0f}s") from err
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.decode(errors="replace").splitlines() if line]
        raise FedgeError(lines[-1].strip() if lines else f"exit code {proc.returncode}")
    return SessionFigures(**json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _memory_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_kib() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _child(
    engine: str, path: Path, sample: np.ndarray, args: "argparse.Namespace"
) -> dict[str, float]:
    importlib.import_module(ENGINE_PACKAGES[engine])  # the engine's own cost is not the model's
    memory = PeakMemory()
    runner = load_runner(engine, path, threads=args.threads)
    for _ in range(max(1, args.warmup)):
        runner.run(sample)
    times = np.empty(max(1, args.runs))
    for i in range(len(times)):
        start = time.perf_counter_ns()
        runner.run(sample)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    figures = SessionFigures(
        latency_p50_ms=float(np.percentile(times, 50)),
        latency_p99_ms=float(np.percentile(times, 99)),
        peak_memory_mb=memory.added_mb(),
    )
    return asdict(figures)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``ENGINE ARTIFACT [--runs --warmup --threads]``, the sample as
    ``.npy`` bytes on stdin; one JSON line of :class:`SessionFigures` on stdout."""
    import argparse  # the child's only: a device measuring in process never parses arguments

    parser = argparse.ArgumentParser(prog="fedge.inference.measure")
    parser.add_argument("engine", choices=sorted(ENGINE_PACKAGES))
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sample = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)
    print(json.dumps(_child(args.engine, args.artifact, sample, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
