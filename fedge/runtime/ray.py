"""The ``ray`` runtime: Flower's simulation engine, for fleets larger than one machine.

It runs the same ServerApp and ClientApp objects as the ``local`` runtime through
``flwr.simulation.run_simulation``. Set ``RAY_ADDRESS`` to join an existing Ray cluster.
"""

import logging
import os
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

__all__ = ["run_ray"]


def run_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    *,
    num_nodes: int,
    cpus_per_client: float = 1.0,
    num_cpus: int | None = None,
) -> None:
    """Run ``server_app`` against ``num_nodes`` virtual SuperNodes on Ray."""
    import warnings

    from flwr.simulation import run_simulation

    init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if "RAY_ADDRESS" not in os.environ:
        init_args["num_cpus"] = num_cpus or os.cpu_count() or 1
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
        "init_args": init_args,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config=backend_config,
        )
