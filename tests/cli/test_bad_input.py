"""Bad input an operator or a device owner meets first: one line naming it, exit 2, nothing made.

No coordinator is needed for any of these: each is refused before anything is contacted or
written (no state directory, no key, no spent token).
"""

import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fedge.cli.main import app

runner = CliRunner()
TOKEN = "fedge1.secret." + "0" * 64


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _camera_dir(root: Path, bad: str) -> Path:
    """A camera's data dir of 28x28 grey digits, with one bad file of kind ``bad``."""
    labels = root / "data" / "images" / "3"
    labels.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(labels / f"{i}.png")
    path = labels / "bad.png"
    if bad == "size":
        Image.fromarray(np.zeros((40, 32), dtype=np.uint8)).save(path)
    elif bad == "rgb":
        Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(path)
    else:
        path.write_text("not an image at all")
    return root / "data"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "size",
            "bad.png: image is 32x40 pixels with 1 channel, expected 28x28 pixels with 1 channel",
        ),
        ("rgb", "bad.png: image is 28x28 pixels with 3 channels, expected 28x28 pixels"),
        ("text", "bad.png: not a readable image"),
    ],
)
def test_a_bad_image_names_its_file_before_a_token_is_spent(
    tmp_path: Path, bad: str, message: str
) -> None:
    data = _camera_dir(tmp_path, bad)
    code, out = _invoke(
        *("edge", "start", "--state", str(tmp_path / "state"), "--data", str(data)),
        *("--coordinator", "127.0.0.1:1", "--token", TOKEN),
    )
    assert code == 2, out
    assert message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()


def _coordinator_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text("[coordinator]\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('address = "127.0.0.1:notaport"\n', "address: '127.0.0.1:notaport' must be HOST:PORT"),
        ('heartbeat-seconds = "5"\n', "heartbeat-seconds: '5' must be a number"),
        ("max-attempts = 2.5\n", "max-attempts: 2.5 must be an integer"),
        ("insecure = 1\n", "insecure: 1 must be true or false"),
        ("state-dir = 3\n", "state-dir: 3 must be a string"),
        ("prot = 1\n", "valid: address, certs-dir, chunk-bytes"),
    ],
)
def test_a_bad_coordinator_config_is_one_line_and_makes_no_state(
    tmp_path: Path, body: str, message: str
) -> None:
    config = _coordinator_toml(
        tmp_path, body + 'state-dir = "coordinator-state"\n' * ("state-dir" not in body)
    )
    code, out = _invoke("coordinator", "start", "--config", str(config))
    assert code == 2, out
    assert message in out and str(config) in out and "Traceback" not in out
    assert not (tmp_path / "coordinator-state").exists()


def test_a_coordinator_on_a_port_in_use_exits_2_and_makes_no_state(tmp_path: Path) -> None:
    from fedge.coordinator.pki import init_certs

    init_certs(tmp_path / "certs", hosts=("127.0.0.1",))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _coordinator_toml(
            tmp_path,
            f'address = "127.0.0.1:{port}"\nenroll-address = "127.0.0.1:0"\n'
            'state-dir = "coordinator-state"\ncerts-dir = "certs"\n',
        )
        code, out = _invoke("coordinator", "start", "--config", str(config))
    assert code == 2, out
    assert f"cannot listen on 127.0.0.1:{port}: address in use" in out
    assert not (tmp_path / "coordinator-state").exists()


def test_an_enrolled_state_dir_is_not_replaced_without_force(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "identity.json").write_text(
        '{"device_id": "dev-1", "node_id": 1, "coordinator": "127.0.0.1:1", "insecure": false,'
        ' "state_dir": "x"}'
    )
    (state / "device.key").write_text("the device's key")
    code, out = _invoke(
        "edge", "enroll", "--coordinator", "127.0.0.1:1", "--token", TOKEN, "--state", str(state)
    )
    assert code == 2 and "already enrolled as dev-1; pass --force" in out, out
    assert (state / "device.key").read_text() == "the device's key"


def test_predict_states_what_it_takes_and_makes_no_slots(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(16, dtype=np.float32))
    code, out = _invoke(
        "edge", "predict", "--state", str(tmp_path / "nowhere"), str(tmp_path / "x.npy")
    )
    assert code == 2 and "has no installed model" in out
    assert not (tmp_path / "nowhere").exists()
    help_text = runner.invoke(app, ["edge", "predict", "--help"], env={"COLUMNS": "200"}).output
    assert ".npy" in help_text and ".npz" in help_text and ".json" in help_text


def test_privacy_report_needs_a_run_id_or_a_run_directory(tmp_path: Path) -> None:
    code, out = _invoke("privacy", "report", str(tmp_path / "nope"))
    assert code == 2 and "neither a run id nor a directory" in out


def _damaged_checkpoint(root: Path, damage: str) -> Path:
    """A real fedge checkpoint of a small model, then damaged as ``damage`` says."""
    from fedge.app.checkpoint import Checkpoint, save_checkpoint
    from fedge.models import get_model

    model = get_model("mlp", input_shape=(64,), num_classes=10)
    path = root / "runs" / "model.pt"
    save_checkpoint(
        path,
        Checkpoint(
            model="mlp", input_shape=(64,), num_classes=10, dataset="digits", server_round=1,
            state_dict=model.state_dict(), config={},
        ),
    )  # fmt: skip
    whole = path.read_bytes()
    damaged = {
        "truncated": whole[: len(whole) // 2],
        "empty": b"",
        "text": b"model weights, honest\n",
        "pickle": pickle.dumps({"format": "fedge-checkpoint"}),
    }[damage]
    path.write_bytes(damaged)
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "is truncated or corrupt"),
        ("empty", "is empty"),
        ("text", "is not a fedge checkpoint (not a PyTorch archive)"),
        ("pickle", "is not a fedge checkpoint (not a PyTorch archive)"),
    ],
)
@pytest.mark.parametrize("profile", [[], ["--profile", "camera"]], ids=["student", "profile"])
def test_a_damaged_checkpoint_is_one_line_naming_it(
    tmp_path: Path, damage: str, message: str, profile: list[str]
) -> None:
    checkpoint = _damaged_checkpoint(tmp_path, damage)
    out_dir = tmp_path / "release"
    code, out = _invoke(
        "release", "build", "--checkpoint", str(checkpoint), "--out", str(out_dir), *profile
    )
    assert code == 2, out
    (line,) = [line for line in out.splitlines() if line.startswith("Error:")]
    assert str(checkpoint) in line and message in line, out
    assert "Traceback" not in out and "issue" not in out and "weights_only" not in out
    assert not out_dir.exists()
