"""The federated app: ServerApp/ClientApp factories, strategies, update validation, results.

The names below load on first use, so that reading a run's options (:mod:`fedge.app.config`)
loads neither torch nor Flower.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedge.app.client import build_client_app
    from fedge.app.results import RoundRecord, RunResult
    from fedge.app.server import build_server_app, run_federation
    from fedge.app.strategies import build_strategy, list_strategies

__all__ = [
    "RoundRecord",
    "RunResult",
    "build_client_app",
    "build_server_app",
    "build_strategy",
    "list_strategies",
    "run_federation",
]

_HOMES = {
    "build_client_app": "fedge.app.client",
    "RoundRecord": "fedge.app.results",
    "RunResult": "fedge.app.results",
    "build_server_app": "fedge.app.server",
    "run_federation": "fedge.app.server",
    "build_strategy": "fedge.app.strategies",
    "list_strategies": "fedge.app.strategies",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fedge.app' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
