"""Release pipeline against its teacher: size, batch-1 latency and accuracy, in one run.

Trains the default teacher (``fedge simulate`` defaults: mnist-5k, fedavg-cnn, 10 clients,
10 rounds, no release) unless ``--checkpoint`` is given, builds the release, and prints the
three-row table (teacher fp32, student fp32, student int8), the ratios against the teacher and
a one-line summary checked against the bar: the int8 student >= 20x smaller, >= 5x faster at
batch 1 on one thread in ONNX Runtime, and <= 1.5 accuracy points below the teacher. Latency
is measured interleaved (teacher, student, int8, teacher, ...) so background load hits every
model alike.

    python benchmarks/release.py [--checkpoint runs/latest/model.pt] [--out DIR]
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from fedge.app.config import RunConfig
from fedge.builder import ReleaseReport, ReleaseSettings, build_release

BAR_SIZE_X = 20.0
BAR_LATENCY_X = 5.0
BAR_ACCURACY_POINTS = 1.5


def train_teacher(out: Path) -> Path:
    """Run the default ``fedge simulate`` (no release) and return its ``model.pt``."""
    from fedge.simulation import simulate

    logging.getLogger("flwr").setLevel(logging.ERROR)
    started = time.perf_counter()
    result = simulate(RunConfig(release=False), out_dir=out)
    print(
        f"teacher: default fedge simulate, accuracy {result.final_accuracy:.4f} "
        f"in {time.perf_counter() - started:.0f}s"
    )
    return out / "model.pt"


def print_table(report: ReleaseReport) -> None:
    """The three rows and the ratios against the teacher."""
    header = f"{'model':<14}{'size':>12}{'params':>12}{'p50 ms':>9}{'p99 ms':>9}{'accuracy':>10}"
    print(header)
    print("-" * len(header))
    for row in report.rows:
        print(
            f"{row.role:<14}{row.size_bytes / 1024:>9.1f} KiB{row.parameters:>12,}"
            f"{row.latency_p50_ms:>9.3f}{row.latency_p99_ms:>9.3f}{100 * row.accuracy:>9.2f}%"
        )
    print(
        f"ratios vs teacher: size {report.size_ratio:.1f}x smaller, latency p50 "
        f"{report.latency_ratio:.1f}x faster, accuracy {report.accuracy_delta_points:+.2f} points"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="teacher checkpoint (default: train one)")
    parser.add_argument("--student", default=None, help="student model (default: by dataset)")
    parser.add_argument("--out", type=Path, help="release directory (default: a temp dir)")
    parser.add_argument("--latency-runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedge-bench-release-") as tmp:
        checkpoint = args.checkpoint or train_teacher(Path(tmp) / "run")
        out = args.out or Path(tmp) / "release"
        started = time.perf_counter()
        report = build_release(
            checkpoint=checkpoint,
            out_dir=out,
            student=args.student,
            settings=ReleaseSettings(latency_runs=args.latency_runs),
        )
        seconds = time.perf_counter() - started
    print_table(report)
    print(
        f"build: {seconds:.1f}s (distillation {report.distillation['seconds']:.1f}s, "
        f"{report.distillation['epochs']} epochs, teacher agreement "
        f"{100 * report.distillation['teacher_agreement']:.1f}%)"
    )
    meets = (
        report.size_ratio >= BAR_SIZE_X
        and report.latency_ratio >= BAR_LATENCY_X
        and report.accuracy_delta_points >= -BAR_ACCURACY_POINTS
    )
    print(
        f"release: int8 {report.student_int8.architecture} {report.size_ratio:.0f}x smaller "
        f"(bar {BAR_SIZE_X:.0f}x), {report.latency_ratio:.1f}x faster (bar {BAR_LATENCY_X:.0f}x), "
        f"{report.accuracy_delta_points:+.2f} accuracy points (bar -{BAR_ACCURACY_POINTS}) "
        f"vs {report.teacher.architecture}: {'MEETS' if meets else 'MISSES'} the bar"
    )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
