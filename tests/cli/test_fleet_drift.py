"""``fedge fleet drift`` shows each device, as the README says: DRIFTED, ok, or no window yet."""

import json

from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.v1 import control_pb2 as pb
from fedge.v1 import hub_pb2, hub_pb2_grpc

from ..conftest import Fleet


def test_drift_lists_every_device_with_a_window_or_without(fleet: Fleet) -> None:
    names = ("reporting", "quiet-1", "quiet-2")
    identities = {name: fleet.enroll(name) for name in names}
    # One device closes a window over the wire, as a device's delivery loop does; its release
    # carries no reference distribution, so it is compared with nothing and is not drifted.
    reporting = identities["reporting"]
    hub = hub_pb2_grpc.ModelHubServiceStub(fleet.channel(reporting.tls()))
    window = hub_pb2.DriftWindow(
        version=1, samples=200, class_counts=[100, 100], input_counts=[40] * 5, window=1
    )
    request = hub_pb2.ReportInferenceStatsRequest(
        device_id=reporting.device_id, active_version=1, requests=200, drift=window
    )
    hub.ReportInferenceStats(request, timeout=10)
    fleet.control_stub().RevokeDevice(
        pb.RevokeDeviceRequest(device_id=identities["quiet-2"].device_id), timeout=10
    )

    out = CliRunner().invoke(app, ["fleet", "drift", *fleet.operator_args])
    assert out.exit_code == 0, out.output
    lines = {line.split()[1].rstrip(":"): line for line in out.output.splitlines()}
    assert set(lines) == {"reporting", "quiet-1"}, out.output  # a revoked device predicts no more
    assert ": ok, release 1," in lines["reporting"]
    assert "carries no reference distribution" in lines["reporting"]
    assert "no window yet" in lines["quiet-1"]

    out = CliRunner().invoke(app, ["fleet", "drift", "--json", *fleet.operator_args])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.output)["devices"]}
    assert rows["reporting"]["window"] and rows["reporting"]["drifted"] is False
    assert rows["reporting"]["samples"] == 200
    assert rows["quiet-1"] == {
        "device_id": identities["quiet-1"].device_id,
        "name": "quiet-1",
        "drifted": None,
        "window": False,
    }
