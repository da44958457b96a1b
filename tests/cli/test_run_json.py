"""``fedge run status --json``: a run's reply as plain JSON, nested messages included."""

import json

from fedge.cli.run import run_to_json
from fedge.v1 import control_pb2 as pb


def test_run_status_json_holds_every_field_of_rounds_sites_updates_and_async() -> None:
    response = pb.GetRunResponse(
        run=pb.RunSummary(
            run_id=3,
            rounds_done=1,
            rounds_total=2,
            async_status=pb.AsyncStatus(
                version=7,
                in_buffer=1,
                buffer=2,
                updates_received=30,
                refused_by_reason={"stale": 1, "bad": 2},
                last_refusals=[pb.Drop(device_id="dev-1", node_id=4, reason="stale by 9")],
                staleness_histogram={9: 1, 0: 20},
            ),
        ),
        rounds=[
            pb.RoundSummary(
                server_round=1,
                drops=[pb.Drop(device_id="dev-2", node_id=5, reason="timed out")],
                sites=[
                    pb.SiteRound(site="a", gateway_id="gw-1", replies=1, asked=3, train_loss=0.5),
                    pb.SiteRound(site="", asked=1),
                ],
                updates=[pb.AsyncUpdate(device_id="dev-3", node_id=6, staleness=2, weight=0.25)],
            )
        ],
    )
    shown = json.loads(json.dumps(run_to_json(response)))
    assert shown["async"] == {
        "version": 7,
        "in_buffer": 1,
        "buffer": 2,
        "training": 0,
        "updates_received": 30,
        "updates_applied": 0,
        "updates_refused": 0,
        "refused_by_reason": {"bad": 2, "stale": 1},
        "last_refusals": [{"device_id": "dev-1", "node_id": 4, "reason": "stale by 9"}],
        "staleness_histogram": {"0": 20, "9": 1},
    }
    assert list(shown["async"]["staleness_histogram"]) == ["0", "9"]  # in staleness order
    (round_one,) = shown["rounds"]
    assert round_one["dropped"] == [{"device_id": "dev-2", "node_id": 5, "reason": "timed out"}]
    assert round_one["sites"] == [
        {
            "site": "a",
            "gateway_id": "gw-1",
            "replies": 1,
            "asked": 3,
            "aggregated": 0,
            "examples": 0,
            "train_loss": 0.5,
        },
        {
            "site": "",
            "gateway_id": "",
            "replies": 0,
            "asked": 1,
            "aggregated": 0,
            "examples": 0,
            "train_loss": None,  # not reported
        },
    ]
    assert round_one["updates"] == [
        {"device_id": "dev-3", "node_id": 6, "staleness": 2, "weight": 0.25}
    ]
    no_async = pb.GetRunResponse(run=pb.RunSummary(run_id=4))
    assert run_to_json(no_async)["async"] is None
