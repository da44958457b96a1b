"""Measure one artifact in a fresh process, as a device would run it.

:func:`measure_artifact` starts ``python -m fedge.builder.targets.probe`` for one artifact.
The child imports the target's engine, then records its resident memory, loads the artifact
on one thread and runs batch-1 inferences (warm-up, then timed runs); the peak resident memory
above that baseline is the session's peak memory. Only then does it compute the logits of the
evaluation set, so large evaluation batches do not count. A fresh process per artifact keeps
one session's allocations out of the next one's figures, and keeps torch (which the child never
imports) out of every figure.

Peak memory is measured by :class:`fedge.inference.measure.PeakMemory`, as a device measures it
when it installs the artifact.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.errors import MeasurementError
from fedge.inference.measure import PeakMemory

__all__ = ["Measurement", "measure_artifact"]

#: Longest a measuring child may take before it is stopped (a hung engine is a failure).
PROBE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Measurement:
    """What one artifact did in its own process."""

    latency_p50_ms: float
    latency_p99_ms: float
    latency_runs: int
    peak_memory_mb: float
    load_ms: float
    logits: np.ndarray


def measure_artifact(
    engine: str,
    path: Path,
    x_eval: np.ndarray,
    *,
    sample: np.ndarray,
    runs: int = 300,
    warmup: int = 30,
    threads: int = 1,
) -> Measurement:
    """Latency at batch 1 on ``sample``, session peak memory and logits of ``x_eval``."""
    from fedge.builder.targets import target_spec

    spec = target_spec(engine)
    with tempfile.TemporaryDirectory(prefix="fedge-probe-") as tmp:
        inputs, result = Path(tmp) / "inputs.npz", Path(tmp) / "result"
        np.savez(inputs, x_eval=x_eval.astype(np.float32), sample=sample[None].astype(np.float32))
        command = [
            sys.executable,
            "-m",
            "fedge.builder.targets.probe",
            spec,
            str(path),
            str(inputs),
            str(result),
            f"--runs={runs}",
            f"--warmup={warmup}",
            f"--threads={threads}",
        ]
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise MeasurementError(
                f"measuring {path.name} in {engine} took over {PROBE_TIMEOUT_S:.0f}s"
            ) from err
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
            raise MeasurementError(f"{engine} cannot run {path.name}: {reason}")
        figures = json.loads(result.with_suffix(".json").read_text())
        logits = np.load(result.with_suffix(".npy"))
    return Measurement(logits=logits, **figures)


def _probe(spec: str, path: Path, inputs: Path, result: Path, args: argparse.Namespace) -> None:
    import importlib

    from fedge.builder.targets.base import Target
    from fedge.inference.runners import predict

    module, _, qualname = spec.partition(":")
    target: Target = getattr(importlib.import_module(module), qualname)()
    target.import_engine()
    with np.load(inputs) as data:
        x_eval, sample = data["x_eval"], data["sample"]
    memory = PeakMemory()
    begin = time.perf_counter()
    runner = target.load(path, threads=args.threads)
    runner.run(sample)
    load_ms = (time.perf_counter() - begin) * 1e3
    for _ in range(args.warmup):
        runner.run(sample)
    times = np.empty(args.runs)
    for i in range(args.runs):
        start = time.perf_counter_ns()
        runner.run(sample)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    figures = {
        "latency_p50_ms": float(np.percentile(times, 50)),
        "latency_p99_ms": float(np.percentile(times, 99)),
        "latency_runs": args.runs,
        "peak_memory_mb": memory.added_mb(),
        "load_ms": load_ms,
    }
    np.save(result.with_suffix(".npy"), predict(runner, x_eval))
    result.with_suffix(".json").write_text(json.dumps(figures))


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``SPEC ARTIFACT INPUTS.npz RESULT [--runs --warmup --threads]``."""
    parser = argparse.ArgumentParser(prog="fedge.builder.targets.probe")
    parser.add_argument("spec")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    _probe(args.spec, args.artifact, args.inputs, args.result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
