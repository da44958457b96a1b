"""On-device personalisation as a user runs it: a coordinator and its devices as processes, over
TLS on loopback. A release built by ``fedge simulate`` is published; the device whose camera is
dim installs it, personalises it within its ledger and serves its personal model (its accuracy
on its own inputs rises); the devices with too little data or too little budget left keep the
release and say why; a slim device (torch cannot be imported) fits its last layer with numpy
and serves it; a personal layer that fails the health check is rolled back to the release. The
operator sees the outcomes, noised on the devices, in ``fedge fleet ls``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from fedge.app.config import RunConfig
from fedge.app.personalize import NO_BUDGET, TOO_LITTLE_DATA
from fedge.data import get_dataset
from fedge.edge.personalize import REASONS, ROLLED_BACK, load_outcome
from fedge.edge.slots import HEAD_FILE, Slots
from fedge.privacy.ledger import DeviceLedger, LedgerEntry
from fedge.release.testing import make_feature_model
from fedge.simulation import simulate
from fedge.v1 import inference_pb2, inference_pb2_grpc

from .conftest import FEDGE, FEDGE_WITHOUT_TORCH, Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DIM = 0.1
BUDGET = 8.0


@pytest.fixture(scope="module")
def simulated_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A release built by ``fedge simulate`` (digits, a student CNN exposing ``features``)."""
    run = tmp_path_factory.mktemp("personal-run")
    config = RunConfig(
        dataset="digits",
        model="cnn-small",
        clients=4,
        rounds=2,
        local_epochs=2,
        lr=0.05,
        batch_size=16,
        student="student-cnn",
        release_epochs=2,
    )
    simulate(config, out_dir=run)
    yield run / "release"


def _served_labels(port: int, x: np.ndarray) -> tuple[np.ndarray, int]:
    """The labels the device's inference server answers for ``x``, and the release version."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        tensor = inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())
        reply = stub.Predict(inference_pb2.PredictRequest(input=tensor), timeout=30)
    return np.asarray(reply.labels), int(reply.model_version)


def _write_data(cluster: Cluster, i: int, x: np.ndarray, y: np.ndarray) -> Path:
    """Device ``i``'s data directory, holding ``x`` and ``y`` (and no other metadata)."""
    folder = cluster.root / f"dev{i}" / "own-data"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", x=x.astype(np.float32), y=y)
    return folder


def _start_personalising(
    cluster: Cluster, i: int, data: Path, *, command: list[str] = FEDGE
) -> int:
    """Start device ``i`` (enrolled) personalising each release on ``data``; its inference port."""
    port = free_port()
    cluster.spawn(
        f"edge{i}", "edge", "start", "--state", f"dev{i}/state", "--data", str(data),
        "--no-train", "--personalize", "--personal-epsilon", str(BUDGET),
        "--inference", f"127.0.0.1:{port}", "--heartbeat", "0.5", "--release-interval", "1",
        command=command,
    )  # fmt: skip
    return port


def _publish(cluster: Cluster, release: Path) -> int:
    published = cluster.cli("release", "publish", str(release), "--percent", "100")
    assert published.returncode == 0, published.stderr
    return int(published.stdout.split("published release ")[1].split()[0].rstrip(":"))


def _reported(cluster: Cluster) -> dict[str, dict[str, object] | None]:
    """Each device's personalisation report as ``fedge fleet ls --json`` shows it."""
    out = cluster.cli("fleet", "ls", "--json")
    assert out.returncode == 0, out.stderr
    return {d["name"]: d["personalization"] for d in json.loads(out.stdout)}


def _release_accuracy(release: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The release's own accuracy on ``x`` and the labels it predicts."""
    session = ort.InferenceSession(str(release / "model.onnx"))
    labels = session.run(["logits"], {"input": x})[0].argmax(1)
    return float((labels == y).mean()), labels


def test_a_dim_device_personalises_its_release_and_the_fleet_sees_it(
    cluster: Cluster, simulated_release: Path
) -> None:
    cluster.start_coordinator()
    digits = get_dataset("digits")
    ports = {}
    for i, samples in ((0, len(digits.y_train)), (1, 12), (2, len(digits.y_train))):
        cluster.enroll(i, dataset="digits")
        x, y = digits.x_train[:samples] * DIM, digits.y_train[:samples]
        ports[i] = _start_personalising(cluster, i, _write_data(cluster, i, x, y))
    # Device 2 has spent most of its budget in earlier DP training: its ledger holds that.
    DeviceLedger(cluster.root / "dev2" / "state").record(LedgerEntry(2.0, 0.25, 100))
    spent = DeviceLedger(cluster.root / "dev2" / "state").epsilon(delta=1e-5)
    assert 6.5 < spent < BUDGET
    version = _publish(cluster, simulated_release)

    states = {i: cluster.root / f"dev{i}" / "state" for i in ports}
    cluster.wait_for(lambda: all(load_outcome(s) is not None for s in states.values()), 240)
    dim, few, broke = (load_outcome(states[i]) for i in range(3))
    assert dim is not None and few is not None and broke is not None
    # The dim device: DP-SGD within its ledger, served behind the guard, on top of the release.
    assert (dim.version, dim.served, dim.reason, dim.method) == (version, True, "gain", "dp-sgd")
    assert dim.epsilon is not None and 0 < dim.epsilon <= BUDGET
    assert dim.personal_accuracy > dim.global_accuracy
    slots = Slots(states[0])
    serving = slots.state().serving
    assert serving is not None and (slots.slot_dir(serving) / HEAD_FILE).is_file()
    # What its inference server answers on dim images it never trained on beats the release.
    x_test = (digits.x_test * DIM).astype(np.float32)
    global_accuracy, _ = _release_accuracy(simulated_release, x_test, digits.y_test)
    cluster.wait_for(lambda: _served_labels(ports[0], x_test[:1])[1] == version, 60)
    labels, answered = _served_labels(ports[0], x_test)
    assert answered == version
    personal_accuracy = float((labels == digits.y_test).mean())
    assert personal_accuracy > global_accuracy + 0.05, (global_accuracy, personal_accuracy)
    print(
        f"dim device: test accuracy {global_accuracy:.3f} -> {personal_accuracy:.3f}, "
        f"validation {dim.global_accuracy:.3f} -> {dim.personal_accuracy:.3f}, "
        f"epsilon {dim.epsilon:.2f} of {BUDGET}; spent ledger at {spent:.2f}"
    )
    # The devices with 12 samples and with a spent ledger keep the release and record why.
    assert (few.version, few.served, few.reason) == (version, False, TOO_LITTLE_DATA)
    assert (broke.version, broke.served, broke.reason) == (version, False, NO_BUDGET)
    assert DeviceLedger(states[2]).epsilon(delta=1e-5) == spent  # the refused fit spent nothing
    for i in (1, 2):
        kept = Slots(states[i])
        kept_slot = kept.state().serving
        assert kept_slot is not None and not (kept.slot_dir(kept_slot) / HEAD_FILE).exists()
    log = (cluster.root / "edge2.log").read_text()
    assert f"personalisation of release {version}: {NO_BUDGET}" in log, log[-2000:]

    # The operator sees the outcomes as the devices noised them, for the release they fitted.
    cluster.wait_for(lambda: all(r is not None for r in _reported(cluster).values()), 60)
    for name, report in _reported(cluster).items():
        assert report is not None and report["version"] == version, (name, report)
        assert report["reason"] in REASONS, (name, report)
    text = cluster.cli("fleet", "ls").stdout
    assert text.count(f"personal (release {version})") == 3, text


def test_a_slim_device_fits_its_last_layer_with_numpy_and_serves_it(
    cluster: Cluster, simulated_release: Path
) -> None:
    cluster.start_coordinator()
    digits = get_dataset("digits")
    cluster.enroll(0, dataset="digits", partitions=2)
    data = _write_data(cluster, 0, digits.x_train * DIM, digits.y_train)
    port = _start_personalising(cluster, 0, data, command=FEDGE_WITHOUT_TORCH)
    device = cluster.procs["edge0"]
    version = _publish(cluster, simulated_release)

    state = cluster.root / "dev0" / "state"
    cluster.wait_for(lambda: load_outcome(state) is not None, 120)
    outcome = load_outcome(state)
    assert outcome is not None
    assert (outcome.version, outcome.served, outcome.reason) == (version, True, "gain")
    assert outcome.method == "numpy" and outcome.epsilon is None  # no accountant without torch
    maps = Path(f"/proc/{device.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps  # torch never loaded
    # It serves the personal layer: its answers differ from the release's and are better.
    x_test = (digits.x_test * DIM).astype(np.float32)
    global_accuracy, release_labels = _release_accuracy(simulated_release, x_test, digits.y_test)
    cluster.wait_for(lambda: _served_labels(port, x_test[:1])[1] == version, 60)

    def served() -> np.ndarray:
        return _served_labels(port, x_test)[0]

    cluster.wait_for(lambda: bool((served() != release_labels).any()), 30)
    personal_accuracy = float((served() == digits.y_test).mean())
    changed = float((served() != release_labels).mean())
    print(
        f"slim device: test accuracy {global_accuracy:.3f} -> {personal_accuracy:.3f} "
        f"({changed:.0%} of answers changed), validation {outcome.global_accuracy:.3f} -> "
        f"{outcome.personal_accuracy:.3f}"
    )
    assert personal_accuracy > global_accuracy + 0.05, (global_accuracy, personal_accuracy)
    assert "Traceback" not in (cluster.root / "edge0.log").read_text()


def test_a_personal_layer_failing_the_health_check_rolls_back_to_the_release(
    cluster: Cluster,
) -> None:
    # The release's features are NaN on inputs holding a negative value, which this device's
    # data (a sensor reading magnitudes) never holds: the fit and the guard see nothing wrong,
    # the release's own logits pass their health check, the personal layer's do not.
    release = cluster.root / "release"
    model = make_feature_model(release / "model.onnx", seed=0, poison="features")
    rng = np.random.default_rng(7)
    x = np.abs(rng.standard_normal((600, 16))).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(["logits"], {"x": x})[0].argmax(1)
    cluster.start_coordinator()
    cluster.enroll(0, dataset="digits", partitions=2)
    port = _start_personalising(cluster, 0, _write_data(cluster, 0, x * DIM, y))
    version = _publish(cluster, release)

    state = cluster.root / "dev0" / "state"
    cluster.wait_for(lambda: load_outcome(state) is not None, 120)
    outcome = load_outcome(state)
    assert outcome is not None and outcome.version == version and not outcome.served
    reason = f"{ROLLED_BACK}: health check failed: output 'logits' is not finite on canary inputs"
    assert outcome.reason == reason, outcome
    assert outcome.personal_accuracy > outcome.global_accuracy  # the guard alone would serve it
    slots = Slots(state)
    serving = slots.state().serving
    assert serving is not None and not slots.state().trial
    assert not (slots.slot_dir(serving) / HEAD_FILE).exists()
    # It serves the release as delivered, finite and unchanged.
    release_labels = ort.InferenceSession(str(model)).run(["logits"], {"x": x * DIM})[0].argmax(1)
    cluster.wait_for(lambda: _served_labels(port, x[:1] * DIM)[1] == version, 60)
    labels, _ = _served_labels(port, x * DIM)
    assert (labels == release_labels).all()
    print(
        f"rolled back: validation {outcome.global_accuracy:.3f} -> "
        f"{outcome.personal_accuracy:.3f} not served"
    )
    # The device says why, in its log and (noised) to the operator.
    log = (cluster.root / "edge0.log").read_text()
    assert f"personalisation of release {version}: {reason}" in log, log[-2000:]
    cluster.wait_for(lambda: _reported(cluster)["device-0"] is not None, 60)
    report = _reported(cluster)["device-0"]
    assert report is not None and report["version"] == version and report["reason"] in REASONS
