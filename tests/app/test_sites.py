"""Site aggregation: the one reply a site sends equals the flat aggregate once the cloud expands
it (FedAvg, and CentralDP with device-level clipping), survives the wire, and a bad one is
refused naming what is wrong."""

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg

from fedge.app.config import RunConfig
from fedge.app.sites import (
    CLIPPED_MEAN,
    MEAN,
    METRICS,
    SiteResult,
    aggregate_site,
    aggregation_for,
    device_message,
    site_members,
)
from fedge.errors import ConfigError, PayloadError
from fedge.privacy.central import CentralDP
from fedge.protocol.messages import decode_message, encode_message
from fedge.runtime.base import RunGrid
from fedge.runtime.local import set_server_identity


def _global(rng: np.random.Generator) -> ArrayRecord:
    return ArrayRecord(
        {
            "w": Array(rng.standard_normal((4, 3)).astype(np.float32)),
            "steps": Array(np.array(7, dtype=np.int64)),
        }
    )


def _instruction(node: int, arrays: ArrayRecord) -> Message:
    # The message a cloud round sends node ``node`` (as the site would pass it on).
    task = Message(
        content=RecordDict(),
        metadata=Metadata(1, "task", 0, 99, "", "1", 0.0, 3600.0, MessageType.TRAIN),
    )
    msg = device_message(task, RecordDict({"arrays": arrays}), node)
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def _reply(to: Message, arrays: ArrayRecord, examples: int, loss: float) -> Message:
    metrics = MetricRecord({"num-examples": examples, "train-loss": loss})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=to)


def _fleet(seed: int = 0) -> tuple[ArrayRecord, list[Message], list[Message]]:
    """A global model, its messages to nodes 1..6, and each node's reply (scaled updates)."""
    rng = np.random.default_rng(seed)
    reference = _global(rng)
    messages = [_instruction(n, reference) for n in range(1, 7)]
    replies = []
    for n, msg in enumerate(messages):
        w = reference["w"].numpy() + rng.standard_normal((4, 3)).astype(np.float32) * (n + 1)
        arrays = ArrayRecord({"w": Array(w), "steps": Array(np.array(7 + n, dtype=np.int64))})
        replies.append(_reply(msg, arrays, examples=10 * (n + 1), loss=float(n)))
    return reference, messages, replies


def _site(replies: list[Message], reference: ArrayRecord, aggregation: str) -> SiteResult:
    arrays = aggregate_site(replies, reference, aggregation=aggregation, clip_norm=1.0)
    metrics = {int(r.metadata.src_node_id): r.content["metrics"] for r in replies}
    return SiteResult(aggregation=aggregation, arrays=arrays, metrics=metrics)  # type: ignore[arg-type]


def test_fedavg_of_two_sites_equals_fedavg_of_their_devices() -> None:
    reference, messages, replies = _fleet()
    strategy = FedAvg()
    flat, flat_metrics = strategy.aggregate_train(1, replies)
    sites = [_site(replies[:2], reference, MEAN), _site(replies[2:], reference, MEAN)]
    by_node = {int(m.metadata.dst_node_id): m for m in messages}
    expanded = [r for s in sites for r in s.expand(by_node)]
    assert [int(r.metadata.src_node_id) for r in expanded] == list(range(1, 7))
    hier, hier_metrics = strategy.aggregate_train(1, expanded)
    assert flat is not None and hier is not None
    np.testing.assert_allclose(hier["w"].numpy(), flat["w"].numpy(), rtol=1e-6, atol=1e-6)
    assert hier_metrics["train-loss"] == pytest.approx(flat_metrics["train-loss"])
    assert sites[0].examples == 30 and sites[0].train_loss == pytest.approx(20 / 30)


def test_central_dp_of_sites_clips_each_device_and_equals_the_flat_noised_sum() -> None:
    reference, messages, replies = _fleet(seed=1)
    results = []
    for site_replies in (None, (replies[:3], replies[3:])):
        dp = CentralDP(
            FedAvg(min_train_nodes=1, min_available_nodes=1),
            noise_multiplier=0.7,
            clip_norm=1.0,
            sample_rate=1.0,
            population=6,
            delta=1e-5,
            seed=5,
        )
        set_server_identity(1)  # the cloud's ServerApp process
        dp.configure_train(1, reference, ConfigRecord(), _Nodes())
        if site_replies is None:
            kept = replies
        else:
            by_node = {int(m.metadata.dst_node_id): m for m in messages}
            kept = [
                r
                for part in site_replies
                for r in _site(part, reference, CLIPPED_MEAN).expand(by_node)
            ]
        arrays, _ = dp.aggregate_train(1, kept)
        assert arrays is not None
        results.append((arrays["w"].numpy(), dp.epsilon))
    (flat, eps_flat), (hier, eps_hier) = results
    np.testing.assert_allclose(hier, flat, rtol=1e-5, atol=1e-5)
    assert eps_hier == eps_flat
    # every device weighed at most C: a far-off device does not pull its site's mean further
    site = aggregate_site(replies, reference, aggregation=CLIPPED_MEAN, clip_norm=1.0)
    moved = np.linalg.norm(site["w"].numpy().astype(np.float64) - reference["w"].numpy())
    assert moved <= 1.0 + 1e-5
    assert site["steps"].numpy() == reference["steps"].numpy()  # integers keep the global value


class _Nodes(RunGrid):
    def __init__(self) -> None:
        super().__init__(1)

    def get_node_ids(self) -> list[int]:
        return list(range(1, 7))

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def test_a_site_reply_survives_the_wire_and_a_bad_one_is_refused() -> None:
    reference, messages, replies = _fleet()
    result = _site(replies[:2], reference, MEAN)
    result.dropped = {3: "went offline during the round"}
    reply = Message(result.to_content(), reply_to=messages[0])
    back = decode_message(encode_message(reply).parts)
    read = SiteResult.from_content(
        back.content, site_nodes=(1, 2, 3), aggregation=MEAN, reference=reference
    )
    assert sorted(read.metrics) == [1, 2] and read.dropped == {3: "went offline during the round"}
    np.testing.assert_array_equal(read.arrays["w"].numpy(), result.arrays["w"].numpy())  # type: ignore[index]

    def refused(content: RecordDict, site_nodes: tuple[int, ...], match: str, **kw: object) -> None:
        with pytest.raises(PayloadError, match=match):
            SiteResult.from_content(
                content,
                site_nodes=site_nodes,
                aggregation=str(kw.get("aggregation", MEAN)),
                reference=reference,
            )

    refused(result.to_content(), (1,), "not for")  # names node 2, not asked
    refused(
        result.to_content(), (1, 2, 3), "the run needs 'clipped-mean'", aggregation=CLIPPED_MEAN
    )
    bad = result.to_content()
    bad["arrays"] = ArrayRecord({"w": Array(np.zeros((3, 3), np.float32))})
    refused(bad, (1, 2, 3), "site aggregate refused: tensor names differ")
    bad = result.to_content()
    del bad["device.2"]
    refused(bad, (1, 2, 3), "metrics of node 2: missing")
    bad = result.to_content()
    bad["arrays"]["w"] = Array(np.full((4, 3), np.nan, np.float32))
    refused(bad, (1, 2, 3), "NaN")


def test_run_options_that_sites_cannot_compute_are_refused() -> None:
    base = {"dataset": "digits", "model": "mlp", "clients": 8, "gateways": 2}
    RunConfig.from_mapping(base)  # fine
    for extra, option in (
        ({"strategy": "krum"}, "--strategy"),
        ({"dp-noise": 1.0, "dp-adaptive-clip": True}, "--dp-adaptive-clip"),
        ({"dp-noise": 1.0, "site-rounds": 2}, "--site-rounds"),
        ({"gateways": 9}, "--gateways"),
        ({"gateways": 0, "partition-level": "site"}, "--partition-level"),
    ):
        with pytest.raises(ConfigError, match=option):
            RunConfig.from_mapping({**base, **extra})
    assert site_members(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert aggregation_for("train", {"dp-noise": 1.0}) == CLIPPED_MEAN
    assert aggregation_for("train", {}) == MEAN and aggregation_for("evaluate", {}) == METRICS
