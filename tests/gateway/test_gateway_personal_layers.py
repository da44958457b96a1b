"""FedBN in a coordinator run, directly and through a site gateway: each device keeps its own
normalisation layers in its state directory from round to round, and they never reach the
global model. One device of the cloud and two of the site, one of them with a dim camera."""

import json
import math
from pathlib import Path

import numpy as np

from fedge.app.checkpoint import load_checkpoint
from fedge.app.config import RunConfig
from fedge.app.personalize import personal_keys, personal_layers_file
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.models import get_model
from fedge.v1 import control_pb2 as pb

from .conftest import SITE, Site, wait_for

ROUNDS = 2
RUN = {
    "dataset": "digits",
    "model": "cnn-bn",
    "strategy": "fedbn",
    "clients": 3,
    "rounds": ROUNDS,
    "local-epochs": 1,
    "release": False,
    "seed": 0,
}
DIM = 0.2


def _device_data(root: Path, name: str, partition: int, keep: int, dim: float = 1.0) -> Path:
    """Partition ``partition`` of 3 of digits, its first ``keep`` samples, at ``dim`` brightness."""
    data = root / f"{name}-data"
    write_device_data(
        data,
        DeviceDataSpec(dataset="digits", partition_id=partition, num_partitions=3, format="npz"),
    )
    with np.load(data / "data.npz") as arrays:
        x, y = arrays["x"][:keep] * dim, arrays["y"][:keep]
    np.savez(data / "data.npz", x=x.astype(np.float32), y=y)
    return data


def test_fedbn_keeps_each_devices_norm_layers_on_the_device_across_rounds(site: Site) -> None:
    config = RunConfig.from_mapping(RUN)
    sizes = {"cloud-cam": 300, "cam-0": 200, "cam-1": 120}
    dims = {"cloud-cam": 1.0, "cam-0": 1.0, "cam-1": DIM}
    states: dict[str, Path] = {}
    for partition, name in enumerate(sizes):
        data = _device_data(site.root, name, partition, sizes[name], dims[name])
        identity = site.fleet.trainer(name) if name == "cloud-cam" else site.enroll(name)
        site.run_device(identity, data, reconnect_wait=2.0)
        states[name] = Path(identity.state_dir)
    control = site.fleet.control_stub()

    def idle() -> int:
        rows = control.ListDevices(pb.ListDevicesRequest()).devices
        return sum(d.state == "idle" for d in rows if d.kind == "device")

    wait_for(lambda: idle() == 3, 30, "three devices")
    run_id = control.StartRun(
        pb.StartRunRequest(config_json=json.dumps(RUN)), timeout=30
    ).run.run_id
    done = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_STOPPED)
    wait_for(
        lambda: control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state in done, 120, "the run"
    )
    reply = control.GetRun(pb.GetRunRequest(run_id=run_id))
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    assert [sorted((s.site, s.replies) for s in r.sites) for r in reply.rounds] == [
        [("", 1), (SITE, 1)]
    ] * ROUNDS  # the cloud's device directly, the site's two through their gateway

    # After the rounds every device, the site's through their gateway, reports its accuracy
    # with its own layers against the global model's.
    results = control.GetRunResults(pb.GetRunResultsRequest(run_id=run_id), timeout=30)
    report = json.loads(results.results_json)["personalization"]
    assert (report["devices"], report["strategy"]) == (3, "fedbn"), report

    (last,) = site.root.glob(f"state/runs/run-{run_id:05d}/checkpoints/round-{ROUNDS:04d}.pt")
    global_model = load_checkpoint(last).state_dict
    model = get_model("cnn-bn", input_shape=(1, 8, 8), num_classes=10)
    norm_layers = personal_keys(model, "fedbn")
    assert norm_layers and len(norm_layers) < len(model.state_dict())
    own: dict[str, dict[str, np.ndarray]] = {}
    for name, state in states.items():
        kept = personal_layers_file({"state-dir": str(state)}, run_id)
        assert kept is not None and kept.is_file(), name
        with np.load(kept) as arrays:
            own[name] = {k: arrays[k] for k in arrays.files}
        # Only the normalisation layers stay on the device.
        assert sorted(own[name]) == sorted(norm_layers), name
        # Its batch counter kept counting from its own layers, round after round: the global
        # model's counter (a mean over devices of different sizes) would give another count.
        per_round = config.local_epochs * math.ceil(sizes[name] / config.batch_size)
        assert int(own[name]["features.1.num_batches_tracked"]) == ROUNDS * per_round, name
        assert int(global_model["features.1.num_batches_tracked"]) != ROUNDS * per_round
    # The global model's statistics are none of the devices': each keeps its own, and the dim
    # camera's are its own dim ones.
    means = {name: layers["features.1.running_mean"] for name, layers in own.items()}
    global_mean = global_model["features.1.running_mean"].numpy()
    for name, mean in means.items():
        assert not np.allclose(mean, global_mean, atol=1e-4), name
    assert np.abs(means["cam-1"]).mean() < np.abs(means["cam-0"]).mean()
    print(
        "fedbn: mean |BN running mean| "
        + ", ".join(f"{n} {np.abs(m).mean():.3f}" for n, m in means.items())
        + f", global {np.abs(global_mean).mean():.3f}; accuracy {reply.rounds[-1].accuracy:.3f}"
    )
