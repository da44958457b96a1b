"""The ``ray`` runtime: Flower's simulation engine, for fleets larger than one machine.

It runs the same ServerApp and ClientApp objects as the ``local`` runtime through
``flwr.simulation.run_simulation``. Set ``RAY_ADDRESS`` to join an existing Ray cluster.
With ``--device cuda`` each client asks Ray for a share of the GPUs, so that the clients the
CPUs let run at once share them.
"""

import logging
import math
import os
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

__all__ = ["client_resources", "run_ray"]


def client_resources(
    *, device: str, cpus_per_client: float, num_cpus: int, num_gpus: int
) -> dict[str, float]:
    """What each Ray client asks for: ``cpus_per_client`` CPUs and, with a CUDA ``device``,
    an equal share of the ``num_gpus`` GPUs among the clients ``num_cpus`` CPUs run at once
    (at most one whole GPU each; none on the CPU)."""
    gpus = 0.0
    if device != "cpu" and num_gpus > 0:
        at_once = max(1, math.floor(num_cpus / cpus_per_client))
        # Rounded down to Ray's resource precision, so the shares never add up to more GPUs.
        gpus = min(1.0, math.floor(num_gpus / at_once * 10_000) / 10_000)
    return {"num_cpus": cpus_per_client, "num_gpus": gpus}


def run_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    *,
    num_nodes: int,
    cpus_per_client: float = 1.0,
    num_cpus: int | None = None,
    device: str = "cpu",
) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual SuperNodes on Ray; ``device`` is the
    run's ``--device`` (on a cluster the GPU shares are this machine's count)."""
    import warnings

    from flwr.simulation import run_simulation

    cpus = num_cpus or os.cpu_count() or 1
    gpus = _visible_gpus() if device != "cpu" else 0
    init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if "RAY_ADDRESS" not in os.environ:
        init_args["num_cpus"] = cpus
        init_args["num_gpus"] = gpus
    resources = client_resources(
        device=device, cpus_per_client=cpus_per_client, num_cpus=cpus, num_gpus=gpus
    )
    backend_config: dict[str, Any] = {"client_resources": resources, "init_args": init_args}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config=backend_config,
        )


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()
