"""A device from ``pip install fedge`` with no extras: no torch, no Flower, no server.

A fresh virtual environment gets the checkout without extras. Its device enrols with a
coordinator from the full install (mutual TLS), is listed as inference-only, installs a
published release and answers ``fedge edge predict`` and its gRPC inference server; training
tasks never reach it. The install's size (fedge and its dependencies, without pip) and the
device process's peak memory after installing a release and serving 200 predictions are
measured against their bars.

What it needs, and fails (never skips) without: ``python -m venv`` (Debian's ``python3-venv``);
pip 22.3 or later in the Python running the tests (``pip --python`` installs into the device's
environment); that pip able to reach a package index for the device's dependencies at the
versions in ``constraints.txt`` (the default index, or ``PIP_INDEX_URL`` / ``PIP_FIND_LINKS``
naming a mirror or a wheelhouse); about 300 MB of disk under the temporary directory; and a few
minutes for the first install (pip's cache makes later ones faster).
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.release.testing import linear_weights, make_linear_model
from fedge.v1 import control_pb2 as pb
from fedge.v1 import inference_pb2, inference_pb2_grpc

from .conftest import Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("torch", "flwr", "ray", "sqlalchemy", "onnx", "opacus", "matplotlib")
MAX_SITE_PACKAGES_MB = 250
MAX_DEVICE_RSS_MB = 120
PREDICTIONS = 200


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment holding ``pip install <checkout>`` and nothing else."""
    root = tmp_path_factory.mktemp("slim")
    source = root / "checkout"  # a copy: building a wheel writes into its source tree
    shutil.copytree(REPO / "fedge", source / "fedge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    venv = root / "venv"
    # No pip in the device's environment: this test's pip installs into it (``--python``), so
    # what is measured is fedge and its dependencies, not the installer.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300
    )
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",  # the versions the full install is tested with
            str(REPO / "constraints.txt"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, (
        "could not pip-install the slim device: this test needs a package index holding its "
        "dependencies (the default index, or PIP_INDEX_URL / PIP_FIND_LINKS); pip said:\n"
        + install.stderr[-3000:]
    )
    yield venv


def _site_packages_mb(venv: Path) -> dict[str, float]:
    """Megabytes of each top-level entry of the environment's site-packages."""
    (site,) = (venv / "lib").glob("python3*/site-packages")
    sizes = {}
    for entry in site.iterdir():
        files = entry.rglob("*") if entry.is_dir() else [entry]
        sizes[entry.name] = sum(p.stat().st_size for p in files if p.is_file()) / 2**20
    return sizes


def _resident_mb(pid: int) -> dict[str, float]:
    """Resident megabytes of the process by what backs them: each mapped file's top-level
    entry of site-packages (or its path), ``[heap]``, ``[anon]`` and so on."""
    sizes: dict[str, float] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            path = fields[5] if len(fields) > 5 else "[anon]"
            _, packaged, inside = path.partition("site-packages/")
            name = inside.split("/")[0] if packaged else path
        elif fields[0] == "Rss:":
            sizes[name] = sizes.get(name, 0.0) + int(fields[1]) / 1024
    return sizes


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_slim_device_enrols_installs_and_predicts(slim: Path, cluster: Cluster) -> None:
    python = slim / "bin" / "python"
    for module in SERVER_ONLY:
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the slim install"
    simulate = subprocess.run(
        [str(slim / "bin" / "fedge"), "simulate"], capture_output=True, text=True, timeout=120
    )
    assert simulate.returncode == 2 and "needs fedge[server]" in simulate.stderr, simulate.stderr
    assert "Traceback" not in simulate.stderr
    sizes = _site_packages_mb(slim)
    size = sum(sizes.values())
    largest = ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:8])
    assert size <= MAX_SITE_PACKAGES_MB, f"site-packages is {size:.0f} MB: {largest}"

    cluster.start_coordinator()
    token = cluster.control("CreateEnrollToken", pb.CreateEnrollTokenRequest()).token
    fedge = [str(slim / "bin" / "fedge")]
    env = {k: v for k, v in cluster.env.items() if k != "PYTHONPATH"}
    enrolled = subprocess.run(
        [*fedge, "edge", "enroll", "--coordinator", cluster.address, "--token", token,
         "--state", "slim/state", "--name", "slim-camera",
         "--enroll-address", f"127.0.0.1:{cluster.enroll_port}"],
        cwd=cluster.root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr

    model = make_linear_model(cluster.root / "build" / "model.onnx", features=16, classes=4)
    published = cluster.cli("release", "publish", str(model.parent), "--percent", "100")
    assert published.returncode == 0, published.stderr

    port = free_port()
    log = (cluster.root / "slim.log").open("ab")
    device = subprocess.Popen(
        [*fedge, "edge", "start", "--state", "slim/state", "--heartbeat", "0.5",
         "--release-interval", "1", "--inference", f"127.0.0.1:{port}"],
        cwd=cluster.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    cluster.procs["slim"] = device  # killed by the fixture whatever happens
    cluster.wait_for(
        lambda: any(d.release_version == 1 and d.state == "idle" for d in cluster.devices()), 120
    )
    (listed,) = cluster.devices()
    assert listed.name == "slim-camera" and not listed.can_train and listed.release_slot

    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    weights, bias = linear_weights(features=16, classes=4, seed=0)
    expected = np.argmax(x @ weights + bias, axis=1).tolist()
    np.save(cluster.root / "x.npy", x)
    predicted = subprocess.run(
        [*fedge, "edge", "predict", "--state", "slim/state", "x.npy"],
        cwd=cluster.root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert [line.split(": ")[1].split()[0] for line in predicted.stdout.splitlines()] == [
        str(label) for label in expected
    ]
    assert "(release 1)" in predicted.stdout

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        tensor = inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())
        for _ in range(PREDICTIONS):  # a serving device's memory, not a fresh one's
            reply = stub.Predict(inference_pb2.PredictRequest(input=tensor), timeout=30)
            assert list(reply.labels) == expected and reply.model_version == 1

    refused = cluster.cli("run", "start", "--dataset", "digits", "--model", "mlp", "--clients", "1")
    assert refused.returncode == 2 and "devices that can train" in refused.stderr
    rss = _peak_rss_mb(device.pid)
    print(f"slim device: site-packages {size:.0f} MB, peak RSS {rss:.0f} MB")
    status = Path(f"/proc/{device.pid}/status").read_text().splitlines()
    split = "; ".join(x.replace("\t", " ") for x in status if x.startswith(("RssAnon", "RssFile")))
    resident = sorted(_resident_mb(device.pid).items(), key=lambda kv: -kv[1])
    print("resident MB: " + ", ".join(f"{k} {v:.1f}" for k, v in resident if v >= 0.5))
    assert rss <= MAX_DEVICE_RSS_MB, f"the device's peak RSS is {rss:.0f} MB ({split})"
    assert "Traceback" not in (cluster.root / "slim.log").read_text()
    os.killpg(device.pid, 15)
    assert device.wait(timeout=30) == 0
