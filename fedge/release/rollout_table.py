"""A gated rollout as the release database keeps it: :class:`Rollout` and its table.

:mod:`fedge.release.gate` moves rollouts on; the release store creates them with a release.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fedge.errors import ReleaseError, ReleaseNotFoundError
from fedge.release.rollout import RolloutPolicy
from fedge.release.tables import RolloutRow

__all__ = [
    "ABORTED",
    "COMPLETED",
    "FAILED_STATES",
    "HALTED",
    "OUTCOME_STATES",
    "PAUSED",
    "RUNNING",
    "Rollout",
    "RolloutTable",
]

FAILED_STATES = ("refused", "failed", "rolled_back")
OUTCOME_STATES = ("installed", *FAILED_STATES)

RUNNING, PAUSED, COMPLETED, HALTED, ABORTED = "running", "paused", "completed", "halted", "aborted"


@dataclass(frozen=True)
class Rollout:
    """A gated rollout as stored: its policy, stage, state and why it stopped."""

    version: int
    policy: RolloutPolicy
    stage: int
    state: str
    stage_started: float
    reason: str
    rollback_version: int

    @property
    def stages(self) -> tuple[int, ...]:
        """The policy's stages."""
        return self.policy.stages

    @property
    def active(self) -> bool:
        """Whether the controller still looks after it."""
        return self.state in (RUNNING, PAUSED)


def _rollout(row: RolloutRow) -> Rollout:
    policy = RolloutPolicy(
        stages=tuple(json.loads(row.stages_json)),
        max_failure_rate=row.max_failure_rate,
        min_devices=row.min_devices,
        stage_wait=row.stage_wait,
    )
    return Rollout(
        row.version,
        policy,
        row.stage,
        row.state,
        row.stage_started,
        row.reason,
        row.rollback_version,
    )


class RolloutTable:
    """The ``release_rollouts`` table of a release database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, version: int, policy: RolloutPolicy) -> Rollout:
        """Start the gated rollout of ``version`` at its first stage."""
        with Session(self._engine) as session, session.begin():
            if session.get(RolloutRow, version) is not None:
                raise ReleaseError(f"release {version} already has a gated rollout")
            row = RolloutRow(
                version=version,
                stages_json=json.dumps(list(policy.stages)),
                stage=0,
                max_failure_rate=policy.max_failure_rate,
                min_devices=policy.min_devices,
                stage_wait=policy.stage_wait,
                state=RUNNING,
                stage_started=time.time(),
                reason="",
                rollback_version=0,
            )
            session.add(row)
            return _rollout(row)

    def get(self, version: int) -> Rollout | None:
        """The gated rollout of ``version``, if it has one."""
        with Session(self._engine) as session:
            row = session.get(RolloutRow, version)
            return None if row is None else _rollout(row)

    def require(self, version: int) -> Rollout:
        """The gated rollout of ``version``; :class:`ReleaseNotFoundError` if it has none."""
        rollout = self.get(version)
        if rollout is None:
            raise ReleaseNotFoundError(
                f"release {version} has no gated rollout (publish it with --stages)"
            )
        return rollout

    def all(self) -> list[Rollout]:
        """Every gated rollout, newest release first."""
        with Session(self._engine) as session:
            rows = session.scalars(select(RolloutRow).order_by(RolloutRow.version.desc()))
            return [_rollout(r) for r in rows]

    def update(self, version: int, **values: object) -> Rollout:
        """Change fields of the rollout of ``version``."""
        with Session(self._engine) as session, session.begin():
            row = session.get(RolloutRow, version)
            if row is None:
                raise ReleaseNotFoundError(f"release {version} has no gated rollout")
            for name, value in values.items():
                setattr(row, name, value)
            return _rollout(row)
