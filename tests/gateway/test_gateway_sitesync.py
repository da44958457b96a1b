"""A gateway's site sync lists only what changed, and the cloud still sees its devices live."""

import time

from fedge.gateway.sitesync import SiteSync
from fedge.gateway.state import SiteDeviceRow
from fedge.v1 import control_pb2 as pb
from fedge.v1 import fleet_pb2, gateway_pb2

from .conftest import Site, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _row(device_id: str, *, heartbeat: bytes = b"", revoked: bool = False) -> SiteDeviceRow:
    return SiteDeviceRow(
        device_id=device_id, node_id=1, revoked=revoked, last_seen=5.0, heartbeat=heartbeat
    )


def _heartbeat(state: int) -> bytes:
    return fleet_pb2.HeartbeatRequest(version="1", state=state).SerializeToString()


def _listed(sync: SiteSync, rows: list[SiteDeviceRow], online: set[str]) -> dict[str, bool]:
    """Draft and take a sync; what it listed: device id -> whether it carried a heartbeat."""
    draft = sync.draft(rows, online=lambda row: row.device_id in online)
    sync.taken(draft)
    return {d.device_id: d.HasField("heartbeat") for d in draft.devices}


def test_a_sync_lists_a_device_only_when_it_has_news() -> None:
    clock = Clock()
    sync = SiteSync(full_every=300.0, clock=clock)
    idle, training = _heartbeat(fleet_pb2.DEVICE_STATE_IDLE), _heartbeat(2)
    a, b = _row("a", heartbeat=idle), _row("b")
    gone = _row("c", heartbeat=idle, revoked=True)
    rows = [a, b, gone]
    assert _listed(sync, rows, {"a", "b"}) == {"a": True, "b": False}  # first: all, not revoked
    assert _listed(sync, rows, {"a", "b"}) == {}  # nothing new: nothing listed
    a.heartbeat = training
    assert _listed(sync, rows, {"a", "b"}) == {"a": True}
    assert _listed(sync, rows, {"a"}) == {"b": False}  # b went offline: listed, no heartbeat
    clock.now = 300.0
    assert _listed(sync, rows, {"a"}) == {"a": True, "b": False}  # the periodic full sync


def test_a_sync_the_cloud_did_not_take_is_listed_again() -> None:
    sync = SiteSync(clock=Clock())
    rows = [_row("a", heartbeat=_heartbeat(fleet_pb2.DEVICE_STATE_IDLE))]
    draft = sync.draft(rows, online=lambda row: True)
    assert [d.device_id for d in draft.devices] == ["a"] and draft.full
    # the RPC failed: taken() never ran
    again = sync.draft(rows, online=lambda row: True)
    assert [d.device_id for d in again.devices] == ["a"] and again.full


def test_an_idle_site_costs_its_uplink_almost_nothing_yet_the_cloud_sees_it_live(
    site: Site,
) -> None:
    site.trainer("cam1", partition=0, partitions=2)
    control = site.fleet.control_stub()

    def cam1() -> pb.Device:
        devices = control.ListDevices(pb.ListDevicesRequest(), timeout=10).devices
        return next(d for d in devices if d.name == "cam1")

    wait_for(lambda: cam1().state == "idle", 20, "cam1 idle at the cloud")
    stub = site.gateway.uplink.gateway
    forward = stub.SyncSite
    sent: list[gateway_pb2.SyncSiteRequest] = []

    def counting(request: gateway_pb2.SyncSiteRequest, **kwargs: object) -> object:
        sent.append(request)
        return forward(request, **kwargs)

    stub.SyncSite = counting
    try:
        wait_for(lambda: len(sent) >= 8, 20, "eight syncs")  # 0.3 s apart
        quiet = sent[2:]  # the first may still carry cam1's last change
        assert all(not r.devices and not r.enroll_fingerprint for r in quiet), quiet
        assert max(r.ByteSize() for r in quiet) <= 4
        # yet cam1 is seen at every sync: its age stays below a few syncs
        assert time.time() - cam1().last_seen_unix < 2.0
        (agent, _), *_ = site.agents
        agent.stop()  # cam1 goes silent: the gateway says so once, within its liveness
        wait_for(
            lambda: any(d.device_id and not d.online for r in sent for d in r.devices),
            20,
            "a sync listing cam1 offline",
        )
        wait_for(lambda: cam1().state == "offline", 10, "cam1 offline at the cloud")
        stopped = cam1().last_seen_unix
        n = len(sent)
        wait_for(lambda: len(sent) >= n + 4, 20, "four more syncs")
        assert cam1().last_seen_unix == stopped  # an offline device ages at the cloud
    finally:
        stub.SyncSite = forward
