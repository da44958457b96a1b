"""Release targets: one engine per module under a small abstract base, and their registry.

``get_target("openvino")`` returns a new :class:`Target`; ``register_target()`` is a class
decorator (``@register_target()`` uses the class's ``name``), like torchvision's model
registry. Built in: ``onnxruntime`` (:mod:`.onnxrt`), ``openvino`` (:mod:`.openvino_ir`,
``fedge[openvino]``) and ``litert`` (:mod:`.litert`, ``fedge[litert]``). Registering a target
also lets device profiles name its engine. Importing this package imports no engine: each
target imports its packages when it exports or loads.
"""

from collections.abc import Callable

from fedge.builder.targets.base import Artifact, Target
from fedge.builder.targets.litert import LiteRtTarget
from fedge.builder.targets.onnxrt import OnnxRuntimeTarget
from fedge.builder.targets.openvino_ir import OpenVinoTarget
from fedge.inference.profiles import register_engine

__all__ = [
    "Artifact",
    "Target",
    "get_target",
    "list_targets",
    "register_target",
    "target_spec",
]

_TARGETS: dict[str, type[Target]] = {}


def register_target(name: str | None = None) -> Callable[[type[Target]], type[Target]]:
    """Class decorator registering a :class:`Target` under ``name`` (default: its ``name``)."""

    def decorator(cls: type[Target]) -> type[Target]:
        key = name or cls.name
        if not key:
            raise ValueError(f"target class {cls.__name__} has no name")
        if key in _TARGETS:
            raise ValueError(f"target {key!r} is already registered")
        register_engine(key)
        _TARGETS[key] = cls
        return cls

    return decorator


def list_targets() -> list[str]:
    """Registered target (engine) names, sorted."""
    return sorted(_TARGETS)


def get_target(name: str) -> Target:
    """A new target ``name``; ``ValueError`` listing the valid names if unknown."""
    if name not in _TARGETS:
        raise ValueError(f"unknown target {name!r}; valid choices: {', '.join(list_targets())}")
    return _TARGETS[name]()


def target_spec(name: str) -> str:
    """``module:ClassName`` of target ``name`` (how a measuring child process imports it)."""
    get_target(name)
    cls = _TARGETS[name]
    return f"{cls.__module__}:{cls.__qualname__}"


for _builtin in (OnnxRuntimeTarget, OpenVinoTarget, LiteRtTarget):
    register_target()(_builtin)
