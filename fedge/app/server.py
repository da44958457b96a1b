"""The ServerApp factory and the round loop it runs on any ``Grid``.

fedge drives Flower's strategies itself instead of calling ``Strategy.start`` so that, on every
runtime, each reply is validated before aggregation, the global model is checkpointed every
round, and each round's record reaches the caller as soon as it is done.
"""

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from fedge.app.arrays import torch_state_dict
from fedge.app.async_loop import run_async_federation
from fedge.app.checkpoint import Checkpoint, model_checkpoint, save_checkpoint
from fedge.app.config import RunConfig
from fedge.app.metrics import evaluate_global
from fedge.app.personalize import PERSONAL_LAYERS, personalize_fleet
from fedge.app.results import RoundRecord, RunResult, write_plots, write_results
from fedge.app.resume import resume_fields, resume_run
from fedge.app.strategies import build_private_strategy
from fedge.app.training import set_seed
from fedge.app.validation import DroppedReply, validate_evaluate_replies, validate_train_replies
from fedge.data import Dataset
from fedge.errors import ConfigError, RoundFailedError
from fedge.log import logger
from fedge.privacy.central import CentralDP
from fedge.privacy.rounds import budget_stop_reason, privacy_notes, round_privacy

__all__ = [
    "DescribesRounds",
    "ExplainsDrops",
    "RoundCallback",
    "build_server_app",
    "run_federation",
]

RoundCallback = Callable[[RoundRecord], None]


def build_server_app(
    config: RunConfig | None = None,
    *,
    out_dir: Path | None = None,
    on_round: RoundCallback | None = None,
    results: list[RunResult] | None = None,
    device_state_root: Path | None = None,
    start_from: Checkpoint | None = None,
) -> ServerApp:
    """A ServerApp running ``config`` (or the run config of ``flwr run``).

    Each finished :class:`RunResult` is appended to ``results`` when given, and written to
    ``out_dir`` (``results.json``, checkpoints, plots) when given; ``start_from`` resumes a
    run after its checkpoint's round.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = dict(context.run_config)
        out = out_dir or (Path(str(run_config["out"])) if "out" in run_config else None)
        cfg = config or RunConfig.from_run_config(run_config)
        if cfg.runtime == "ray":
            _wait_for_simulated_fleet(grid, cfg.clients)
        result = run_federation(
            grid,
            cfg,
            out_dir=out,
            on_round=on_round,
            start_from=start_from,
            device_state_root=device_state_root,
        )
        if results is not None:
            results.append(result)

    return app


def run_federation(
    grid: Grid,
    config: RunConfig,
    *,
    out_dir: Path | None = None,
    on_round: RoundCallback | None = None,
    start_from: Checkpoint | None = None,
    device_state_root: Path | None = None,
) -> RunResult:
    """Run ``config.rounds`` rounds of federated training on ``grid``.

    With ``start_from`` (a checkpoint of this run), training resumes after its round.
    ``device_state_root`` (simulations) is where the devices' ledgers are, for the notes.
    With ``--mode async`` the run is buffered asynchronous aggregation instead
    (:func:`~fedge.app.async_loop.run_async_federation`).
    """
    if config.mode == "async":
        if start_from is not None:
            raise ConfigError("--resume", "async", "a --mode async run cannot be resumed")
        return run_async_federation(
            grid, config, out_dir=out_dir, on_round=on_round, device_state_root=device_state_root
        )
    set_seed(config.seed)
    started = time.perf_counter()
    dataset, model = config.dataset_and_model()
    if start_from is not None:
        model.load_state_dict(start_from.state_dict)
    arrays = ArrayRecord(model.state_dict())
    strategy = build_private_strategy(config)
    result = RunResult(config=config.to_dict())
    task = config.task_info
    if task is not None:
        result.notes["task"] = task
    if start_from is not None:  # the strategy's state, random generators and past rounds
        resume_run(start_from, strategy=strategy, result=result)
    first_round = start_from.server_round + 1 if start_from is not None else 1
    for server_round in range(first_round, config.rounds + 1):
        stop = budget_stop_reason(strategy, config.privacy, server_round)
        if stop is not None:
            result.stopped_reason = stop
            logger.warning("%s", stop)
            break
        round_started = time.perf_counter()
        train_config = ConfigRecord(
            {
                "lr": config.lr,
                "local-epochs": config.local_epochs,
                "batch-size": config.batch_size,
                "momentum": config.momentum,
            }
        )
        messages = list(strategy.configure_train(server_round, arrays, train_config, grid))
        replies = list(grid.send_and_receive(messages, timeout=config.round_timeout))
        kept, dropped = validate_train_replies(replies, arrays)
        dropped = _named([*dropped, *_missing(messages, replies, grid)], grid)
        for d in dropped:
            logger.warning("round %d: dropped node %d: %s", server_round, d.node_id, d.reason)
        _check_usable(server_round, len(messages), kept, dropped, config.min_clients)
        new_arrays, train_metrics = (
            # Central DP releases (noise) even for an empty sample, as its accountant assumes.
            strategy.aggregate_train(server_round, kept)
            if kept or isinstance(strategy, CentralDP)
            else (None, None)
        )
        if new_arrays is not None:
            arrays = _keep_dtypes(new_arrays, arrays)
        train_seconds = time.perf_counter() - round_started
        record = RoundRecord(
            round=server_round,
            accuracy=0.0,
            loss=0.0,
            seconds=0.0,
            train_seconds=train_seconds,
            train_loss=_metric(train_metrics, "train-loss"),
            sampled=len(messages),
            aggregated=len(kept) if new_arrays is not None else 0,
            dropped=[d.to_dict() for d in dropped],
        )
        record.extra.update(round_privacy(strategy, kept))
        if isinstance(grid, DescribesRounds):  # e.g. what each site's gateway sent
            record.extra.update(grid.round_facts(server_round))
        record.client_accuracy = _client_evaluate(strategy, server_round, arrays, grid, config)
        model.load_state_dict(torch_state_dict(arrays))
        evaluate_global(model, dataset, config.declared_task, record)
        record.seconds = time.perf_counter() - round_started
        result.rounds.append(record)
        if out_dir is not None:
            elapsed = result.total_seconds + time.perf_counter() - started
            resume = resume_fields(strategy=strategy, result=result, elapsed_seconds=elapsed)
            _checkpoint(out_dir, config, dataset, model, record, resume)
        logger.info(
            "round %d: accuracy %.4f loss %.4f (%.1fs)",
            server_round,
            record.accuracy,
            record.loss,
            record.seconds,
        )
        if on_round is not None:
            on_round(record)
    result.total_seconds += time.perf_counter() - started  # after a resume: plus the time before
    result.notes.update(
        privacy_notes(strategy, config.privacy, device_state_root=device_state_root)
    )
    if config.personalize != "off" or config.strategy in PERSONAL_LAYERS:
        result.notes["personalization"] = personalize_fleet(grid, config, arrays, out_dir)
    if out_dir is not None:
        write_results(out_dir, result)
        write_plots(out_dir, result)
    return result


@runtime_checkable
class ExplainsDrops(Protocol):
    """A ``Grid`` that can say why a node sent no reply and what the node is called."""

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply to the last messages."""
        ...

    def node_name(self, node_id: int) -> str:
        """The device behind ``node_id`` ("" if none)."""
        ...


@runtime_checkable
class DescribesRounds(Protocol):
    """A ``Grid`` with facts of its own about a round (e.g. per site), for the round's record."""

    def round_facts(self, server_round: int) -> dict[str, Any]:
        """JSON-ready facts about the training exchange of ``server_round``."""
        ...


def _missing(messages: list[Message], replies: list[Message], grid: Grid) -> list[DroppedReply]:
    answered = {int(r.metadata.src_node_id) for r in replies}
    silent = [int(m.metadata.dst_node_id) for m in messages]
    silent = [n for n in silent if n not in answered]
    explain = grid.missing_reason if isinstance(grid, ExplainsDrops) else None
    return [DroppedReply(n, explain(n) if explain else "no reply") for n in silent]


def _named(dropped: list[DroppedReply], grid: Grid) -> list[DroppedReply]:
    if not isinstance(grid, ExplainsDrops):
        return dropped
    return [replace(d, device_id=grid.node_name(d.node_id)) for d in dropped]


def _check_usable(
    server_round: int,
    asked: int,
    kept: list[Message],
    dropped: list[DroppedReply],
    min_clients: int,
) -> None:
    """A round nobody (or too few) trained is a failure, never an untrained model."""
    need = min(min_clients, asked)
    if len(kept) >= need:
        return
    reasons = "; ".join(f"{d.device_id or f'node {d.node_id}'}: {d.reason}" for d in dropped)
    raise RoundFailedError(
        f"round {server_round}: {len(kept)} of {asked} devices gave a usable update, need "
        f"{need}" + (f" ({reasons})" if reasons else ""),
        server_round=server_round,
        drops=[d.to_dict() for d in dropped],
    )


def _wait_for_simulated_fleet(grid: Grid, num_nodes: int, timeout: float = 300.0) -> None:
    # Flower's simulation engine registers its nodes while the ServerApp already runs; a
    # round sampled before then would see only part of a fleet that is known in full.
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(list(grid.get_node_ids()))} of {num_nodes} nodes joined")
        time.sleep(0.1)


def _client_evaluate(
    strategy: object, server_round: int, arrays: ArrayRecord, grid: Grid, config: RunConfig
) -> float | None:
    if config.fraction_evaluate <= 0:
        return None
    from flwr.serverapp.strategy import Strategy

    assert isinstance(strategy, Strategy)
    messages = strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
    replies = grid.send_and_receive(messages, timeout=config.round_timeout)
    kept, _ = validate_evaluate_replies(replies)
    metrics = strategy.aggregate_evaluate(server_round, kept) if kept else None
    return _metric(metrics, "eval-acc")


def _keep_dtypes(new: ArrayRecord, old: ArrayRecord) -> ArrayRecord:
    # FedOpt strategies (FedAdam, FedYogi, FedAdagrad) compute in float64 under NumPy 2's
    # promotion rules; the global model keeps its own dtypes, or every float32 reply of the
    # next round would be refused as the wrong dtype.
    if all(k in old and new[k].dtype == old[k].dtype for k in new):
        return new
    return ArrayRecord(
        {
            k: Array(np.asarray(a.numpy(), dtype=np.dtype(old[k].dtype)) if k in old else a.numpy())
            for k, a in new.items()
        }
    )


def _metric(metrics: object, key: str) -> float | None:
    if metrics is None:
        return None
    value = metrics.get(key)  # type: ignore[attr-defined]
    return float(value) if isinstance(value, int | float) else None


def _checkpoint(
    out_dir: Path,
    config: RunConfig,
    dataset: Dataset,
    model: torch.nn.Module,
    record: RoundRecord,
    resume: dict[str, Any],
) -> None:
    checkpoint = model_checkpoint(config, model, dataset, server_round=record.round, **resume)
    folder = out_dir / "checkpoints"
    save_checkpoint(folder / f"round-{record.round:04d}.pt", checkpoint)
    save_checkpoint(out_dir / "model.pt", checkpoint)
    stale = sorted(folder.glob("round-*.pt"))[: -config.keep_checkpoints]
    for path in stale:
        path.unlink(missing_ok=True)
