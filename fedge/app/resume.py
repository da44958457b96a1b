"""What a checkpoint needs besides the model, so that a resumed run continues exactly.

Flower's strategies keep state between rounds on the instance and offer no API to save it:
FedOpt's (FedAdam, FedYogi, FedAdagrad) moment estimates ``m_t``/``v_t`` and ``current_arrays``,
FedAvgM's momentum, the DP wrappers' clipping norm; fedge's ``CentralDP`` keeps its accountant's
history (ε must not restart from zero), its random generators and its adaptive clip norm. So
:func:`capture_strategy` records every *data* attribute of the strategy, recursing into wrapped
strategies and fedge's helper objects, as a tree of tensors and plain values that
``torch.load(weights_only=True)`` reads back; callables, messages and other live objects are
skipped (they are rebuilt from the config, or set again before each use in a round).
:func:`restore_strategy` writes that state into a freshly built strategy of the same class.

The global random generators are saved too (:func:`capture_rng`): Flower samples clients with
Python's ``random``, so a resumed run samples the same clients as an uninterrupted one.
"""

import json
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedge.app.checkpoint import Checkpoint, CheckpointError
from fedge.app.results import RoundRecord, RunResult
from fedge.log import logger

__all__ = [
    "StrategyStateError",
    "capture_rng",
    "capture_strategy",
    "restore_rng",
    "restore_strategy",
    "resume_fields",
    "resume_run",
]

_TAG = "__fedge__"


class StrategyStateError(CheckpointError):
    """A checkpoint's strategy state does not fit the strategy of the run being resumed."""


class _Skip:
    """Marks a value that is not state (a callable, a message, a live object)."""


_SKIP = _Skip()


def capture_strategy(strategy: Strategy) -> dict[str, Any]:
    """The state of ``strategy`` (see the module docstring)."""
    node = _encode(strategy)
    assert isinstance(node, dict)
    return node


def restore_strategy(strategy: Strategy, state: dict[str, Any]) -> None:
    """Write ``state`` (from :func:`capture_strategy`) into ``strategy``, in place."""
    _restore_object(strategy, state, "strategy")


def capture_rng() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global random generators."""
    return {
        "python": random.getstate(),
        "numpy": _encode(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put the global random generators back in ``state`` (from :func:`capture_rng`)."""
    try:
        random.setstate(_to_tuples(state["python"]))
        np.random.set_state(_decode(state["numpy"], None, "rng"))
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise StrategyStateError(
            f"the checkpoint's random generator state is invalid: {err}"
        ) from err


def _object_of_interest(value: object) -> bool:
    # Wrapped strategies and fedge's own helpers (accountant, adaptive clip) hold state;
    # other objects (messages, grids, contexts) are live and never part of it.
    if isinstance(value, Strategy):
        return True
    module = type(value).__module__ or ""
    return module.startswith("fedge.") and hasattr(value, "__dict__") and not callable(value)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return _SKIP
        # A copy: arrays from Flower's Array.numpy() are read-only views of its bytes.
        return {_TAG: "ndarray", "data": torch.from_numpy(np.array(value))}
    if isinstance(value, np.generic):
        return {_TAG: "scalar", "data": torch.from_numpy(np.array(value))}
    if isinstance(value, torch.Tensor):
        return {_TAG: "tensor", "data": value.detach().clone()}
    if isinstance(value, np.random.Generator):
        return {_TAG: "generator", "state": _encode(value.bit_generator.state)}
    if isinstance(value, ArrayRecord):
        return {_TAG: "array_record", "items": _encode([[k, a.numpy()] for k, a in value.items()])}
    if isinstance(value, dict):
        items = [[_encode(k), _encode(v)] for k, v in value.items()]
        return _container("dict", items)
    if isinstance(value, list | tuple):
        return _container(type(value).__name__, [_encode(v) for v in value])
    if _object_of_interest(value):
        attrs = {name: _encode(v) for name, v in vars(value).items()}
        return {
            _TAG: "object",
            "class": _class_name(value),
            "attrs": {k: v for k, v in attrs.items() if v is not _SKIP},
        }
    return _SKIP


def _container(kind: str, items: list[Any]) -> Any:
    # A container with anything that is not state is skipped whole: half a state is worse.
    if any(_contains_skip(item) for item in items):
        return _SKIP
    return {_TAG: kind, "items": items}


def _contains_skip(item: Any) -> bool:
    return item is _SKIP or (isinstance(item, list) and any(i is _SKIP for i in item))


def _class_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _restore_object(target: object, node: Any, where: str) -> None:
    if not isinstance(node, dict) or node.get(_TAG) != "object":
        raise StrategyStateError(f"{where}: the checkpoint holds no object state")
    if node["class"] != _class_name(target):
        raise StrategyStateError(
            f"{where}: the checkpoint's state is for {node['class']}, the run uses "
            f"{_class_name(target)} (was the run's strategy changed?)"
        )
    attrs = vars(target)
    for name, child in node["attrs"].items():
        attrs[name] = _decode(child, attrs.get(name), f"{where}.{name}")


def _decode(node: Any, current: Any, where: str) -> Any:
    if not isinstance(node, dict) or _TAG not in node:
        return node
    kind = node[_TAG]
    if kind in ("ndarray", "scalar"):
        array = node["data"].numpy()
        return array[()] if kind == "scalar" else array
    if kind == "tensor":
        return node["data"]
    if kind == "generator":
        state = _decode(node["state"], None, where)
        if not isinstance(current, np.random.Generator):
            current = np.random.Generator(getattr(np.random, state["bit_generator"])())
        current.bit_generator.state = state
        return current
    if kind == "array_record":
        items = _decode(node["items"], None, where)
        return ArrayRecord({str(k): Array(np.asarray(a)) for k, a in items})
    if kind == "dict":
        return {_decode(k, None, where): _decode(v, None, where) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        items = [_decode(v, None, where) for v in node["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "object":
        if current is None:
            raise StrategyStateError(f"{where}: the run's strategy has no such object")
        _restore_object(current, node, where)
        return current
    raise StrategyStateError(f"{where}: unknown state kind {kind!r}")


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_to_tuples(v) for v in value)
    return value


def resume_run(checkpoint: Checkpoint, *, strategy: Strategy, result: RunResult) -> None:
    """Continue after ``checkpoint``: its strategy state, random generators and past rounds."""
    if checkpoint.strategy_state is None:
        logger.warning(
            "the checkpoint of round %d holds no strategy state: the strategy's server state "
            "(e.g. FedAdam's moments) starts afresh",
            checkpoint.server_round,
        )
    else:
        restore_strategy(strategy, checkpoint.strategy_state)
    if checkpoint.rng_state is not None:
        restore_rng(checkpoint.rng_state)
    try:
        result.rounds = [
            RoundRecord(**r) for r in checkpoint.rounds if r["round"] <= checkpoint.server_round
        ]
    except (TypeError, KeyError) as err:
        raise CheckpointError(f"the checkpoint's round records are invalid: {err}") from err
    result.total_seconds = checkpoint.elapsed_seconds


def resume_fields(
    *, strategy: Strategy, result: RunResult, elapsed_seconds: float
) -> dict[str, Any]:
    """The :class:`Checkpoint` fields that let a run resume exactly after its last round."""
    return {
        "strategy_state": capture_strategy(strategy),
        "rng_state": capture_rng(),
        # Plain JSON values: torch.load(weights_only=True) refuses e.g. NumPy scalars.
        "rounds": json.loads(json.dumps([asdict(r) for r in result.rounds], default=_plain)),
        "elapsed_seconds": elapsed_seconds,
    }


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else str(value)
