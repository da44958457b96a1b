"""The coordinator's Prometheus metrics: read from its state when scraped, plus live counters.

Gauges are computed at scrape time from the same state the control service reads (the
database, the reachability of devices wherever they are, the release store), so ``/metrics``,
``fedge fleet ls`` and the console never disagree. Counters and the round-duration histogram
are fed as things happen: refused calls (from the one interceptor, by RPC and status code) and
completed rounds. Names and labels follow Prometheus conventions (``fedge_`` prefix, base
units, ``_total`` counters).
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedge.coordinator.state import RunState, State
from fedge.log import logger

if TYPE_CHECKING:
    from fedge.coordinator.gateways import Sites
    from fedge.release.store import ReleaseStore

__all__ = ["CoordinatorMetrics", "device_state"]

ROUND_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_RUN_STATES = (
    RunState.QUEUED,
    RunState.RUNNING,
    RunState.COMPLETED,
    RunState.FAILED,
    RunState.STOPPED,
)


def device_state(state: str, *, revoked: bool, online: bool) -> str:
    """What the operator sees of a device: revoked, offline, or what its heartbeat says."""
    if revoked:
        return "revoked"
    return state if online else "offline"


@dataclass(kw_only=True, eq=False)  # eq=False: a registry keys its collectors by identity
class _StateCollector(Collector):
    """Gauges read from the coordinator's state at scrape time."""

    state: State
    sites: Sites
    releases: ReleaseStore
    downloads: Callable[[], int]

    def collect(self) -> Iterator[Metric]:
        """Every gauge; a failure to read one part is logged and the rest still served."""
        parts = (
            self._devices,
            self._personal,
            self._runs,
            self._async_runs,
            self._releases_metrics,
            self._drift,
        )
        for part in parts:
            try:
                yield from part()
            except Exception:  # a scrape must not fail because one table is busy or missing
                logger.exception("cannot collect %s metrics", part.__name__)

    def _devices(self) -> Iterator[Metric]:
        rows = self.state.devices()
        # Reachable as `fedge fleet ls` counts it: a device behind a gateway through its gateway.
        online = set(self.sites.online([d.id for d in rows]))
        states = Tally(
            device_state(d.state, revoked=d.revoked, online=d.id in online) for d in rows
        )
        devices = GaugeMetricFamily(
            "fedge_devices",
            "Enrolled devices by state (offline and revoked included).",
            labels=["state"],
        )
        for name in sorted({"offline", "revoked", *states}):
            devices.add_metric([name], states.get(name, 0))
        yield devices
        yield GaugeMetricFamily(
            "fedge_devices_online", "Devices seen within the liveness window.", value=len(online)
        )
        spent = GaugeMetricFamily(
            "fedge_device_privacy_epsilon",
            "Record-level privacy spent on each device (its local ledger's epsilon).",
            labels=["device"],
        )
        for d in rows:
            if d.privacy_spent is not None:
                spent.add_metric([d.device_id], d.privacy_spent)
        yield spent

    def _personal(self) -> Iterator[Metric]:
        reported = [d for d in self.state.devices() if d.personal_version]
        gain = GaugeMetricFamily(
            "fedge_device_personal_gain",
            "A device's last personalisation gain (validation accuracy, personal minus "
            "release), noised on the device.",
            labels=["device"],
        )
        for d in reported:
            gain.add_metric([d.device_id], d.personal_gain)
        yield gain
        reasons = GaugeMetricFamily(
            "fedge_devices_personal",
            'Devices by their last personalisation outcome as reported ("gain": serves its '
            "personal model; otherwise why it kept the release), noised on each device.",
            labels=["reason"],
        )
        for reason, count in sorted(Tally(d.personal_reason for d in reported).items()):
            reasons.add_metric([reason], count)
        yield reasons

    def _runs(self) -> Iterator[Metric]:
        runs = self.state.runs()
        by_state = Tally(r.state for r in runs)
        gauge = GaugeMetricFamily("fedge_runs", "Training runs by state.", labels=["state"])
        for name in _RUN_STATES:
            gauge.add_metric([name], by_state.get(name, 0))
        yield gauge
        rounds = GaugeMetricFamily(
            "fedge_run_rounds_completed", "Rounds a run has completed.", labels=["run"]
        )
        total = GaugeMetricFamily("fedge_run_rounds", "Rounds a run is to train.", labels=["run"])
        accuracy = GaugeMetricFamily(
            "fedge_run_accuracy", "Accuracy after a run's latest round.", labels=["run"]
        )
        epsilon = GaugeMetricFamily(
            "fedge_run_epsilon",
            "Central (client-level) privacy spent by a run after its latest round.",
            labels=["run"],
        )
        task = GaugeMetricFamily(
            "fedge_run_task_metric",
            "A run's task metric after its latest round (roc_auc; f1; mae, rmse).",
            labels=["run", "metric"],
        )
        for run in runs:
            done = self.state.rounds(run.id)
            label = [str(run.id)]
            rounds.add_metric(label, len(done))
            total.add_metric(label, run.rounds_total)
            if done:
                accuracy.add_metric(label, done[-1].accuracy)
                spent = [r.epsilon for r in done if r.epsilon is not None]
                if spent:
                    epsilon.add_metric(label, spent[-1])
                for name, value in json.loads(done[-1].metrics_json or "{}").items():
                    task.add_metric([*label, name], value)
        yield from (rounds, total, accuracy, epsilon, task)

    def _async_runs(self) -> Iterator[Metric]:
        """A --mode async run's model version, buffer, trainings out, staleness, refusals."""
        gauges = {
            key: GaugeMetricFamily(f"fedge_async_{key}", doc, labels=["run"])
            for key, doc in (
                ("version", "An async run's model version."),
                ("in_buffer", "Updates waiting in an async run's buffer."),
                ("training", "Devices training for an async run right now."),
                ("updates_applied", "Updates an async run has aggregated."),
            )
        }
        refused = GaugeMetricFamily(
            "fedge_async_updates_refused",
            "Updates an async run refused, by reason (stale: beyond --max-staleness).",
            labels=["run", "reason"],
        )
        staleness = GaugeMetricFamily(
            "fedge_async_updates_by_staleness",
            "Updates an async run received, by their staleness (versions behind).",
            labels=["run", "staleness"],
        )
        for run in self.state.runs():
            if not run.async_json:
                continue
            status = json.loads(run.async_json)
            label = [str(run.id)]
            for key, gauge in gauges.items():
                gauge.add_metric(label, status.get(key, 0))
            for reason, count in status.get("refused_by_reason", {}).items():
                refused.add_metric([*label, reason], count)
            for tau, count in status.get("staleness_histogram", {}).items():
                staleness.add_metric([*label, str(tau)], count)
        yield from (*gauges.values(), refused, staleness)

    def _releases_metrics(self) -> Iterator[Metric]:
        installs = GaugeMetricFamily(
            "fedge_release_devices",
            "Devices per install state of each release (running: serving it now).",
            labels=["version", "state"],
        )
        percent = GaugeMetricFamily(
            "fedge_release_rollout_percent",
            "Share of the fleet a release targets.",
            labels=["version"],
        )
        live = GaugeMetricFamily(
            "fedge_release_live", "1 for a live release, 0 for a withdrawn one.", labels=["version"]
        )
        for info in self.releases.list_releases():
            version = str(info.version)
            for name, count in self.releases.status(info.version).items():
                installs.add_metric([version, name], count)
            percent.add_metric([version], info.percent)
            live.add_metric([version], 0 if info.withdrawn else 1)
        yield from (installs, percent, live)
        yield GaugeMetricFamily(
            "fedge_downloads_in_flight",
            "Artifact downloads the model hub serves right now.",
            value=self.downloads(),
        )
        rollout = getattr(self.releases, "rollouts", None)
        if rollout is None:
            return
        stage = GaugeMetricFamily(
            "fedge_rollout_stage_percent",
            "The current stage of a health-gated rollout.",
            labels=["version", "state"],
        )
        failure = GaugeMetricFamily(
            "fedge_rollout_failure_ratio",
            "Failed outcomes (refused, failed, rolled back) over outcomes in a gated rollout.",
            labels=["version"],
        )
        for plan in rollout.all():
            stage.add_metric([str(plan.version), plan.state], plan.stages[plan.stage])
            counts = self.releases.status(plan.version)
            failed = sum(counts[s] for s in ("refused", "failed", "rolled_back"))
            outcomes = failed + counts["installed"]
            failure.add_metric([str(plan.version)], failed / outcomes if outcomes else 0.0)
        yield from (stage, failure)

    def _drift(self) -> Iterator[Metric]:
        drift = getattr(self.releases, "drift", None)
        if drift is None:
            return
        psi = GaugeMetricFamily(
            "fedge_drift_psi",
            "Population stability index of a device's latest window against its release.",
            labels=["device", "kind"],
        )
        flagged = 0
        for row in drift.latest():
            psi.add_metric([row.device_id, "classes"], row.psi_classes)
            psi.add_metric([row.device_id, "inputs"], row.psi_inputs)
            for feature, value in row.psi_features.items():
                psi.add_metric([row.device_id, f"feature:{feature}"], value)
            flagged += int(row.drifted)
        yield psi
        yield GaugeMetricFamily(
            "fedge_devices_drifted", "Devices whose latest window drifted.", value=flagged
        )


class CoordinatorMetrics:
    """The coordinator's metric registry (one per coordinator, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.refusals = Counter(
            "fedge_rpc_refusals",
            "Calls the coordinator refused, by RPC and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rounds = Counter(
            "fedge_rounds",
            "Training rounds completed (since the coordinator started).",
            registry=self.registry,
        )
        self.round_seconds = Histogram(
            "fedge_round_duration_seconds",
            "Wall-clock time of each completed training round.",
            buckets=ROUND_BUCKETS,
            registry=self.registry,
        )

    def attach(
        self,
        *,
        state: State,
        sites: Sites,
        releases: ReleaseStore,
        downloads: Callable[[], int],
    ) -> None:
        """Serve the gauges read from this state (once it is open)."""
        self.registry.register(
            _StateCollector(state=state, sites=sites, releases=releases, downloads=downloads)
        )

    def refused(self, method: str, code: str) -> None:
        """Count a refused call."""
        self.refusals.labels(method=method, code=code).inc()

    def round_done(self, seconds: float) -> None:
        """Count a completed round and its duration."""
        self.rounds.inc()
        self.round_seconds.observe(seconds)
