"""Checks a run passes before its first round, in a simulation and on the coordinator alike."""

from fedge.app.config import RunConfig

__all__ = ["check_local_dp_model"]


def check_local_dp_model(config: RunConfig) -> None:
    """Under local DP, refuse at start a model Opacus cannot train, naming the layer."""
    if not config.privacy.local:
        return
    from fedge.privacy.local import check_dp_compatible

    _, model = config.dataset_and_model()
    option, value = ("--task", config.task) if config.task else ("--model", config.model)
    check_dp_compatible(model, option=option, value=value)
