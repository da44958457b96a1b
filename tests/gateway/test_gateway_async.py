"""Asynchronous runs through a site gateway: a real coordinator, a real gateway and devices on
loopback with TLS.

Two devices are the cloud's own, two are behind the gateway (slower). The gateway forwards
each of its devices' trainings as it comes; its uplink is cut while they train, so it keeps
their replies on disk (across a restart of the gateway), and the cloud's own devices make
versions meanwhile. When the link returns the kept replies are delivered: applied with their
staleness (versions made since they started), or refused beyond ``--max-staleness`` with that
reason in ``run status``. Central DP under async runs through the gateway too, and reports the
participation-bound ε.
"""

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.gateway.server import SITE_RESULTS_DIR, Gateway
from fedge.privacy.participation import participation_epsilon
from fedge.simulation import simulate
from fedge.v1 import control_pb2 as pb

from .conftest import Site, wait_for

CLOUD, BEHIND = ("cloud-0", "cloud-1"), ("cam-2", "cam-3")
RUN = {
    "dataset": "digits",
    "model": "cnn-small",
    "local-epochs": 1,
    "release": False,
    "seed": 0,
    "mode": "async",
    "clients": 4,
    "buffer": 2,
    "concurrency": 4,
    "rounds": 200,  # the test stops the run once it has seen what it looks for
    "staleness-weight": "poly:0.5",
    "round-timeout": 120,
}
CUT_FOR = 3  # versions the cloud's own devices make while the site's replies are kept


def _fleet(site: Site, *, behind_delay: float = 0.25) -> dict[str, str]:
    """Two devices of the cloud itself and two behind the gateway (slower by ``behind_delay``
    seconds a step); name -> id."""
    for i, name in enumerate(CLOUD):
        identity = site.fleet.trainer(name)
        data = site.root / f"{name}-data"
        write_device_data(
            data, DeviceDataSpec(dataset="digits", partition_id=i, num_partitions=4, format="npz")
        )
        site.run_device(identity, data, step_delay=0.02)
    for i, name in enumerate(BEHIND, start=2):
        site.trainer(name, partition=i, partitions=4, step_delay=behind_delay)
    control = site.fleet.control_stub()

    def devices() -> list[Any]:
        rows = control.ListDevices(pb.ListDevicesRequest()).devices
        return [d for d in rows if d.kind == "device"]

    wait_for(lambda: sum(d.state == "idle" for d in devices()) == 4, 30, "four idle devices")
    return {d.name: d.device_id for d in devices()}


def _run_with_a_cut(site: Site, until: Any, *, restart: bool = False, **options: Any) -> Any:
    """Start an async run; cut the site's uplink while its devices train, until the gateway
    keeps both replies and the cloud made :data:`CUT_FOR` versions (``restart``: restart the
    gateway then); then restore it, wait for ``until(run reply)`` and stop the run. The run's
    last reply."""
    control = site.fleet.control_stub()
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, **options}))
    run_id = control.StartRun(request, timeout=30).run.run_id

    def run() -> Any:
        return control.GetRun(pb.GetRunRequest(run_id=run_id))

    rounds = site.gateway.rounds
    wait_for(lambda: rounds.serving == 2, 30, "the gateway to forward both devices' trainings")
    site.link.cut()
    cut_at = run().run.async_status.version
    kept_dir = Path(site.gateway.identity.state_dir) / SITE_RESULTS_DIR

    def kept() -> int:
        return sum(1 for _ in kept_dir.glob("*/header.pb"))

    wait_for(lambda: kept() == 2 and rounds.serving == 0, 30, "the gateway to keep both replies")
    wait_for(lambda: run().run.async_status.version >= cut_at + CUT_FOR, 60, "cloud versions")
    assert run().run.state == pb.RUN_STATE_RUNNING
    if restart:  # the kept replies are on disk: a new gateway process delivers them
        site.gateway.stop(grace=0.5)
        site.gateway = Gateway(site.gateway.config)
        site.gateway.start(coordinator=site.link.address)
    assert kept() == 2
    site.link.restore()
    wait_for(lambda: kept() == 0, 30, "the kept replies delivered")
    wait_for(lambda: until(run()), 60, "the delivered updates to be taken")
    control.StopRun(pb.StopRunRequest(run_id=run_id), timeout=10)
    wait_for(lambda: run().run.state != pb.RUN_STATE_RUNNING, 30, "the run to stop")
    return run()


def _updates(reply: Any, ids: dict[str, str]) -> list[tuple[str, int, float]]:
    names = {v: k for k, v in ids.items()}
    return [(names[u.device_id], u.staleness, u.weight) for r in reply.rounds for u in r.updates]


def test_an_async_run_applies_updates_forwarded_by_a_gateway_with_their_staleness(
    site: Site,
) -> None:
    ids = _fleet(site)

    def both_applied(reply: Any) -> bool:
        taken = {name for name, _, _ in _updates(reply, ids)}
        return set(BEHIND) <= taken

    reply = _run_with_a_cut(site, both_applied, restart=True)
    updates = _updates(reply, ids)
    behind = [(n, tau, w) for n, tau, w in updates if n in BEHIND]
    # The first update of each device behind the gateway started at version 0 and arrived
    # after the cloud's own devices made at least CUT_FOR versions.
    first = {n: next(u for u in behind if u[0] == n) for n in BEHIND}
    for _, tau, weight in first.values():
        assert tau >= CUT_FOR
        assert abs(weight - (1 + tau) ** -0.5) < 1e-6
    assert {n for n, _, _ in updates if n in CLOUD} == set(CLOUD)
    versions = [r.server_round for r in reply.rounds]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) > CUT_FOR
    status = reply.run.async_status
    assert status.updates_refused == 0
    assert sum(status.staleness_histogram.values()) == status.updates_received
    print(  # the measured numbers of the report
        f"versions {len(versions)}; forwarded updates (device, staleness, weight): {behind}"
    )


def test_a_forwarded_update_beyond_max_staleness_is_refused_with_why(site: Site) -> None:
    ids = _fleet(site)
    limit = CUT_FOR - 1

    def both_refused(reply: Any) -> bool:
        return int(reply.run.async_status.refused_by_reason.get("stale", 0)) >= 2

    reply = _run_with_a_cut(site, both_refused, **{"max-staleness": limit})
    refusals = {d.device_id: d.reason for d in reply.run.async_status.last_refusals}
    for name in BEHIND:
        reason = refusals[ids[name]]
        assert reason.startswith("stale: ") and f"versions old > --max-staleness {limit}" in reason
        assert int(reason.split()[1]) >= CUT_FOR
    print(f"refused forwarded updates: {sorted(refusals.values())}")
    shown = CliRunner().invoke(app, ["run", "status", *site.fleet.operator_args])
    assert shown.exit_code == 0, shown.output
    assert f"async: refused {ids[BEHIND[0]]}: stale: " in shown.output
    assert f"> --max-staleness {limit}" in shown.output


def test_central_dp_under_async_reports_the_participation_bound_epsilon(
    site: Site, tmp_path: Path
) -> None:
    """Every version takes all four devices (two through the gateway, clipped there and at
    the cloud, noised once): each device contributes once per version, so the ε after version
    v is that of v unsampled Gaussian releases, the simulation's number for the same options."""
    ids = _fleet(site, behind_delay=0.0)
    dp = {"dp-noise": 1.5, "dp-clip": 0.5, "dp-participations": 2, "dp-seed": 3}
    options = {**RUN, "buffer": 4, "rounds": 2, "max-staleness": 0, **dp}
    args = ["run", "start", *site.fleet.operator_args]
    runner = CliRunner()
    refused = runner.invoke(
        app, [*args, "--mode", "async", "--dp-noise", "1.5", "--dataset", "digits"]
    )
    assert refused.exit_code == 2
    assert "with central DP needs --dp-participations K" in refused.output

    control = site.fleet.control_stub()
    request = pb.StartRunRequest(config_json=json.dumps(options))
    run_id = control.StartRun(request, timeout=30).run.run_id

    def finished() -> bool:
        state = control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state
        return state in (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED)

    wait_for(finished, 90, "the central-DP async run")
    reply = control.GetRun(pb.GetRunRequest(run_id=run_id))
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    simulated = simulate(RunConfig.from_mapping(options), device_state_root=tmp_path / "sim")
    want = [
        participation_epsilon(noise_multiplier=1.5, participations=v, delta=1e-5) for v in (1, 2)
    ]
    assert [r.epsilon for r in reply.rounds] == [r.extra["epsilon"] for r in simulated.rounds]
    assert [r.epsilon for r in reply.rounds] == want
    for version in reply.rounds:  # all four, two of them through the gateway, none stale
        assert sorted(u.device_id for u in version.updates) == sorted(ids.values())
        assert {u.staleness for u in version.updates} == {0}
    shown = runner.invoke(app, ["run", "status", "--json", *site.fleet.operator_args])
    assert [r["epsilon"] for r in json.loads(shown.output)["rounds"]] == want
    print(f"central DP under async through the gateway: epsilon per version {want}")
