"""Shared fixtures: quiet Flower logs and small, fast run configs."""

import logging

import pytest

from fedge.config import RunConfig


@pytest.fixture(autouse=True)
def _quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.ERROR)


@pytest.fixture
def tiny_config() -> RunConfig:
    """A run that takes a second or two: 8x8 digits, a small CNN, 4 clients, 2 rounds."""
    return RunConfig(
        dataset="digits",
        model="cnn-small",
        clients=4,
        rounds=2,
        local_epochs=2,
        lr=0.05,
        batch_size=16,
    )
