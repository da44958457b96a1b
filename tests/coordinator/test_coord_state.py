"""The coordinator database on a real SQLite file: tokens, devices, runs, rounds."""

import time
from pathlib import Path

import pytest

from fedge.coordinator.state import RoundRow, RunState, State
from fedge.errors import NotFoundError, TokenError


def _state(tmp_path: Path) -> State:
    return State(tmp_path / "state.db")


def test_tokens_are_single_use_and_expire(tmp_path: Path) -> None:
    state = _state(tmp_path)
    token = state.create_token(ttl_seconds=60)
    device = state.enroll(secret=token.secret, name="a", cert_serial="1", device_id="dev-a")
    assert device.id == 1
    with pytest.raises(TokenError, match="already used"):
        state.enroll(secret=token.secret, name="b", cert_serial="2", device_id="dev-b")
    expired = state.create_token(ttl_seconds=0.01)
    time.sleep(0.05)
    with pytest.raises(TokenError, match="expired"):
        state.enroll(secret=expired.secret, name="c", cert_serial="3", device_id="dev-c")
    with pytest.raises(TokenError, match="unknown"):
        state.enroll(secret="guess", name="d", cert_serial="4", device_id="dev-d")
    assert [d.device_id for d in state.devices()] == ["dev-a"]


def test_state_survives_reopening(tmp_path: Path) -> None:
    state = _state(tmp_path)
    token = state.create_token(ttl_seconds=60)
    state.enroll(secret=token.secret, name="a", cert_serial="1", device_id="dev-a")
    run = state.create_run(config_json="{}", rounds_total=3)
    state.set_run_state(run.id, RunState.RUNNING, attempt=True)
    state.add_round(
        run.id,
        RoundRow(
            server_round=1, accuracy=0.5, loss=1.0, sampled=3, aggregated=3, dropped=0, seconds=1.0
        ),
    )
    # A resumed round replaces its earlier record.
    state.add_round(
        run.id,
        RoundRow(
            server_round=1, accuracy=0.6, loss=0.9, sampled=3, aggregated=2, dropped=1, seconds=1.0
        ),
    )
    state.revoke("dev-a")
    state.close()
    again = _state(tmp_path)
    assert again.run(0).state == RunState.RUNNING and again.run(0).attempts == 1
    assert [(r.server_round, r.accuracy) for r in again.rounds(run.id)] == [(1, 0.6)]
    device = again.device("dev-a")
    assert device is not None and device.revoked
    with pytest.raises(NotFoundError):
        again.revoke("dev-nope")
    with pytest.raises(NotFoundError):
        again.run(42)
