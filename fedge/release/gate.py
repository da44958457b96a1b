"""Health-gated rollouts: the coordinator widens a release stage by stage, and stops it on failures.

A release published with a :class:`RolloutPolicy` (``fedge release publish ... --stages
10,50,100 --max-failure-rate 0.2 --min-devices N --stage-wait S``) starts at its first stage.
The :class:`RolloutController` looks at it every few seconds, as AWS Greengrass's job abort
criteria and Mender's phased rollouts do:

* the **health gate**: once at least ``min_devices`` devices have an outcome for the release,
  and the share of failures among them (refused, failed, rolled back) passes
  ``max_failure_rate``, the rollout is **halted**: the release is withdrawn and the last good
  model re-shipped to the whole fleet as a new, higher version (the operator's rollback), and
  the reason is recorded (an event, and ``fedge release status``);
* a **stage** ends once ``stage_wait`` seconds have passed since it began *and* every device it
  targets has an outcome; the next stage then begins. After the last stage (100%) the rollout
  is **completed** when every device has one.

The operator can pause (no promotion; the health gate still halts), resume (the stage's wait
starts again) or abort (halt now and roll back) it. The rollout lives in the release database,
so a coordinator restart picks it up where it stood.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedge.errors import ReleaseError
from fedge.log import logger
from fedge.release.rollout_table import (
    ABORTED,
    COMPLETED,
    FAILED_STATES,
    HALTED,
    OUTCOME_STATES,
    PAUSED,
    RUNNING,
    Rollout,
)

if TYPE_CHECKING:
    from fedge.release.store import ReleaseStore

__all__ = ["RolloutController"]


class RolloutController:
    """Moves every active gated rollout on (see the module docstring); one thread."""

    def __init__(
        self,
        store: ReleaseStore,
        *,
        on_event: Callable[[str, str], None] | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_event = on_event or (lambda kind, message: None)
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="fedge-rollouts", daemon=True)

    def start(self) -> None:
        """Start looking after the rollouts (those in progress before a restart too)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_once()
            except Exception:  # a bad row must not stop the gate for every other rollout
                logger.exception("the rollout controller failed a check")

    # operator actions

    def pause(self, version: int) -> Rollout:
        """Hold a running rollout at its stage (the health gate still halts it)."""
        return self._switch(version, RUNNING, PAUSED, "paused")

    def resume(self, version: int) -> Rollout:
        """Go on with a paused rollout (its stage's wait starts again)."""
        return self._switch(version, PAUSED, RUNNING, "resumed", restart_stage=True)

    def _switch(
        self, version: int, was: str, to: str, what: str, *, restart_stage: bool = False
    ) -> Rollout:
        with self._lock:
            rollout = self._store.rollouts.require(version)
            if rollout.state != was:
                raise ReleaseError(f"the rollout of release {version} is {rollout.state}")
            self._on_event("rollout", f"release {version}: rollout {what}")
            restart = {"stage_started": self._clock()} if restart_stage else {}
            return self._store.rollouts.update(version, state=to, **restart)

    def abort(self, version: int) -> Rollout:
        """Stop a rollout now and roll the fleet back to the last good release."""
        with self._lock:
            rollout = self._store.rollouts.require(version)
            if not rollout.active:
                raise ReleaseError(f"the rollout of release {version} is {rollout.state}")
            return self._halt(rollout, ABORTED, "aborted by the operator")

    # the gate

    def check_once(self) -> None:
        """Look at every active rollout once: halt, promote, complete, or wait."""
        with self._lock:
            for rollout in self._store.rollouts.all():
                if rollout.active:
                    self._check(rollout)

    def _check(self, rollout: Rollout) -> None:
        version, policy = rollout.version, rollout.policy
        info = self._store.get(version)
        if info.withdrawn:
            self._store.rollouts.update(
                version, state=ABORTED, reason="the release was rolled back by the operator"
            )
            return
        counts = self._store.status(version)
        failures = sum(counts[s] for s in FAILED_STATES)
        outcomes = failures + counts["installed"]
        if outcomes >= policy.min_devices and failures / outcomes > policy.max_failure_rate:
            detail = ", ".join(f"{s.replace('_', ' ')} {counts[s]}" for s in FAILED_STATES)
            self._halt(
                rollout,
                HALTED,
                f"failure rate {failures / outcomes:.2f} ({failures} of {outcomes} devices: "
                f"{detail}) passed {policy.max_failure_rate:.2f} at stage {rollout.stage + 1} "
                f"({rollout.stages[rollout.stage]}%)",
            )
            return
        if rollout.state != RUNNING:
            return
        targeted = self._store.targeted(version)
        reported = {d for d, s in self._store.outcomes(version).items() if s in OUTCOME_STATES}
        waiting = targeted - reported
        if waiting:
            return
        last = rollout.stage == len(rollout.stages) - 1
        if last:
            self._store.rollouts.update(version, state=COMPLETED)
            self._on_event(
                "rollout",
                f"release {version}: rollout completed, {counts['installed']} installed, "
                f"{failures} failed of {outcomes} devices",
            )
            return
        if self._clock() - rollout.stage_started < policy.stage_wait:
            return
        stage = rollout.stage + 1
        percent = rollout.stages[stage]
        self._store.promote(version, percent=max(percent, info.percent))
        self._store.rollouts.update(version, stage=stage, stage_started=self._clock())
        self._on_event(
            "rollout",
            f"release {version}: stage {stage + 1}/{len(rollout.stages)}, {percent}% "
            f"({failures} of {outcomes} devices failed so far)",
        )

    def _halt(self, rollout: Rollout, state: str, why: str) -> Rollout:
        version = rollout.version
        try:
            signed = self._store.rollback(version=version)
        except ReleaseError as err:
            # Nothing to go back to: stop offering it, and say so.
            self._store.promote(version, percent=0)
            reason = f"{why}; not rolled back ({err}); release {version} is held at 0%"
            rollback_version = 0
        else:
            rollback_version = signed.manifest.version
            reason = f"{why}; the fleet was rolled back with release {rollback_version}"
        logger.warning("release %d: rollout %s: %s", version, state, reason)
        self._on_event("rollout", f"release {version}: rollout {state}: {reason}")
        return self._store.rollouts.update(
            version, state=state, reason=reason, rollback_version=rollback_version
        )
