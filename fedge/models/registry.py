"""The model registry: ``register_model`` / ``get_model`` / ``list_models``.

A model builder takes keyword-only ``input_shape`` (one sample, no batch axis) and
``num_classes`` and returns an ``nn.Module`` that maps a batch to logits.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelInfo", "get_model", "list_models", "model_info", "register_model"]

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model besides how to build it."""

    name: str
    builder: ModelBuilder
    images_only: bool
    student: bool
    description: str


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    images_only: bool,
    student: bool = False,
    description: str = "",
    replace: bool = False,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder ``fn(*, input_shape, num_classes, **kwargs)``; a name
    is registered once unless ``replace`` (a task's model, entered again)."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS and not replace:
            raise ValueError(f"model {name!r} is already registered")
        doc_lines = (builder.__doc__ or "").strip().splitlines()
        doc = description or (doc_lines[0] if doc_lines else name)
        _MODELS[name] = ModelInfo(name, builder, images_only, student, doc)
        return builder

    return decorator


def list_models(*, students_only: bool = False) -> list[str]:
    """Registered model names, sorted; only the small students when asked."""
    return sorted(n for n, info in _MODELS.items() if info.student or not students_only)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; ``ValueError`` naming the valid choices if unknown."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(list_models())}")
    return _MODELS[name]


def get_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build model ``name`` for samples of ``input_shape`` and ``num_classes`` outputs."""
    info = model_info(name)
    if info.images_only and len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image input (C, H, W), got input shape {tuple(input_shape)}"
        )
    return info.builder(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
