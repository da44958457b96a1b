"""Structured pruning: channels and neurons are removed, the model still maps inputs to logits,
and fine-tuning on the transfer set brings the accuracy back."""

from pathlib import Path

import pytest
import torch
from torch import nn

from fedge.app.checkpoint import load_checkpoint
from fedge.builder import DistillSettings, PruneSettings, prune_and_finetune, prune_structured
from fedge.builder.prune import parameter_count
from fedge.builder.transfer import public_transfer_set
from fedge.data import Dataset
from fedge.errors import ReleaseError
from fedge.models import get_model


def _accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        predictions = model.eval()(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((predictions == data.y_test).mean())


def test_fedavg_cnn_loses_channels_and_neurons_for_real() -> None:
    torch.manual_seed(0)
    model = get_model("fedavg-cnn", input_shape=(1, 28, 28), num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_structured(model, input_shape=(1, 28, 28), ratio=0.6)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [12, 25]
    assert convs[1].in_channels == 12
    # Flatten couples conv2's channels to fc1's columns: 25 channels x 7 x 7.
    assert linears[0].in_features == 25 * 7 * 7 and linears[0].out_features == 204
    assert linears[-1].out_features == 10
    assert parameter_count(model) / parameter_count(pruned) >= 4
    assert pruned(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # The original is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_bad_ratio_and_a_model_with_nothing_to_prune() -> None:
    for ratio in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="must be in"):
            prune_structured(nn.Linear(4, 2), input_shape=(4,), ratio=ratio)
    with pytest.raises(ValueError, match=r"pruning ratio 1.5 must be in \(0, 1\)"):
        PruneSettings(ratios=(1.5,))
    with pytest.raises(ReleaseError, match="cannot prune Linear: no channel or neuron"):
        prune_structured(nn.Linear(4, 2), input_shape=(4,), ratio=0.5)


def test_fine_tuning_recovers_the_teachers_accuracy(teacher_path: Path, digits: Dataset) -> None:
    teacher = load_checkpoint(teacher_path).build_model().eval()
    transfer = public_transfer_set(digits)
    settings = PruneSettings(ratios=(0.5,), finetune=DistillSettings(epochs=6, copies=2))
    result = prune_and_finetune(teacher, transfer=transfer, ratio=0.5, settings=settings)
    assert result.parameters_before == parameter_count(teacher)
    assert result.parameters_after == parameter_count(result.model)
    assert result.reduction >= 3.0
    untuned = prune_structured(teacher, input_shape=digits.input_shape, ratio=0.5)
    teacher_accuracy = _accuracy(teacher, digits)
    assert _accuracy(result.model, digits) >= teacher_accuracy - 0.03
    assert _accuracy(result.model, digits) >= _accuracy(untuned, digits)
    assert not result.model.training
