"""Hierarchical aggregation: a site gateway answers a cloud round with ONE reply for its devices.

A cloud round reaches a site as one message for several of the site's devices. The site runs it
on each (:func:`run_site`, optionally ``site_rounds`` local rounds of FedAvg between two cloud
rounds), checks every reply as the cloud would (:mod:`fedge.app.validation`) and aggregates:

- ``mean`` (no central DP): the example-weighted mean of the devices' models, by Flower's own
  ``aggregate_arrayrecords``, plus each device's metrics (its ``num-examples`` among them);
- ``clipped-mean`` (central DP): ``global + mean_i clip(Δ_i, C)``: each device's update is
  clipped to the run's norm ``C`` *before* it is summed, so no device weighs more than ``C``;
- ``metrics`` (federated evaluation): each device's metrics only.

:class:`SiteResult` is that one reply (as a Flower ``RecordDict``: ``arrays``, a ``MetricRecord``
``device.<node id>`` per contributing device and a ``site`` ``ConfigRecord`` naming the
contributors, the dropped devices and why). On the cloud, :meth:`SiteResult.expand` turns it back
into one reply per contributing device, each with the site's arrays and that device's own
metrics, so the unchanged ServerApp and strategy see the devices they sampled:

- FedAvg over the expanded replies is ``Σ_i n_i·w_site(i) / Σ_i n_i = Σ_s N_s·w_s / N``: the
  flat aggregate (FedProx and FedAdam aggregate the same mean first);
- CentralDP clips each expanded reply (its norm, a mean of clipped updates, is already ≤ C) and
  sums ``k_s`` of them per site: ``Σ_i clip(Δ_i, C)``, the flat clipped sum, to which it adds the
  noise once. Sampling (Poisson at rate q over the devices), the denominator ``q·N`` and the
  accountant are the flat run's, so the reported ε is the device-level ε of the flat run.

What cannot be computed from site aggregates is refused up front (:func:`check_hierarchy`):
robust aggregators that select individual updates, adaptive clipping (it needs each device's
norm), and several local rounds under central DP (a device would then weigh more than ``C``).
The gateway sees its devices' raw updates: it is trusted as the cloud is under central DP.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
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
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedge.app.validation import (
    DroppedReply,
    arrays_problem,
    metrics_problem,
    validate_evaluate_replies,
    validate_train_replies,
)
from fedge.errors import ConfigError, PayloadError
from fedge.privacy.central import clip_update
from fedge.privacy.config import PrivacyConfig

if TYPE_CHECKING:
    from fedge.app.config import RunConfig

__all__ = [
    "AGGREGATIONS",
    "CLIPPED_MEAN",
    "MEAN",
    "METRICS",
    "WEIGHTED_STRATEGIES",
    "SiteExchange",
    "SiteResult",
    "aggregate_site",
    "aggregation_for",
    "check_hierarchy",
    "clip_norm_of",
    "device_message",
    "run_site",
    "site_members",
]

MEAN = "mean"
CLIPPED_MEAN = "clipped-mean"
METRICS = "metrics"
AGGREGATIONS = (MEAN, CLIPPED_MEAN, METRICS)

#: Strategies whose server step only needs the example-weighted mean of the updates (FedBN and
#: FedPer average like FedAvg: their personal layers stay on each device).
WEIGHTED_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedbn", "fedper")

_SITE = "site"
_DEVICE = "device."


def check_hierarchy(config: "RunConfig", *, why: str) -> None:
    """Refuse (:class:`~fedge.errors.ConfigError`) what site aggregates cannot compute of the
    run ``config``.

    ``why`` says where the sites come from (e.g. "--gateways 4", "the fleet has gateways").
    """
    central_dp = config.privacy.central
    if config.strategy not in WEIGHTED_STRATEGIES:
        raise ConfigError(
            "--strategy",
            config.strategy,
            f"cannot be computed from site aggregates ({why}): it selects individual updates; "
            f"use {', '.join(WEIGHTED_STRATEGIES)}",
        )
    if central_dp and config.privacy.dp_adaptive_clip:
        raise ConfigError(
            "--dp-adaptive-clip",
            True,
            f"cannot be used with sites ({why}): it needs each device's update norm at the cloud",
        )
    if config.mode == "async" and config.site_rounds > 1:
        raise ConfigError(
            "--site-rounds",
            config.site_rounds,
            "does not apply under --mode async: a site forwards each device's update as it "
            "comes, it makes no site aggregate",
        )
    if central_dp and config.site_rounds > 1:
        raise ConfigError(
            "--site-rounds",
            config.site_rounds,
            "cannot be combined with central DP: after several local rounds a device's share of "
            "the site's update is no longer bounded by the clip norm",
        )


def site_members(clients: int, sites: int) -> list[list[int]]:
    """The simulated clients ``0..clients-1`` of each of ``sites`` sites (contiguous blocks
    whose sizes differ by at most one)."""
    if not 1 <= sites <= clients:
        raise ConfigError("--gateways", sites, f"must be between 1 and --clients {clients}")
    return [list(map(int, block)) for block in np.array_split(np.arange(clients), sites)]


def aggregation_for(message_type: str, run_config: Mapping[str, Any]) -> str:
    """How a site aggregates replies to ``message_type`` in a run (its wire-form options)."""
    if message_type != MessageType.TRAIN:
        return METRICS
    return CLIPPED_MEAN if _privacy(run_config).central else MEAN


def clip_norm_of(run_config: Mapping[str, Any]) -> float:
    """The central-DP clip norm of a run (its wire-form options)."""
    return float(_privacy(run_config).dp_clip)


def _privacy(run_config: Mapping[str, Any]) -> PrivacyConfig:
    values = {}
    for name in PrivacyConfig.field_names():
        key = name.replace("_", "-")
        if key in run_config:
            values[name] = run_config[key]
    return PrivacyConfig(**values)


@dataclass
class SiteResult:
    """A site's one reply: its aggregate, each contributing device's metrics, and its drops."""

    aggregation: str
    arrays: ArrayRecord | None = None
    metrics: dict[int, MetricRecord] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    local_rounds: int = 1

    @property
    def examples(self) -> int:
        """The contributing devices' examples (the weight FedAvg gives the site)."""
        return int(sum(_number(m, "num-examples") for m in self.metrics.values()))

    @property
    def train_loss(self) -> float | None:
        """The example-weighted mean of the devices' ``train-loss``, if they report one."""
        pairs = [(_number(m, "num-examples"), m.get("train-loss")) for m in self.metrics.values()]
        losses = [(n, float(v)) for n, v in pairs if isinstance(v, int | float)]
        total = sum(n for n, _ in losses)
        return sum(n * v for n, v in losses) / total if losses and total > 0 else None

    def to_content(self) -> RecordDict:
        """The reply's content (see the module docstring)."""
        content = RecordDict()
        if self.arrays is not None:
            content["arrays"] = self.arrays
        for node, metrics in self.metrics.items():
            content[f"{_DEVICE}{node}"] = metrics
        dropped = sorted(self.dropped)
        content[_SITE] = ConfigRecord(
            {
                "aggregation": self.aggregation,
                "nodes": list(self.metrics),
                "dropped-nodes": dropped,
                "dropped-reasons": [self.dropped[n] for n in dropped],
                "local-rounds": self.local_rounds,
            }
        )
        return content

    @classmethod
    def from_content(
        cls,
        content: RecordDict,
        *,
        site_nodes: Sequence[int],
        aggregation: str,
        reference: ArrayRecord | None,
    ) -> "SiteResult":
        """Read and check a site's reply to a task for ``site_nodes``; :class:`PayloadError`
        naming what is wrong (the cloud refuses such a reply as it refuses a bad update)."""
        site = content.config_records.get(_SITE)
        if site is None:
            raise PayloadError("a site reply has no 'site' record")
        if site.get("aggregation") != aggregation:
            raise PayloadError(
                f"the site aggregated {site.get('aggregation')!r}, the run needs {aggregation!r}"
            )
        nodes = _int_list(site.get("nodes", []), "nodes")
        dropped = _int_list(site.get("dropped-nodes", []), "dropped-nodes")
        reasons = site.get("dropped-reasons", [])
        if not isinstance(reasons, list) or len(reasons) != len(dropped):
            raise PayloadError("a site reply's dropped-reasons do not match its dropped-nodes")
        unknown = sorted(set(nodes + dropped) - set(site_nodes))
        if unknown or len(set(nodes + dropped)) != len(nodes) + len(dropped):
            raise PayloadError(
                f"a site reply names devices the task was not for, or twice: {unknown or nodes}"
            )
        metrics: dict[int, MetricRecord] = {}
        for node in nodes:
            record = content.metric_records.get(f"{_DEVICE}{node}")
            problem = "missing" if record is None else metrics_problem(record)
            if problem:
                raise PayloadError(f"the site's metrics of node {node}: {problem}")
            assert record is not None
            metrics[node] = record
        arrays = content.array_records.get("arrays")
        if aggregation != METRICS:
            if (arrays is None) != (not nodes):
                raise PayloadError("a site's training reply has arrays exactly when it has nodes")
            if arrays is not None and reference is not None:
                problem = arrays_problem(arrays, reference)
                if problem:
                    raise PayloadError(f"site aggregate refused: {problem}")
        rounds = site.get("local-rounds", 1)
        return cls(
            aggregation=aggregation,
            arrays=arrays if aggregation != METRICS else None,
            metrics=metrics,
            dropped={n: str(r) for n, r in zip(dropped, reasons, strict=True)},
            local_rounds=int(rounds) if isinstance(rounds, int) else 1,
        )

    def expand(self, messages: Mapping[int, Message]) -> list[Message]:
        """One reply per contributing device, to its message in ``messages`` (in that order):
        the site's arrays and the device's own metrics (see the module docstring)."""
        replies = []
        for node, message in messages.items():
            metrics = self.metrics.get(node)
            if metrics is None:
                continue
            content = RecordDict({"metrics": metrics})
            if self.arrays is not None:
                content = RecordDict({"arrays": self.arrays, "metrics": metrics})
            replies.append(Message(content, reply_to=message))
        return replies

    def facts(self) -> dict[str, object]:
        """What the operator sees of the site's share of a round."""
        return {
            "aggregated": len(self.metrics),
            "examples": self.examples,
            "train_loss": self.train_loss,
            "local_rounds": self.local_rounds,
        }


def aggregate_site(
    replies: Sequence[Message],
    reference: ArrayRecord,
    *,
    aggregation: str,
    clip_norm: float = 0.0,
) -> ArrayRecord:
    """The site aggregate of validated training ``replies`` (``mean`` or ``clipped-mean``),
    in ``reference``'s dtypes (the cloud checks them as it checks a device's update)."""
    if not replies:
        raise ValueError("a site aggregate needs at least one reply")
    if aggregation == MEAN:
        mean = aggregate_arrayrecords([r.content for r in replies], "num-examples")
        return ArrayRecord(
            {
                k: a if a.dtype == reference[k].dtype else _array(a.numpy(), reference[k])
                for k, a in mean.items()
            }
        )
    if aggregation != CLIPPED_MEAN:
        raise ValueError(f"unknown site aggregation {aggregation!r}")
    if not clip_norm > 0:
        raise ValueError("a clipped mean needs a positive clip norm")
    global_arrays = {k: v.numpy() for k, v in reference.items()}
    floats = {k: g for k, g in global_arrays.items() if np.issubdtype(g.dtype, np.floating)}
    total = {k: np.zeros(g.shape, dtype=np.float64) for k, g in floats.items()}
    for reply in replies:
        arrays = next(iter(reply.content.array_records.values()))
        delta = {k: arrays[k].numpy().astype(np.float64) - g for k, g in floats.items()}
        # Clipping is per device, before anything is summed: the sensitivity stays C.
        for k, d in clip_update(delta, clip_norm).items():
            total[k] += d
    return ArrayRecord(
        {
            k: _array(g + total[k] / len(replies), reference[k]) if k in total else Array(g)
            for k, g in global_arrays.items()
        }
    )


def _array(values: np.ndarray, like: Array) -> Array:
    return Array(np.asarray(values, dtype=np.dtype(like.dtype)))


class SiteExchange(Protocol):
    """How a site reaches its devices: send messages, collect the replies that come in time."""

    def exchange(self, messages: list[Message], *, timeout: float) -> list[Message]:
        """Send each message to its device; the replies received within ``timeout`` seconds."""
        ...

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply to the last exchange."""
        ...


def run_site(
    task: Message,
    nodes: Sequence[int],
    exchange: SiteExchange,
    *,
    aggregation: str,
    clip_norm: float = 0.0,
    site_rounds: int = 1,
    timeout: float,
) -> SiteResult:
    """Run the cloud's ``task`` on the site's devices ``nodes``; the site's one reply.

    Training runs ``site_rounds`` local rounds (the later ones from the site's own aggregate),
    sharing ``timeout`` seconds; the result is the last local round any device contributed
    to. Every device without a usable reply is dropped with its reason.
    """
    deadline = time.monotonic() + timeout
    rounds = site_rounds if aggregation != METRICS else 1
    result = SiteResult(aggregation=aggregation, local_rounds=rounds)
    content = task.content
    reference = content.array_records.get("arrays")
    for local_round in range(1, rounds + 1):
        share = max(0.0, deadline - time.monotonic()) / (rounds - local_round + 1)
        messages = [device_message(task, content, int(node)) for node in nodes]
        replies = exchange.exchange(messages, timeout=share)
        if aggregation == METRICS:
            kept, dropped = validate_evaluate_replies(replies)
        else:
            assert reference is not None, "a training task carries the global model"
            kept, dropped = validate_train_replies(replies, reference)
        answered = {int(r.metadata.src_node_id) for r in replies}
        dropped += [DroppedReply(n, exchange.missing_reason(n)) for n in nodes if n not in answered]
        result.dropped = {d.node_id: d.reason for d in dropped}
        if not kept:
            continue
        result.metrics = {int(r.metadata.src_node_id): _metrics(r) for r in kept}
        if aggregation == METRICS:
            break
        assert reference is not None
        result.arrays = aggregate_site(
            kept, reference, aggregation=aggregation, clip_norm=clip_norm
        )
        if local_round < rounds:  # the next local round starts from the site's model
            reference = result.arrays
            config = ConfigRecord(dict(content.config_records.get("config", ConfigRecord())))
            config["site-round"] = local_round + 1
            content = RecordDict({**dict(content.items()), "arrays": reference, "config": config})
    if result.metrics:
        # A device that answered an earlier local round but not the last one is dropped.
        result.dropped = {n: r for n, r in result.dropped.items() if n not in result.metrics}
    return result


def _number(record: MetricRecord, key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def device_message(task: Message, content: RecordDict, node_id: int) -> Message:
    """The site's share of ``task`` for its device ``node_id``: the task's run, group and
    type, from the site (node 0; whoever sends it sets the message id)."""
    meta = task.metadata
    # From explicit metadata, as Flower's own deserializer builds messages: not from the
    # process-wide task identity, which a gateway serving several runs does not have.
    return Message(  # type: ignore[call-overload]
        content=content,
        metadata=Metadata(
            run_id=meta.run_id,
            message_id="",
            src_node_id=0,
            dst_node_id=node_id,
            reply_to_message_id="",
            group_id=meta.group_id,
            created_at=time.time(),
            ttl=meta.ttl,
            message_type=meta.message_type,
        ),
    )


def _metrics(reply: Message) -> MetricRecord:
    return next(iter(reply.content.metric_records.values()))


def _int_list(value: object, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise PayloadError(f"a site reply's {name} must be a list of node ids")
    return [int(v) for v in value]
