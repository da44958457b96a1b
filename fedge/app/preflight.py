"""Checks a run passes before its first round, in a simulation and on the coordinator alike."""

from fedge.app.config import RunConfig

__all__ = ["check_local_dp_model"]


def check_local_dp_model(config: RunConfig) -> None:
    """Under local DP, refuse at start a model Opacus cannot train, naming the layer."""
    if not config.privacy.local:
        return
    from fedge.data import get_dataset
    from fedge.models import get_model
    from fedge.privacy.local import check_dp_compatible

    dataset = get_dataset(config.dataset, data_dir=config.data_dir)
    model = get_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes
    )
    option, value = ("--task", config.task) if config.task else ("--model", config.model)
    check_dp_compatible(model, option=option, value=value)
