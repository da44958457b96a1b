"""``fedge edge predict --state DIR INPUT...``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from fedge.cli.edge_predict import predict_command
from fedge.edge.slots import Slots, SlotState
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import linear_weights, publish_linear

app = typer.Typer()
app.command()(predict_command)
runner = CliRunner()


def test_predict_prints_labels_and_version(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "k.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    signed = publish_linear(store, tmp_path, seed=3)
    slots = Slots(tmp_path / "dev")
    store.artifacts.copy_to(signed.manifest.sha256, tmp_path / "incoming")
    slots.write_slot("a", model=tmp_path / "incoming", signed=signed)
    slots.write_state(SlotState(active="a"))
    store.close()
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    np.save(tmp_path / "batch.npy", x)
    (tmp_path / "one.json").write_text(json.dumps(x[0].tolist()))
    result = runner.invoke(
        app,
        [str(tmp_path / "batch.npy"), str(tmp_path / "one.json"), "--state", str(slots.state_dir)],
    )
    assert result.exit_code == 0, result.output
    weights, bias = linear_weights(features=16, classes=4, seed=3)
    expected = np.argmax(x @ weights + bias, axis=1)
    lines = result.output.strip().splitlines()
    assert lines == [
        f"{tmp_path / 'batch.npy'}[0]: class-{expected[0]} (release 1)",
        f"{tmp_path / 'batch.npy'}[1]: class-{expected[1]} (release 1)",
        f"{tmp_path / 'one.json'}[0]: class-{expected[0]} (release 1)",
    ]


def test_predict_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("1,2")
    np.save(tmp_path / "x.npy", np.zeros(16, dtype=np.float32))
    for args, message in [
        ([str(tmp_path / "x.npy")], "has no installed model"),
        ([str(tmp_path / "bad.txt")], "use a .npy"),
        ([str(tmp_path / "missing.npy")], "cannot read"),
    ]:
        result = runner.invoke(app, [*args, "--state", str(tmp_path / "dev")])
        assert result.exit_code == 2 and message in result.output, result.output
