"""Over-the-air delivery end to end: a coordinator and three devices on loopback, TLS on.

Train, build two releases, publish the first to everyone, publish the second to 34% (exactly
one device), promote it to 100%, roll it back; ``fedge release status`` shows each step, every
device runs a verified model throughout, and ``fedge edge predict`` answers from the new slot.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from fedge.edge.slots import Slots
from fedge.protocol.manifest import load_public_key
from fedge.v1 import control_pb2 as pb

from .conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = ["--dataset", "mnist-5k", "--model", "cnn-small", "--clients", "3", "--seed", "0"]


def _versions(cluster: Cluster) -> list[int]:
    """The committed, verified release version of each device (0 = none)."""
    versions = []
    for i in range(3):
        state = cluster.root / f"dev{i}" / "state"
        slots = Slots(state)
        serving = slots.state().serving
        key_file = state / "release_key.pub"
        if serving is None or not key_file.is_file():
            versions.append(0)
            continue
        key = load_public_key(pem=key_file.read_bytes())
        versions.append(slots.verify_slot(serving, public_key=key).version)
    return versions


def _status(cluster: Cluster, version: int) -> dict[str, int]:
    out = cluster.cli("release", "status", str(version))
    assert out.returncode == 0, out.stderr
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", out.stdout.split(":", 1)[1])}


def _cli_ok(cluster: Cluster, *args: str, timeout: float = 300) -> str:
    out = cluster.cli(*args, timeout=timeout)
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return out.stdout


def test_publish_canary_promote_rollback(cluster: Cluster) -> None:
    cluster.start_coordinator()
    for i in range(3):
        cluster.enroll(i)
        cluster.spawn(
            f"edge{i}",
            "edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data",
            "--wait", "2", "--heartbeat", "0.5", "--release-interval", "1",
        )  # fmt: skip
    _cli_ok(cluster, "run", "start", *RUN, "--rounds", "1")
    reply = cluster.wait_run_done(timeout=240)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    checkpoint = next((cluster.root / "state" / "runs").glob("run-*/model.pt"))
    for seed in ("0", "1"):
        _cli_ok(
            cluster, "release", "build", "--checkpoint", str(checkpoint), "--out",
            f"build{seed}", "--epochs", "1", "--seed", seed,
        )  # fmt: skip

    # Release 1 to everyone: the baseline.
    assert "release 1" in _cli_ok(cluster, "release", "publish", "build0", "--percent", "100")
    cluster.wait_for(lambda: _versions(cluster) == [1, 1, 1], 90)
    cluster.wait_for(lambda: _status(cluster, 1)["installed"] == 3, 30)

    # Release 2 to 34%: exactly one canary.
    _cli_ok(cluster, "release", "publish", "build1", "--percent", "34")
    cluster.wait_for(lambda: sorted(_versions(cluster)) == [1, 1, 2], 90)
    cluster.wait_for(lambda: _status(cluster, 2)["installed"] == 1, 30)
    canary = _versions(cluster).index(2)

    # Promote to 100%: all three, the canary untouched.
    _cli_ok(cluster, "release", "promote", "2", "--percent", "100")
    cluster.wait_for(lambda: _versions(cluster) == [2, 2, 2], 90)
    cluster.wait_for(lambda: _status(cluster, 2)["installed"] == 3, 30)

    # Roll back: release 3 re-ships release 1's bytes, so rollback protection holds.
    out = _cli_ok(cluster, "release", "rollback")
    assert "rolled back release 2: release 3" in out
    cluster.wait_for(lambda: _versions(cluster) == [3, 3, 3], 90)
    cluster.wait_for(lambda: _status(cluster, 3)["installed"] == 3, 30)
    cluster.wait_for(lambda: _status(cluster, 3)["running"] == 3, 30)
    assert _status(cluster, 2)["running"] == 0
    listing = _cli_ok(cluster, "release", "ls")
    assert "withdrawn" in listing and "rollback of 2" in listing

    # Local inference answers from the rolled-back model.
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    np.save(cluster.root / "x.npy", x)
    out = _cli_ok(cluster, "edge", "predict", "--state", f"dev{canary}/state", "x.npy")
    assert "(release 3)" in out
    assert Path(cluster.root / f"dev{canary}" / "state" / "slots.json").is_file()
