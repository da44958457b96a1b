"""Checks a run passes before its first round, in a simulation and on the coordinator alike."""

from fedge.app.config import RunConfig
from fedge.errors import ConfigError

__all__ = ["check_device_visible", "check_local_dp_model"]


def check_local_dp_model(config: RunConfig) -> None:
    """Under local DP, refuse at start a model Opacus cannot train, naming the layer."""
    if not config.privacy.local:
        return
    from fedge.privacy.local import check_dp_compatible

    _, model = config.dataset_and_model()
    option, value = ("--task", config.task) if config.task else ("--model", config.model)
    check_dp_compatible(model, option=option, value=value)


def check_device_visible(config: RunConfig) -> None:
    """Refuse at start a ``--device`` this process cannot see (no CUDA GPU, or fewer)."""
    if config.device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "--device",
            config.device,
            "needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False): "
            "use --device cpu",
        )
    _, _, index = config.device.partition(":")
    visible = torch.cuda.device_count()
    if index and int(index) >= visible:
        raise ConfigError(
            "--device", config.device, f"is not among the {visible} visible CUDA GPUs"
        )
