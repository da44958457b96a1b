"""Buffered asynchronous aggregation (``--mode async``): the server loop over a fleet on a clock.

The server keeps a model version. Whenever fewer than ``--concurrency`` devices are training,
it gives the current version to reachable, free devices (picked at random by the run's seed);
each trains and delivers its update with the version it started from. An update more than
``--max-staleness`` versions old is refused with that reason; the others wait in a buffer, and
every ``--buffer`` updates the server steps to a new version (:mod:`fedge.app.fedbuff`). A
device gives at most one update to a buffer, and does not start twice from the same version
(it would send the same update again). Under central DP each aggregation is noised once and
each device's contributions are bounded (:mod:`fedge.privacy.participation`).

The loop drives a :class:`DeviceClock`: a fleet whose devices come and go on a clock. The
simulated fleet (:class:`fedge.runtime.clock.SimulatedClockGrid`) advances its clock from event
to event, so hundreds of devices and hours of simulated time run in seconds.
"""

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedge.app.checkpoint import model_checkpoint, save_checkpoint
from fedge.app.config import RunConfig
from fedge.app.fedbuff import (
    StalenessWeight,
    apply_update,
    buffered_update,
    model_delta,
    parse_staleness_weight,
)
from fedge.app.metrics import evaluate_global
from fedge.app.results import RoundRecord, RunResult, write_plots, write_results
from fedge.app.training import set_seed
from fedge.app.validation import DroppedReply, validate_train_replies
from fedge.data import Dataset
from fedge.errors import ConfigError
from fedge.log import logger
from fedge.privacy.participation import ParticipationBoundDP
from fedge.privacy.rounds import privacy_notes, round_privacy

__all__ = ["DeviceClock", "StatusCallback", "run_async_federation"]

#: Told the run's :meth:`_AsyncServer.status` whenever an update arrives or a version is made.
StatusCallback = Callable[[dict[str, Any]], None]

_NOTED_STATUS = (
    "updates_received",
    "updates_applied",
    "updates_refused",
    "refused_by_reason",
    "staleness_histogram",
)


@runtime_checkable
class DeviceClock(Protocol):
    """A fleet whose devices come and go on a clock (seconds since the run began)."""

    @property
    def now(self) -> float:
        """The clock's time."""
        ...

    @property
    def training(self) -> int:
        """How many started trainings have not delivered yet."""
        ...

    def devices(self) -> list[int]:
        """Every node of the fleet, reachable or not."""
        ...

    def reachable(self, node_ids: Sequence[int]) -> list[int]:
        """The members of ``node_ids`` that can be given work now."""
        ...

    def next_reachable(self, node_ids: Sequence[int]) -> float:
        """The first time after now when one of ``node_ids`` that is not reachable now becomes
        reachable (``inf``: never)."""
        ...

    def start_training(self, messages: Sequence[Message]) -> None:
        """Hand training messages to their (reachable) nodes."""
        ...

    def wait(self, until: float) -> list[Message]:
        """Let time pass until the next delivery (return the replies delivered then) or until
        ``until`` (return none), whichever is first."""
        ...


@dataclass
class _Buffered:
    node_id: int
    delta: dict[str, np.ndarray]
    staleness: int
    weight: float
    reply: Message


@dataclass
class _Version:
    """What the loop observed between two aggregations."""

    started_at: float
    wall_started: float
    dispatched: int = 0
    refused: list[DroppedReply] = field(default_factory=list)


class _AsyncServer:
    """The state of one async run: the model versions, who trains, the buffer, the log."""

    def __init__(self, grid: DeviceClock, config: RunConfig, arrays: ArrayRecord) -> None:
        self.fleet = grid
        self.config = config
        self.weight: StalenessWeight = parse_staleness_weight(config.staleness_weight)
        self.version = 0
        self.model = {k: v.numpy() for k, v in arrays.items()}
        self.starts: dict[int, dict[str, np.ndarray]] = {0: self.model}
        self.busy: dict[int, int] = {}
        self.last_start: dict[int, int] = {}
        self.buffer: list[_Buffered] = []
        self.staleness = Counter[int]()
        self.refusals = Counter[str]()
        self.received = 0
        self.last_refusals: list[dict[str, Any]] = []
        self.rng = np.random.default_rng([config.seed, 0xB0FF])
        self.dp = _participation_dp(config)
        self.current = _Version(started_at=0.0, wall_started=time.perf_counter())

    def eligible(self) -> list[int]:
        """Idle devices that may start from the current version."""
        in_buffer = {b.node_id for b in self.buffer}
        return [
            n
            for n in self.fleet.devices()
            if n not in self.busy
            and n not in in_buffer
            and self.last_start.get(n) != self.version
            and (self.dp is None or self.dp.may_contribute(n))
        ]

    def dispatch(self) -> None:
        """Start as many reachable, eligible devices as the concurrency leaves room for."""
        room = self.config.concurrency - self.fleet.training
        if room <= 0:
            return
        ready = self.fleet.reachable(self.eligible())
        if not ready:
            return
        chosen = sorted(int(n) for n in self.rng.permutation(ready)[:room])
        arrays = ArrayRecord({k: _array(v) for k, v in self.model.items()})
        messages = [self._message(node, arrays) for node in chosen]
        for node in chosen:
            self.busy[node] = self.version
            self.last_start[node] = self.version
        self.starts[self.version] = self.model
        self.current.dispatched += len(chosen)
        self.fleet.start_training(messages)

    def _message(self, node: int, arrays: ArrayRecord) -> Message:
        config = ConfigRecord(
            {
                "lr": self.config.lr,
                "local-epochs": self.config.local_epochs,
                "batch-size": self.config.batch_size,
                "momentum": self.config.momentum,
                # The version this update will count towards: a device starts at most once
                # from a version, so its training seed differs every time.
                "server-round": self.version + 1,
            }
        )
        if self.config.strategy == "fedprox":
            config["proximal-mu"] = self.config.proximal_mu
        content = RecordDict({"arrays": arrays, "config": config})
        return Message(
            content, dst_node_id=node, message_type=MessageType.TRAIN, group_id=str(self.version)
        )

    def receive(self, reply: Message) -> bool:
        """Refuse or buffer one delivered update; True when the buffer is full."""
        node = int(reply.metadata.src_node_id)
        started = self.busy.pop(node)
        staleness = self.version - started
        claimed = reply.metadata.group_id
        if claimed != str(started):  # the version a reply says it started from is checked
            self.received += 1
            self._forget_unused_versions()
            return self._refuse(node, f"answers version {claimed!r}, it was given {started}")
        start_model = self.starts[started]
        self._forget_unused_versions()
        self.received += 1
        self.staleness[staleness] += 1
        limit = self.config.max_staleness
        if staleness > limit:
            reason = f"stale: {staleness} versions old > --max-staleness {limit}"
            return self._refuse(node, reason, quiet=True)
        reference = ArrayRecord({k: _array(v) for k, v in start_model.items()})
        kept, dropped = validate_train_replies([reply], reference)
        if dropped:
            return self._refuse(node, dropped[0].reason)
        trained = {k: v.numpy() for k, v in _arrays_of(kept[0]).items()}
        delta = model_delta(trained, start_model)
        self.buffer.append(_Buffered(node, delta, staleness, self.weight(staleness), kept[0]))
        return len(self.buffer) >= self.config.buffer

    def _refuse(self, node: int, reason: str, *, quiet: bool = False) -> bool:
        # Stale updates are expected under async (they are counted and listed); bad ones are not.
        log = logger.info if quiet else logger.warning
        log("version %d: refused node %d: %s", self.version, node, reason)
        self.current.refused.append(DroppedReply(node, reason))
        self.refusals[reason.split(":")[0]] += 1
        self.last_refusals = [*self.last_refusals, {"node_id": node, "reason": reason}][-10:]
        return False

    def _forget_unused_versions(self) -> None:
        needed = {*self.busy.values(), self.version}
        self.starts = {v: m for v, m in self.starts.items() if v in needed}

    def aggregate(self) -> list[_Buffered]:
        """Step to the next version from the full buffer; returns the updates it used."""
        used, self.buffer = self.buffer, []
        deltas = [b.delta for b in used]
        weights = [b.weight for b in used]
        if self.dp is not None:
            update = self.dp.noised_update([b.node_id for b in used], deltas, weights)
        else:
            update = buffered_update(deltas, weights, self.config.buffer)
        self.model = apply_update(self.model, update, self.config.async_lr)
        self.version += 1
        self.starts[self.version] = self.model
        return used

    def record(self, used: list[_Buffered], wall_seconds: float) -> RoundRecord:
        """The new version's record (test metrics are filled in by the caller)."""
        losses = [_train_loss(b.reply) for b in used]
        known = [loss for loss in losses if loss is not None]
        record = RoundRecord(
            round=self.version,
            accuracy=0.0,
            loss=0.0,
            seconds=wall_seconds,
            train_seconds=wall_seconds,
            train_loss=float(np.mean(known)) if known else None,
            sampled=self.current.dispatched,
            aggregated=len(used),
            dropped=[d.to_dict() for d in self.current.refused],
        )
        staleness = [b.staleness for b in used]
        record.extra.update(
            {
                "version": self.version,
                "nodes": [b.node_id for b in used],
                "sim_time": self.fleet.now,
                "sim_round_seconds": self.fleet.now - self.current.started_at,
                "staleness": staleness,
                "staleness_mean": float(np.mean(staleness)),
                "staleness_max": max(staleness),
                "staleness_weights": [round(b.weight, 6) for b in used],
                "refused": len(self.current.refused),
                "training": self.fleet.training,
            }
        )
        record.extra.update(round_privacy(None, [b.reply for b in used]))
        if self.dp is not None:
            record.extra.update(
                {
                    "epsilon": self.dp.epsilon,
                    "delta": self.dp.delta,
                    "dp_clip": self.dp.clip_norm,
                    "dp_noise_std": self.dp.noise_multiplier
                    * self.dp.clip_norm
                    / self.config.buffer,
                }
            )
        self.current = _Version(started_at=self.fleet.now, wall_started=time.perf_counter())
        return record

    def status(self) -> dict[str, Any]:
        """Where the run is now: its model version, the buffer, who trains, what was refused."""
        refused = sum(self.refusals.values())
        return {
            "version": self.version,
            "in_buffer": len(self.buffer),
            "buffer": self.config.buffer,
            "training": self.fleet.training,
            "updates_received": self.received,
            "updates_applied": self.received - refused - len(self.buffer),
            "updates_refused": refused,
            "refused_by_reason": dict(self.refusals),
            "last_refusals": list(self.last_refusals),
            "staleness_histogram": {str(k): v for k, v in sorted(self.staleness.items())},
        }

    def notes(self, stopped: str | None) -> dict[str, Any]:
        """The run-level ``async`` section of ``results.json``."""
        status = self.status()
        return {
            "mode": "async",
            "buffer": self.config.buffer,
            "concurrency": self.config.concurrency,
            "max_staleness": self.config.max_staleness,
            "staleness_weight": self.weight.describe(),
            "async_lr": self.config.async_lr,
            "versions": self.version,
            **{k: status[k] for k in _NOTED_STATUS},
            "left_in_buffer": status["in_buffer"],
            "training_at_end": status["training"],
            "sim_time": self.fleet.now,
            "stopped_reason": stopped,
        }


def run_async_federation(
    grid: Grid,
    config: RunConfig,
    *,
    out_dir: Path | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    device_state_root: Path | None = None,
    on_status: StatusCallback | None = None,
) -> RunResult:
    """Run ``config.rounds`` model versions of buffered asynchronous aggregation on ``grid``."""
    if not isinstance(grid, DeviceClock):
        raise ConfigError(
            "--mode",
            "async",
            "needs a fleet on a clock (the local runtime's simulated clock or a coordinator's)",
        )
    set_seed(config.seed)
    started = time.perf_counter()
    dataset, model = config.dataset_and_model()
    server = _AsyncServer(grid, config, ArrayRecord(model.state_dict()))
    result = RunResult(config=config.to_dict())
    if config.task_info is not None:
        result.notes["task"] = config.task_info
    stopped: str | None = None
    while server.version < config.rounds:
        server.dispatch()
        room = server.fleet.training < config.concurrency
        until = grid.next_reachable(server.eligible()) if room else math.inf
        if grid.training == 0 and until == math.inf:
            stopped = _why_stalled(server)
            result.stopped_reason = stopped
            logger.warning("%s", stopped)
            break
        for reply in grid.wait(until):
            full = server.receive(reply)
            if on_status is not None:
                on_status(server.status())
            if not full:
                continue
            used = server.aggregate()
            record = server.record(used, time.perf_counter() - server.current.wall_started)
            _evaluate_version(record, model, server.model, dataset, config)
            result.rounds.append(record)
            if out_dir is not None:  # the latest version only: an async run cannot be resumed
                checkpoint = model_checkpoint(config, model, dataset, server_round=record.round)
                save_checkpoint(out_dir / "model.pt", checkpoint)
            logger.info(
                "version %d: accuracy %.4f at t=%.0fs (staleness mean %.1f)",
                record.round,
                record.accuracy,
                record.extra["sim_time"],
                record.extra["staleness_mean"],
            )
            if on_round is not None:
                on_round(record)
            if on_status is not None:
                on_status(server.status())
            if server.version >= config.rounds:
                break
    result.total_seconds = time.perf_counter() - started
    result.notes["async"] = server.notes(stopped)
    result.notes.update(_privacy_notes(server, config, device_state_root))
    if out_dir is not None:
        write_results(out_dir, result)
        write_plots(out_dir, result)
    return result


def _participation_dp(config: RunConfig) -> ParticipationBoundDP | None:
    privacy = config.privacy
    if not privacy.central:
        return None
    return ParticipationBoundDP(
        noise_multiplier=privacy.async_noise_multiplier(),
        clip_norm=privacy.dp_clip,
        buffer_size=config.buffer,
        max_participations=int(privacy.dp_participations or 1),
        delta=privacy.dp_delta,
        accountant=privacy.dp_accountant,
        seed=privacy.dp_seed,
    )


def _why_stalled(server: _AsyncServer) -> str:
    dp, buffer = server.dp, server.config.buffer
    if dp is not None:
        left = [n for n in server.fleet.devices() if dp.may_contribute(n)]
        if len(left) < buffer:
            return (
                f"only {len(left)} devices have --dp-participations left ({dp.max_participations} "
                f"each), fewer than --buffer {buffer}: stopped at version {server.version}"
            )
    return (
        f"no device can train any more (none will be reachable, or all wait for a new version "
        f"with {len(server.buffer)} of {buffer} updates buffered); stopped at version "
        f"{server.version}"
    )


def _evaluate_version(
    record: RoundRecord,
    model: torch.nn.Module,
    arrays: dict[str, np.ndarray],
    dataset: Dataset,
    config: RunConfig,
) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    evaluate_global(model, dataset, config.declared_task, record)


def _privacy_notes(
    server: _AsyncServer, config: RunConfig, device_state_root: Path | None
) -> dict[str, Any]:
    notes = privacy_notes(None, config.privacy, device_state_root=device_state_root)
    if server.dp is not None:
        dp = server.dp
        notes["privacy"]["central"] = {
            "level": "device",
            "mechanism": "Gaussian per aggregation, no subsampling; bounded participations",
            "adjacency": "zero-out (a device's updates replaced by zeros; who trains when is "
            "public)",
            "noise_multiplier": dp.noise_multiplier,
            "clip": dp.clip_norm,
            "denominator": dp.buffer_size,
            "max_participations": dp.max_participations,
            "most_participations": max(dp.participations.values(), default=0),
            "epsilon": dp.epsilon,
            "epsilon_bound": dp.epsilon_bound,
            "max_epsilon": config.privacy.dp_max_epsilon,
            "target_epsilon": config.privacy.dp_target_epsilon,
        }
    return notes


def _array(value: np.ndarray) -> Array:
    return Array(np.ascontiguousarray(value))


def _arrays_of(reply: Message) -> ArrayRecord:
    return next(iter(reply.content.array_records.values()))


def _train_loss(reply: Message) -> float | None:
    for metrics in reply.content.metric_records.values():
        value = metrics.get("train-loss")
        if isinstance(value, int | float):
            return float(value)
    return None
