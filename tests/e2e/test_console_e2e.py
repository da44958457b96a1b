"""The web console and /metrics of a real deployment: a ``fedge coordinator`` process with two
``fedge edge`` processes on loopback, watched in a headless Chromium.

The fleet, run and release pages show what the control service says; a run in progress advances
on its page without a reload; the page's Stop button stops the run; the coordinator's and a
device's /metrics agree with the fleet. Screenshots land in the test's tmp dir.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.cli._control import connect_control
from fedge.cli.release_rollout import upload_and_publish
from fedge.release.testing import make_linear_model
from fedge.v1 import control_pb2 as pb
from fedge.v1 import inference_pb2, inference_pb2_grpc

from .conftest import Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Central DP (a little noise: z=0.05, clip 1): every round has an epsilon for the page's chart.
RUN = ["--dataset", "digits", "--model", "cnn-small", "--clients", "2", "--rounds", "60",
       "--set", "dp-noise=0.05", "--set", "dp-clip=1"]  # fmt: skip


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_console_watches_a_deployment_and_stops_a_run(
    cluster: Cluster, chromium: Any, tmp_path: Path
) -> None:
    console_port, metrics_port = free_port(), free_port()
    device_metrics, inference = free_port(), free_port()
    with (cluster.root / "coordinator.toml").open("a") as toml:
        toml.write(
            f'[console]\naddress = "127.0.0.1:{console_port}"\n'
            f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
        )
    cluster.start_coordinator()
    lines = [  # where the operator looks: the coordinator's output says where both are
        f"console: http://127.0.0.1:{console_port}\n",
        f"metrics: http://127.0.0.1:{metrics_port}/metrics\n",
    ]
    log = cluster.root / "coordinator.log"
    cluster.wait_for(lambda: all(line in log.read_text() for line in lines), 30)
    for i in range(2):
        cluster.enroll(i, partitions=2, dataset="digits")
        extra = ["--metrics", f"127.0.0.1:{device_metrics}"]
        extra += ["--inference", f"127.0.0.1:{inference}"]
        cluster.spawn(
            f"edge{i}",
            "edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data",
            "--wait", "2", "--heartbeat", "0.5", "--release-interval", "1",
            *(extra if i == 0 else []),
        )  # fmt: skip
    cluster.wait_for(lambda: sum(d.state == "idle" for d in cluster.devices()) == 2, 120)

    # A release to every device, uploaded as the operator's CLI does.
    model = make_linear_model(cluster.root / "build" / "model.onnx", features=16, classes=4)
    channel, stub = connect_control(cluster.address, operator_dir=cluster.root / "certs/operator")
    with channel:
        release = upload_and_publish(stub, model.parent, percent=100)
    version = release.version
    cluster.wait_for(lambda: all(d.release_version == version for d in cluster.devices()), 90)

    # Three predictions on device 0's inference server.
    x = np.zeros((1, 16), np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{inference}") as inference_channel:
        predict = inference_pb2_grpc.InferenceServiceStub(inference_channel).Predict
        for _ in range(3):
            tensor = inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())
            predict(inference_pb2.PredictRequest(input=tensor), timeout=30)

    # /metrics of the coordinator and of device 0 agree with the fleet.
    coordinator = _metrics(metrics_port)
    assert coordinator[("fedge_devices_online", ())] == 2
    installed = (("state", "installed"), ("version", str(version)))
    cluster.wait_for(lambda: _metrics(metrics_port)[("fedge_release_devices", installed)] == 2, 30)
    device = _metrics(device_metrics)
    assert device[("fedge_inference_requests_total", ())] == 3
    assert device[("fedge_inference_errors_total", ())] == 0
    assert device[("fedge_inference_latency_seconds_count", ())] == 3
    assert device[("fedge_device_active_release", ())] == version

    base = f"http://127.0.0.1:{console_port}"
    page = chromium.new_page(viewport={"width": 1360, "height": 900})
    try:
        page.goto(base + "/fleet")
        page.wait_for_selector("#fleet tr[data-device]")
        page.wait_for_function(
            "document.querySelectorAll('#fleet tbody tr[data-device]').length === 2"
        )
        fleet_text = page.inner_text("#fleet")
        for d in cluster.devices():
            assert d.name in fleet_text and d.device_id in fleet_text
        assert fleet_text.count(f"release {version}") == 2
        # Telemetry of the three predictions shows once the device has reported it.
        page.wait_for_function(
            "[...document.querySelectorAll('#fleet td.num')].some(td => td.innerText === '3')",
            timeout=30_000,
        )
        page.screenshot(path=str(tmp_path / "console-fleet.png"), full_page=True)

        page.goto(base + f"/releases/{version}")
        page.wait_for_selector("#funnel")
        assert page.inner_text('#funnel [data-state="installed"]') == "2"
        assert page.inner_text("#release-devices").count("installed") == 2
        page.screenshot(path=str(tmp_path / "console-release.png"), full_page=True)

        started = cluster.cli("run", "start", *RUN, "--no-release")
        assert started.returncode == 0, started.stderr
        run_id = cluster.run().run.run_id
        page.goto(base + f"/runs/{run_id}")
        page.evaluate("window.__notReloaded = true")
        page.wait_for_function(
            "Number(document.querySelector('#rounds-done')?.innerText) >= 1", timeout=120_000
        )
        first = int(page.inner_text("#rounds-done"))
        page.wait_for_function(
            f"Number(document.querySelector('#rounds-done')?.innerText) > {first}",
            timeout=120_000,
        )
        assert page.evaluate("window.__notReloaded") is True  # the page updated in place
        assert page.locator("#rounds tbody tr").count() > first
        # The three charts have a point per round, epsilon included.
        for chart in ("accuracy", "loss", "ε (central DP)"):
            points = page.locator(f'svg[aria-label="{chart}"] circle').count()
            assert points >= first + 1, chart
        assert float(page.inner_text("#epsilon")) > 0
        assert "waiting" in page.inner_text("#events") or "devices" in page.inner_text("#events")
        page.screenshot(path=str(tmp_path / "console-run.png"), full_page=True)

        # Stop from the console: the run stops, and the page says so without a reload.
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#stop-run")
        final = pb.RUN_STATE_STOPPED, pb.RUN_STATE_COMPLETED
        cluster.wait_for(lambda: cluster.run(run_id).run.state in final, 120)
        assert cluster.run(run_id).run.state == pb.RUN_STATE_STOPPED
        page.wait_for_selector("h1 .badge.stopped", timeout=30_000)
        assert page.evaluate("window.__notReloaded") is True
        page.screenshot(path=str(tmp_path / "console-run-stopped.png"), full_page=True)
    finally:
        page.close()
    events = [e.message for e in cluster.run(run_id).events]
    assert any("operator stopped run" in m for m in events), json.dumps(events)
    assert (tmp_path / "console-run.png").stat().st_size > 10_000
