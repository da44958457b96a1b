"""Models for every tier: per-profile release builds against the teacher, in one run.

Trains the default teacher (``fedge simulate`` defaults: mnist-5k, fedavg-cnn, 10 clients,
10 rounds, no release) unless ``--checkpoint`` is given, then builds one release for the
``camera`` and ``gateway`` profiles plus a benchmark-only profile that runs every engine with
a generous budget (so that every candidate model is measured on every target). Every artifact
is measured in a fresh process at batch 1 on one thread. Prints every candidate, each profile's
choice, the pruned teacher and each engine, and checks the bar:

- camera: the chosen model <= 16 KiB, p99 <= 1 ms, <= 1.5 accuracy points below the teacher;
- gateway: the chosen model inside its budget and <= 0.5 points below the teacher;
- a structurally pruned fedavg-cnn with >= 4x fewer parameters, <= 1 point below the teacher;
- every engine: the teacher and student-tiny at fp32 and int8 agree with torch on >= 99.5%
  of the test set.

    python benchmarks/tiers.py [--checkpoint runs/latest/model.pt] [--out DIR]
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedge.app.config import RunConfig
from fedge.builder import ProfileRelease, TierSettings, build_profile_release
from fedge.builder.tiers import MIN_AGREEMENT, CandidateRow
from fedge.data import get_dataset
from fedge.inference.profiles import Budget, DeviceProfile, get_profile

BAR_CAMERA_BYTES = 16 * 1024
BAR_CAMERA_P99_MS = 1.0
BAR_CAMERA_POINTS = 1.5
BAR_GATEWAY_POINTS = 0.5
BAR_PRUNED_X = 4.0
BAR_PRUNED_POINTS = 1.0
REFERENCE_MODELS = ("teacher", "student-tiny")

#: Every engine, a budget nothing misses: every candidate model is built on every target.
EVERY_TARGET = DeviceProfile(
    name="bench-every-target",
    tier="gateway",
    engines=("onnxruntime", "openvino", "litert"),
    budget=Budget(max_model_bytes=1 << 30, p99_ms=1e3, peak_memory_mb=1e5, min_accuracy=0.0),
)


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


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_candidates(release: ProfileRelease) -> None:
    """Every candidate; the chosen ones marked with the profiles that chose them."""
    chosen: dict[str, list[str]] = {}
    for name, candidate_id in release.chosen.items():
        chosen.setdefault(candidate_id, []).append(name)
    header = (
        f"{'model':<24}{'engine':<13}{'prec':<6}{'params':>10}{'size KiB':>11}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'mem MB':>8}{'accuracy':>10}{'agree':>9}  chosen for / status"
    )
    print(header)
    print("-" * len(header))
    for row in sorted(release.candidates, key=lambda r: (r.engine, r.model, r.precision)):
        accuracy = "-" if row.accuracy is None else f"{100 * row.accuracy:.2f}%"
        agreement = "-" if row.agreement is None else f"{100 * row.agreement:.2f}%"
        mark = ", ".join(n for n in chosen.get(row.id, []) if n != EVERY_TARGET.name)
        if row.status != "measured":
            mark = row.status
        print(
            f"{row.model:<24}{row.engine:<13}{row.precision:<6}{row.parameters:>10,}"
            f"{row.size_bytes / 1024:>11.1f}{_f(row.latency_p50_ms):>9}{_f(row.latency_p99_ms):>9}"
            f"{_f(row.peak_memory_mb, 1):>8}{accuracy:>10}{agreement:>9}  {mark}"
        )


@torch.no_grad()
def torch_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a torch model."""
    return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="teacher checkpoint (default: train one)")
    parser.add_argument("--out", type=Path, help="release directory (default: a temp dir)")
    parser.add_argument("--latency-runs", type=int, default=500)
    args = parser.parse_args()
    camera, gateway = get_profile("camera"), get_profile("gateway")
    with tempfile.TemporaryDirectory(prefix="fedge-bench-tiers-") as tmp:
        checkpoint = args.checkpoint or train_teacher(Path(tmp) / "run")
        out = args.out or Path(tmp) / "release"
        started = time.perf_counter()
        release = build_profile_release(
            checkpoint=checkpoint,
            out_dir=out,
            profiles=[camera, gateway, EVERY_TARGET],
            settings=TierSettings(latency_runs=args.latency_runs),
            progress=lambda step: print(f"  {step}", flush=True),
        )
        seconds = time.perf_counter() - started
    teacher = 100 * float(release.teacher["accuracy"])
    print()
    print_candidates(release)
    print(f"\nbuild: {seconds:.0f}s, {len(release.candidates)} candidates; teacher "
          f"{release.teacher['architecture']} {release.teacher['parameters']:,} parameters, "
          f"test accuracy {teacher:.2f}%")  # fmt: skip

    cam = release.chosen_row("camera")
    cam_points = 100 * float(cam.accuracy or 0) - teacher
    cam_ok = (
        cam.size_bytes <= BAR_CAMERA_BYTES
        and float(cam.latency_p99_ms or 1e9) <= BAR_CAMERA_P99_MS
        and cam_points >= -BAR_CAMERA_POINTS
    )
    gw = release.chosen_row("gateway")
    gw_points = 100 * float(gw.accuracy or 0) - teacher
    gw_ok = not gw.misses(gateway, MIN_AGREEMENT) and gw_points >= -BAR_GATEWAY_POINTS
    print(f"\ncamera: {cam.label}, {cam.size_bytes:,} bytes ({cam.size_bytes / 1024:.1f} KiB, bar "
          f"{BAR_CAMERA_BYTES / 1024:.0f}), p99 {_f(cam.latency_p99_ms)} ms (bar "
          f"{BAR_CAMERA_P99_MS:g}), {cam_points:+.2f} points (bar -{BAR_CAMERA_POINTS}): "
          f"{'MEETS' if cam_ok else 'MISSES'}")  # fmt: skip
    print(f"gateway: {gw.label}, {gw.size_bytes / 1024:.1f} KiB, p99 {_f(gw.latency_p99_ms)} ms, "
          f"{_f(gw.peak_memory_mb, 1)} MB, {gw_points:+.2f} points (bar -{BAR_GATEWAY_POINTS}): "
          f"{'MEETS' if gw_ok else 'MISSES'}")  # fmt: skip

    dataset = get_dataset(release.dataset)
    pruned_ok, best_pruned = False, ""
    for model_id, model in release.models.items():
        if not model_id.startswith(f"{release.teacher['architecture']}-pruned-"):
            continue
        params = sum(p.numel() for p in model.parameters())
        reduction = release.teacher["parameters"] / params
        points = 100 * torch_accuracy(model, dataset.x_test, dataset.y_test) - teacher
        ok = reduction >= BAR_PRUNED_X and points >= -BAR_PRUNED_POINTS
        print(f"pruned {model_id}: {params:,} parameters ({reduction:.1f}x fewer, bar "
              f"{BAR_PRUNED_X:g}x), torch accuracy {points:+.2f} points (bar "
              f"-{BAR_PRUNED_POINTS:g}): {'MEETS' if ok else 'misses'}")  # fmt: skip
        if ok and not pruned_ok:
            pruned_ok, best_pruned = True, f"{model_id} {reduction:.1f}x fewer, {points:+.2f}"

    print()
    engines_ok = True
    for engine in EVERY_TARGET.engines:
        rows = [r for r in release.candidates if r.engine == engine and r.status == "measured"]
        refs: list[CandidateRow] = [r for r in rows if r.model in REFERENCE_MODELS]
        ok = len(refs) == 2 * len(REFERENCE_MODELS) and all(
            float(r.agreement or 0) >= MIN_AGREEMENT for r in refs
        )
        engines_ok &= ok
        low = min(float(r.agreement or 0) for r in rows)
        print(f"{engine}: {len(rows)} artifacts, agreement with torch min {100 * low:.2f}%; "
              f"teacher and student-tiny fp32/int8 >= {100 * MIN_AGREEMENT:.1f}%: "
              f"{'MEETS' if ok else 'MISSES'}")  # fmt: skip
        for r in refs:
            print(f"  {r.model:<14}{r.precision:<6}{r.size_bytes / 1024:>10.1f} KiB  p50 "
                  f"{_f(r.latency_p50_ms)}  p99 {_f(r.latency_p99_ms)} ms  "
                  f"{100 * float(r.accuracy or 0):.2f}%  agreement "
                  f"{100 * float(r.agreement or 0):.2f}%")  # fmt: skip

    meets = cam_ok and gw_ok and pruned_ok and engines_ok
    print(
        f"\ntiers: camera {cam.label} {cam.size_bytes / 1024:.1f} KiB p99 "
        f"{_f(cam.latency_p99_ms)} ms {cam_points:+.2f} pts; gateway {gw.label} "
        f"{gw_points:+.2f} pts; pruned {best_pruned or 'none within the bar'}; engines "
        f"{', '.join(EVERY_TARGET.engines)} agree >= {100 * MIN_AGREEMENT:.1f}%: "
        f"{'MEETS' if meets else 'MISSES'} the bar"
    )
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
