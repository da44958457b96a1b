"""The coordinator's run manager: runs one training run at a time on the ``grpc`` runtime.

A run is a row in the database plus a folder of checkpoints. The manager thread takes the
oldest run that is queued or was running when the coordinator last stopped, and runs
:func:`fedge.app.server.run_federation` on a :class:`~fedge.coordinator.grid.GrpcGrid`, starting
from the run's last checkpoint if it has one. So a coordinator killed mid-run resumes from
the last completed round on restart, without operator action, on the same devices: a run's
devices are pinned when it first starts, and every round waits for them. A round with too few
usable updates is retried from the last checkpoint up to ``max_attempts`` times, then fails the
run with each device's reason; a run never ends "completed" with a round nobody trained. The
checkpoint holds the strategy's server state and the records of the rounds before it, so a
resumed run continues as if uninterrupted and its ``results.json`` lists every round. A run
that completes builds its release (``release/`` in its folder) like ``fedge simulate`` does,
unless started with ``--no-release``; ``fedge release publish --run RUN`` publishes it.

A ``--mode async`` run instead runs :func:`fedge.app.async_loop.run_async_federation` on an
:class:`~fedge.coordinator.grid.AsyncGrpcGrid` (the wall clock), recording each model version
as a round and its live version, buffer and refusals in the run's row; it cannot resume (its
updates in flight are not kept), so an interrupted one starts again from version 0.
"""

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedge.app.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from fedge.app.config import RunConfig
from fedge.app.results import RoundRecord, RunResult, task_metrics
from fedge.coordinator.errors import RunStoppedError
from fedge.coordinator.gateways import Sites
from fedge.coordinator.grid import AsyncGrpcGrid, GrpcGrid
from fedge.coordinator.plan import may_train
from fedge.coordinator.state import RoundRow, RunRow, RunState, State
from fedge.errors import FedgeError, RoundFailedError
from fedge.log import logger
from fedge.protocol.tasks import TaskHub
from fedge.records import copy_fields
from fedge.runtime.local import set_server_identity

__all__ = ["RunManager"]


class RunManager:
    """Queues, runs, resumes and stops training runs."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        runs_dir: Path,
        max_attempts: int,
        wait_for_devices: float,
        on_round: Callable[[RoundRow], None] | None = None,
        sites: Sites | None = None,
    ) -> None:
        self._state = state
        self._hub = hub
        self._sites = sites or Sites(state, hub)
        self._runs_dir = runs_dir
        self._max_attempts = max_attempts
        self._wait_for_devices = wait_for_devices
        self._on_round = on_round or (lambda row: None)
        self._wake = threading.Event()
        self._shutdown = threading.Event()
        self._stop_run = threading.Event()
        self._active: int | None = None
        self._thread = threading.Thread(target=self._loop, name="fedge-runs", daemon=True)

    @property
    def active_run(self) -> int | None:
        """The id of the run in progress, if any."""
        return self._active

    def start(self) -> None:
        """Start the manager thread (resumes interrupted runs first)."""
        for run in self._state.runs(states=(RunState.RUNNING,)):
            self._state.add_event("resumed", "coordinator restarted: resuming", run_id=run.id)
        self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the manager; a run in progress stays ``running`` and resumes on restart."""
        self._shutdown.set()
        self._stop_run.set()
        self._wake.set()
        self._hub.notify()
        self._thread.join(timeout)

    def submit(self, config: RunConfig) -> RunRow:
        """Queue a run of ``config``."""
        row = self._state.create_run(
            config_json=json.dumps(config.to_run_config(), sort_keys=True),
            rounds_total=config.rounds,
        )
        self._state.add_event("queued", f"run {row.id} queued", run_id=row.id)
        self._wake.set()
        return row

    def stop(self, run_id: int) -> RunRow:
        """Stop run ``run_id`` (queued: at once; running: at the next round boundary)."""
        run = self._state.run(run_id)
        if run.state == RunState.QUEUED:
            self._state.set_run_state(run.id, RunState.STOPPED)
        elif run.state == RunState.RUNNING and self._active == run.id:
            self._stop_run.set()
            self._hub.notify()
        elif run.state == RunState.RUNNING:
            self._state.set_run_state(run.id, RunState.STOPPED)
        self._state.add_event("stop", f"operator stopped run {run.id}", run_id=run.id)
        return self._state.run(run.id)

    def run_dir(self, run_id: int) -> Path:
        """Where run ``run_id`` keeps its checkpoints and results."""
        return self._runs_dir / f"run-{run_id:05d}"

    def _loop(self) -> None:
        while not self._shutdown.is_set():
            pending = self._state.runs(states=(RunState.RUNNING, RunState.QUEUED))
            if not pending:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._execute(pending[0])

    def _execute(self, run: RunRow) -> None:
        self._active = run.id
        self._stop_run.clear()
        try:
            self._attempts(run)
        except Exception as err:  # a bug must fail the run, not kill the coordinator
            logger.exception("run %d crashed", run.id)
            self._state.set_run_state(run.id, RunState.FAILED, error=f"{type(err).__name__}: {err}")
            self._state.add_event("failed", f"{type(err).__name__}: {err}", run_id=run.id)
        finally:
            self._active = None

    def _attempts(self, run: RunRow) -> None:
        config = RunConfig.from_mapping(json.loads(run.config_json))
        while not self._shutdown.is_set():
            self._state.set_run_state(run.id, RunState.RUNNING, attempt=True)
            try:
                self._run_once(run.id, config)
            except RunStoppedError:
                if not self._shutdown.is_set():
                    self._state.set_run_state(run.id, RunState.STOPPED)
                return
            except RoundFailedError as err:
                if self._retry_or_fail(run.id, err):
                    continue
                return
            except FedgeError as err:
                self._state.set_run_state(run.id, RunState.FAILED, error=str(err))
                self._state.add_event("failed", str(err), run_id=run.id)
                return
            self._state.set_run_state(run.id, RunState.COMPLETED)
            self._state.add_event("completed", f"run {run.id} completed", run_id=run.id)
            return

    def _retry_or_fail(self, run_id: int, err: RoundFailedError) -> bool:
        attempts = self._state.run(run_id).attempts
        self._state.add_event("round-failed", str(err), run_id=run_id)
        for drop in err.drops:
            device = str(drop.get("device_id") or f"node {drop.get('node_id')}")
            self._state.add_event(
                "dropped", str(drop.get("reason")), run_id=run_id, device_id=device
            )
        if attempts < self._max_attempts:
            self._state.add_event(
                "retry",
                f"retrying from the last checkpoint (attempt {attempts + 1} of "
                f"{self._max_attempts})",
                run_id=run_id,
            )
            return True
        error = f"{err} (after {attempts} attempts)"
        self._state.set_run_state(run_id, RunState.FAILED, error=error)
        self._state.add_event("failed", error, run_id=run_id)
        return False

    def _run_once(self, run_id: int, config: RunConfig) -> None:
        from fedge.app.server import run_federation

        out = self.run_dir(run_id)
        if config.mode == "async":
            self._run_async(run_id, config, out)
            return
        # A checkpoint of the last round still goes through run_federation: it trains no more
        # rounds but writes results.json (all rounds, from the checkpoint) if the crash came
        # before it was written.
        start = self._checkpoint(out, run_id)
        grid = GrpcGrid(self._hub, **self._grid_options(run_id, config))

        def on_round(record: RoundRecord) -> None:
            row = _round_row(record)
            self._state.add_round(run_id, row)
            self._on_round(row)

        result = run_federation(grid, config, out_dir=out, on_round=on_round, start_from=start)
        if config.release and not (out / "release" / "model.onnx").is_file():
            self._build_release(run_id, config, out, result)

    def _run_async(self, run_id: int, config: RunConfig, out: Path) -> None:
        """Buffered asynchronous aggregation on the run's devices, on the wall clock."""
        from fedge.app.async_loop import run_async_federation

        if self._state.rounds(run_id):  # updates in flight were not kept
            self._state.add_event(
                "resumed",
                "an async run cannot resume: starting again from version 0",
                run_id=run_id,
            )
        options = self._grid_options(run_id, config)
        names = {d.id: d.device_id for d in self._state.devices()}
        grid = AsyncGrpcGrid(self._hub, round_timeout=config.round_timeout, **options)

        def on_round(record: RoundRecord) -> None:
            row = _round_row(record)
            row.async_json = json.dumps(_async_updates(record, names))
            self._state.add_round(run_id, row)
            self._on_round(row)

        def on_status(status: dict[str, Any]) -> None:
            refusals = [
                {**r, "device_id": names.get(r["node_id"], "")} for r in status["last_refusals"]
            ]
            self._state.set_run_async(run_id, {**status, "last_refusals": refusals})

        try:
            result = run_async_federation(
                grid, config, out_dir=out, on_round=on_round, on_status=on_status
            )
        finally:
            grid.withdraw_all()
        if result.stopped_reason:
            raise RoundFailedError(result.stopped_reason)
        if config.release and not (out / "release" / "model.onnx").is_file():
            self._build_release(run_id, config, out, result)

    def _grid_options(self, run_id: int, config: RunConfig) -> dict[str, Any]:
        """What a run's grid is built with: its pinned devices, names, events and stop."""
        set_server_identity(run_id)
        devices = self._pinned_devices(run_id, config.clients)
        names = {d.id: d.device_id for d in self._state.devices()}
        return dict(
            run_id=run_id,
            run_config=config.to_run_config(),
            nodes=lambda: [n for n in devices if self._trains(n)],
            min_replies=config.min_clients,
            wait_for_nodes=self._wait_for_devices,
            stop=self._stop_run,
            names=lambda node: names.get(node, ""),
            on_event=lambda kind, message: self._state.add_event(kind, message, run_id=run_id),
            sites=self._sites.of,
            online=self._sites.online,
            unreachable=self._sites.unreachable_reason,
        )

    def _build_release(self, run_id: int, config: RunConfig, out: Path, result: RunResult) -> None:
        from fedge.builder.runs import release_after_run

        self._state.add_event("release", "building the release of the final model", run_id=run_id)
        report = release_after_run(config, out, result)
        if report is not None:
            self._state.add_event(
                "release", f"built {out / 'release'}: {report.summary()}", run_id=run_id
            )

    def _trains(self, node_id: int) -> bool:
        device = next((d for d in self._state.devices() if d.id == node_id), None)
        return device is not None and may_train(device)

    def _pinned_devices(self, run_id: int, count: int) -> list[int]:
        """The run's devices: chosen when it first starts, the same after every restart."""
        run = self._state.run(run_id)
        if run.devices_json:
            return [int(n) for n in json.loads(run.devices_json)]
        candidates = [d for d in self._state.devices() if may_train(d)]
        online = set(self._sites.online([d.id for d in candidates]))
        # Prefer devices connected now and known to train; then enrolment order.
        candidates.sort(key=lambda d: (d.id not in online, not d.can_train, d.id))
        chosen = [d.id for d in candidates[:count]]
        self._state.set_run_devices(run_id, chosen)
        names = ", ".join(d.device_id for d in candidates[:count])
        self._state.add_event(
            "devices", f"the run trains on {len(chosen)} devices: {names}", run_id=run_id
        )
        return chosen

    def _checkpoint(self, out: Path, run_id: int) -> Checkpoint | None:
        # Resume from the last round the database recorded: a checkpoint written just before
        # a crash, whose round never reached the database, is ignored.
        rounds = self._state.rounds(run_id)
        if not rounds:
            return None
        path = out / "checkpoints" / f"round-{rounds[-1].server_round:04d}.pt"
        if not path.exists():
            self._state.add_event("checkpoint", f"{path} is missing: restarting", run_id=run_id)
            return None
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as err:
            self._state.add_event("checkpoint", f"ignored unreadable {path}: {err}", run_id=run_id)
            return None
        self._state.add_event(
            "resumed", f"resuming after round {checkpoint.server_round}", run_id=run_id
        )
        return checkpoint


def _async_updates(record: RoundRecord, names: dict[int, str]) -> list[dict[str, Any]]:
    """The updates an async version took: whose, how stale, with what weight."""
    extra = record.extra
    return [
        {"device_id": names.get(node, ""), "node_id": node, "staleness": tau, "weight": weight}
        for node, tau, weight in zip(
            extra["nodes"], extra["staleness"], extra["staleness_weights"], strict=True
        )
    ]


def _round_row(record: RoundRecord) -> RoundRow:
    epsilon = record.extra.get("epsilon")
    return copy_fields(
        RoundRow,
        record,
        server_round=record.round,
        dropped=len(record.dropped),
        drops_json=json.dumps(record.dropped),
        epsilon=float(epsilon) if isinstance(epsilon, int | float) else None,
        sites_json=json.dumps(record.extra.get("sites", [])),
        metrics_json=json.dumps(task_metrics(record)),
    )
