"""Runtimes: ``Grid`` implementations that run one ServerApp/ClientApp pair.

``local`` calls the ClientApp in-process; ``ray`` uses Flower's simulation engine; ``grpc``
(the coordinator) drives real devices over fedge's fleet protocol.
"""

from fedge.runtime.local import LocalGrid, run_local
from fedge.runtime.ray import run_ray

__all__ = ["LocalGrid", "run_local", "run_ray"]
