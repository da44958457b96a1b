"""Flag the test series on a device, from its deployed model: F1 against the labelled anomaly.

``python flag.py --state sensor-0/state`` cuts the readings after the normal training series
into the test windows (as long as the installed release's windows, every ``stride`` readings
of its spec: the task's test split), writes each as a raw CSV file of the series' rows, and
asks ``fedge edge predict`` on that device's state directory for their flags: the release's
signed preprocessing standardises each window and its int8 graph holds the threshold, so the
device needs neither torch nor this task's code. It prints how many windows were flagged and
the precision, recall and F1 of the flags against the windows' labels (a window is anomalous
when it holds an anomalous reading).
"""

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from fedge.edge.slots import POINTER_FILE, Slots

__all__ = ["flag_on_device", "flag_scores", "write_test_windows"]

DATA = Path(__file__).resolve().parent / "data"
SERIES = "135_UCR_Anomaly_InternalBleeding16"
#: ``fedge edge predict``'s line per sample: ``PATH[ROW]: LABEL (release VERSION)``.
PREDICTION = re.compile(r"^(?P<path>.+)\[0\]: (?P<label>\S+) \(release (?P<version>\d+)\)$")


def write_test_windows(out: Path, window: int, stride: int) -> dict[Path, bool]:
    """Each test window (``window`` readings every ``stride`` after the normal training series)
    as a raw CSV of the series' rows under ``out``, and whether it holds an anomalous reading."""
    out.mkdir(parents=True, exist_ok=True)
    with (DATA / f"{SERIES}_TRAIN.csv").open(newline="") as file:
        first = sum(1 for _ in csv.DictReader(file))
    with (DATA / f"{SERIES}_TEST.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    windows = {}
    for start in range(first, len(rows) - window + 1, stride):
        target = out / f"window-{start:05d}.csv"
        with target.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[start : start + window])
        windows[target] = any(row["is_anomaly"] == "1" for row in rows[start : start + window])
    return windows


def flag_on_device(state: Path | str, workdir: Path) -> tuple[dict[str, float], int]:
    """The device's flags on every test window (through ``fedge edge predict``), scored: the
    figures of :func:`flag_scores` and the release version that answered."""
    state = Path(state)
    if not (state / POINTER_FILE).is_file():  # Slots() would make slot folders in a wrong dir
        raise SystemExit(f"--state: {state} has no installed release (no {POINTER_FILE})")
    slots = Slots(state)
    signed = slots.signed_manifest(slots.state().serving or "a")
    if signed is None:
        raise SystemExit(f"--state: {state} serves no signed release")
    spec = signed.manifest.report["preprocessing"]["spec"]
    windows = write_test_windows(workdir, int(spec["window"]), int(spec["stride"]))
    proc = subprocess.run(
        [sys.executable, "-m", "fedge.cli", "edge", "predict", "--state", str(state)]
        + [str(path) for path in windows],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"fedge edge predict failed: {proc.stderr.strip()}")
    answers = {}
    versions = set()
    for line in proc.stdout.splitlines():
        match = PREDICTION.match(line.strip())
        if match:
            answers[Path(match["path"])] = match["label"] == "anomaly"
            versions.add(int(match["version"]))
    if set(answers) != set(windows) or len(versions) != 1:
        raise SystemExit(f"fedge edge predict answered {len(answers)} of {len(windows)} windows")
    paths = sorted(windows)
    flags = np.array([answers[p] for p in paths])
    truth = np.array([windows[p] for p in paths])
    return flag_scores(flags, truth), versions.pop()


def flag_scores(flags: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Windows, flagged windows, precision, recall and F1 of ``flags`` against ``truth``."""
    tp = int((flags & truth).sum())
    precision = tp / int(flags.sum()) if flags.any() else 0.0
    recall = tp / int(truth.sum()) if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "windows": len(flags),
        "flagged": int(flags.sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def main() -> None:
    """Print the device's flags on the test series, scored."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="the device's state dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        scores, version = flag_on_device(args.state, Path(workdir))
    print(
        f"release {version}: {scores['flagged']} of {scores['windows']} windows flagged; "
        f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
        f"F1 {scores['f1']:.3f}"
    )


if __name__ == "__main__":
    main()
