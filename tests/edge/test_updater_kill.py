"""SIGKILL at random points of an install: after restart the device always runs a good model.

The install runs in a real child process (this file run as a script) against a real hub served
from the test process. The child is killed with SIGKILL either by itself at a chosen phase of the
install (deterministic coverage of every step) or by the test after a random delay. Start-up
recovery then runs in a fresh updater, and the device must serve a verified, healthy model;
a further update check must converge on the newest good release.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedge.coordinator.hub import serve_hub
from fedge.edge.health import HealthConfig, check_health
from fedge.edge.hub_client import GrpcHubClient
from fedge.edge.identity import pin_release_key
from fedge.edge.updater import Updater
from fedge.protocol.manifest import public_key_pem
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import publish_linear

FEATURES, CLASSES = 256, 32
PHASES = ["chunk", "downloaded", "verified", "slot_written", "switched", "health_checked"]


def _updater(state: Path, port: int, **kwargs: object) -> tuple[Updater, grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = GrpcHubClient(channel, timeout=10, chunk_size=4096)
    return Updater(state_dir=state, hub=client, device_id="dev", **kwargs), channel  # type: ignore[arg-type]


def child_main(state: str, port: str, phase: str, nth: str) -> None:
    """Recover, then install; SIGKILL ourselves at the ``nth`` occurrence of ``phase``."""
    seen = {"n": 0}

    def on_phase(name: str) -> None:
        if name == phase:
            seen["n"] += 1
            if seen["n"] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    updater, _channel = _updater(Path(state), int(port), on_phase=on_phase)
    updater.recover()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    updater.check_once()
    sys.stdout.write("done\n")
    sys.stdout.flush()


@dataclass
class Fleet:
    tmp: Path
    store: ReleaseStore
    port: int
    baseline: Path  # a device state directory running release 1
    good: int  # the newest good release


def _make_fleet(tmp: Path, poison: str | None) -> tuple[Fleet, grpc.Server]:
    key = generate_release_key(path=tmp / "release.pem")
    store = ReleaseStore(root=tmp / "store", key=key)
    server, port = serve_hub(store)
    v1 = publish_linear(store, tmp, seed=1, features=FEATURES, classes=CLASSES)
    baseline = tmp / "baseline"
    pin_release_key(baseline, public_key_pem(key.public_key()))
    updater, channel = _updater(baseline, port)
    assert updater.check_once() is not None
    channel.close()
    v2 = publish_linear(store, tmp, seed=2, features=FEATURES, classes=CLASSES, poison=poison)
    good = v1 if poison else v2
    return Fleet(tmp, store, port, baseline, good.manifest.version), server


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Devices on release 1; release 2 is good."""
    made, server = _make_fleet(tmp_path_factory.mktemp("kill"), poison=None)
    yield made
    server.stop(grace=None)
    made.store.close()


@pytest.fixture(scope="module")
def bad_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Devices on release 1; release 2 fails its health check (NaN outputs)."""
    made, server = _make_fleet(tmp_path_factory.mktemp("kill-bad"), poison="nan")
    yield made
    server.stop(grace=None)
    made.store.close()


def _run_child(state: Path, port: int, phase: str, nth: int, delay: float | None) -> int:
    """Run an install in a child; kill it after ``delay`` s if given. Returns its exit code."""
    cmd = [sys.executable, __file__, str(state), str(port), phase, str(nth)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if delay is not None:
            assert proc.stdout.readline() == "ready\n"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_good_after_recovery(fleet: Fleet, state: Path, allowed: set[int]) -> int:
    updater, channel = _updater(state, fleet.port)
    try:
        updater.recover()
        slots = updater.slots.state()
        assert not slots.trial and slots.serving is not None, slots
        manifest = updater.slots.verify_slot(slots.serving, public_key=updater.public_key)
        assert manifest.version in allowed
        model = updater.slots.model_path(slots.serving)
        assert check_health(model, manifest, config=HealthConfig()).ok
        # The device converges on the newest good release.
        updater.check_once()
        assert updater.active_version() == fleet.good
        return manifest.version
    finally:
        channel.close()


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_at_each_install_phase(fleet: Fleet, phase: str) -> None:
    rng = random.Random(phase)
    for trial in range(2):
        state = fleet.tmp / f"phase-{phase}-{trial}"
        shutil.copytree(fleet.baseline, state)
        nth = rng.randint(1, 8) if phase == "chunk" else 1
        code = _run_child(state, fleet.port, phase, nth, delay=None)
        assert code == -signal.SIGKILL, f"child was not killed at {phase} (exit {code})"
        _assert_good_after_recovery(fleet, state, allowed={1, fleet.good})


def _install_seconds(fleet: Fleet) -> float:
    """How long an uninterrupted install takes in a child, from "ready" to "done"."""
    state = fleet.tmp / "timing"
    shutil.copytree(fleet.baseline, state)
    cmd = [sys.executable, __file__, str(state), str(fleet.port), "none", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        start = time.monotonic()
        assert proc.stdout.readline() == "done\n"
        return time.monotonic() - start
    finally:
        proc.wait(timeout=60)


def test_sigkill_at_random_times(fleet: Fleet) -> None:
    rng = random.Random(0)
    window = _install_seconds(fleet)  # kill somewhere inside a typical install
    killed = 0
    for trial in range(12):
        state = fleet.tmp / f"random-{trial}"
        shutil.copytree(fleet.baseline, state)
        code = _run_child(state, fleet.port, "none", 0, delay=rng.uniform(0.0, 0.9 * window))
        killed += code == -signal.SIGKILL
        _assert_good_after_recovery(fleet, state, allowed={1, fleet.good})
    assert killed >= 4  # most kills landed while the child was still installing


@pytest.mark.parametrize("phase", ["switched", "health_checked", "reverted"])
def test_sigkill_while_a_failing_model_is_checked_or_reverted(bad_fleet: Fleet, phase: str) -> None:
    for trial in range(2):
        state = bad_fleet.tmp / f"bad-{phase}-{trial}"
        shutil.copytree(bad_fleet.baseline, state)
        code = _run_child(state, bad_fleet.port, phase, 1, delay=None)
        assert code == -signal.SIGKILL, f"child was not killed at {phase} (exit {code})"
        assert _assert_good_after_recovery(bad_fleet, state, allowed={1}) == 1


if __name__ == "__main__":
    child_main(*sys.argv[1:5])
