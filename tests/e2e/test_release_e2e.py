"""The README's "Deploy" → "Ship models" sequence, end to end, as an operator elsewhere runs it.

A coordinator and three camera devices (image data) on loopback, TLS on. Every operator command
runs from a directory that is not the coordinator's, through the control service: train, publish
the run's release to everyone, train again, publish that release to a 34% canary (exactly one
device), promote it to 100%, roll it back. ``fedge release status`` and ``fedge fleet ls`` show
each step, every device runs a verified model throughout, and ``fedge edge predict`` answers from
the new slot.
"""

import json
import re

import numpy as np
import pytest

from fedge.edge.slots import Slots
from fedge.protocol.manifest import load_public_key
from fedge.v1 import control_pb2 as pb

from .conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = ["--dataset", "mnist-5k", "--model", "cnn-small", "--clients", "3", "--rounds", "1"]


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


def test_deploy_then_ship_models_from_another_directory(cluster: Cluster) -> None:
    operator = cluster.root / "operator-laptop"
    operator.mkdir()

    def ok(*args: str, timeout: float = 300) -> str:
        out = cluster.cli(*args, timeout=timeout, cwd=operator)
        assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
        return out.stdout

    def status(version: int) -> dict[str, int]:
        text = ok("release", "status", str(version))
        return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", text.split(":", 1)[1])}

    cluster.start_coordinator()
    for i in range(3):
        cluster.enroll(i, fmt="images")
        cluster.spawn(
            f"edge{i}",
            "edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data",
            "--wait", "2", "--heartbeat", "0.5", "--release-interval", "1",
        )  # fmt: skip
    assert "no releases yet" in ok("release", "ls")

    # Deploy: train; the completed run builds its release.
    ok("run", "start", *RUN, "--set", "release-epochs=1")
    reply = cluster.wait_run_done(timeout=300)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    assert any(e.kind == "release" and "built" in e.message for e in reply.events)

    # Ship: release 1, the run's release, to everyone.
    assert "published release 1" in ok("release", "publish", "--run", "1", "--percent", "100")
    cluster.wait_for(lambda: _versions(cluster) == [1, 1, 1], 90)
    cluster.wait_for(lambda: status(1)["installed"] == 3, 30)
    fleet = json.loads(ok("fleet", "ls", "--json"))
    cluster.wait_for(
        lambda: all(d["release_version"] == 1 for d in json.loads(ok("fleet", "ls", "--json"))), 30
    )
    assert all(d["can_train"] and d["release_slot"] in ("a", "b") for d in fleet)

    # A second run; its release to 34%: exactly one canary.
    ok("run", "start", *RUN, "--seed", "1", "--set", "release-epochs=1")
    reply = cluster.wait_run_done(timeout=300)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    ok("release", "publish", "--run", str(reply.run.run_id), "--percent", "34")
    cluster.wait_for(lambda: sorted(_versions(cluster)) == [1, 1, 2], 90)
    cluster.wait_for(lambda: status(2)["installed"] == 1, 30)
    canary = _versions(cluster).index(2)

    # Promote to 100%: all three, the canary untouched.
    ok("release", "promote", "2", "--percent", "100")
    cluster.wait_for(lambda: _versions(cluster) == [2, 2, 2], 90)
    cluster.wait_for(lambda: status(2)["installed"] == 3, 30)

    # Roll back: release 3 re-ships release 1's bytes, so rollback protection holds.
    assert "rolled back release 2: release 3" in ok("release", "rollback")
    cluster.wait_for(lambda: _versions(cluster) == [3, 3, 3], 90)
    cluster.wait_for(lambda: status(3)["installed"] == 3, 30)
    cluster.wait_for(lambda: status(3)["running"] == 3, 30)
    assert status(2)["running"] == 0
    listing = ok("release", "ls")
    assert "withdrawn" in listing and "rollback of 2" in listing

    # Local inference answers from the rolled-back model.
    np.save(operator / "x.npy", np.zeros((1, 1, 28, 28), dtype=np.float32))
    state = cluster.root / f"dev{canary}" / "state"
    out = ok("edge", "predict", "--state", str(state), "x.npy")
    assert "(release 3)" in out

    # Nothing was made where the operator stands, and no credential means no answer.
    assert sorted(p.name for p in operator.iterdir()) == ["x.npy"]
    env = {k: v for k, v in cluster.env.items() if k not in ("FEDGE_OPERATOR", "FEDGE_COORDINATOR")}
    without = cluster.cli("release", "ls", "--coordinator", cluster.address, cwd=operator, env=env)
    assert without.returncode == 2 and "--operator" in without.stderr, without.stderr
    assert "Traceback" not in without.stderr
    assert sorted(p.name for p in operator.iterdir()) == ["x.npy"]
