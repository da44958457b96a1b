"""Data only, no code: a CSV with a label and a site column trains a tabular model per site,
within 3 points of a centralised logistic regression on the same split."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from fedge.data import read_data

FEDGE = [sys.executable, "-m", "fedge.cli"]


def _records(path: Path) -> None:
    """Breast-cancer records of three hospitals with a categorical and a missing field."""
    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(0)
    frame["site"] = np.where(
        frame["mean radius"] > 14, "north", np.where(frame["mean texture"] > 19, "south", "east")
    )
    frame["smoker"] = rng.choice(["yes", "no"], len(frame))
    frame.loc[rng.random(len(frame)) < 0.05, "mean area"] = np.nan
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    frame.to_csv(path, index=False)


def test_a_csv_with_a_site_column_trains_with_no_code(tmp_path: Path) -> None:
    _records(tmp_path / "records.csv")
    proc = subprocess.run(
        [
            *FEDGE,
            "simulate",
            "--data",
            "records.csv",
            "--label",
            "diagnosis",
            "--partition",
            "by:site",
            "--clients",
            "3",
            "--rounds",
            "10",
            "--no-release",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "runs/latest/results.json").read_text())
    assert results["config"]["model"] == "mlp" and results["task"]["name"] == "records"
    data = read_data(tmp_path / "records.csv", label="diagnosis", group="site").dataset
    central = LogisticRegression(max_iter=5000).fit(data.x_train, data.y_train)
    reference = central.score(data.x_test, data.y_test)
    assert results["final"]["accuracy"] >= reference - 0.03, (results["final"], reference)


def test_bad_data_is_one_line(tmp_path: Path) -> None:
    _records(tmp_path / "records.csv")
    table = pd.read_csv(tmp_path / "records.csv")
    cases = {
        ("--label", "outcome"): "no label column 'outcome'",
        ("--partition", "by:ward"): "ward",
    }
    for (flag, value), message in cases.items():
        args = ["--label", "diagnosis", flag, value] if flag != "--label" else [flag, value]
        proc = subprocess.run(
            [*FEDGE, "simulate", "--data", "records.csv", *args, "--clients", "3", "--out", "o"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert not (tmp_path / "o").exists()
    table["notes"] = [f"free text {i}" for i in range(len(table))]
    table.to_csv(tmp_path / "notes.csv", index=False)
    proc = subprocess.run(
        [*FEDGE, "simulate", "--data", "notes.csv", "--label", "diagnosis", "--out", "o"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and "notes" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
