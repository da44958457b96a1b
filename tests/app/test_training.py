"""Local training: its SGD is torch.optim.SGD's, step for step, without building an optimizer."""

import copy
import subprocess
import sys

import pytest
import torch

from fedge.app.training import LocalTraining, train
from fedge.models import get_model


def _reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, momentum: float) -> None:
    """The same batches as ``train(seed=3)`` with 2 epochs of batches of 16, through SGD."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum)
    generator = torch.Generator().manual_seed(3)
    model.train()
    for _ in range(2):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 16):
            idx = order[start : start + 16]
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_train_steps_as_torch_sgd_does(momentum: float) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(45, 1, 8, 8), torch.randint(0, 3, (45,))
    model = get_model("cnn-small", input_shape=(1, 8, 8), num_classes=3)
    model.classifier[-1].bias.requires_grad_(False)  # no gradient: SGD leaves it alone
    initial, expected = copy.deepcopy(model), copy.deepcopy(model)
    _reference(expected, x, y, momentum)
    local = LocalTraining(epochs=2, batch_size=16, lr=0.05, momentum=momentum)
    train(model, x, y, local=local, seed=3)
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    assert not torch.equal(model.classifier[1].weight, initial.classifier[1].weight)
    assert torch.equal(model.classifier[-1].bias, initial.classifier[-1].bias)


def test_training_does_not_load_the_compiler() -> None:
    # Building a torch.optim optimizer imports torch._dynamo: seconds of every run's start.
    code = (
        "import sys, torch\n"
        "from fedge.app.training import LocalTraining, train\n"
        "from fedge.models import get_model\n"
        "model = get_model('mlp', input_shape=(4,), num_classes=2)\n"
        "train(model, torch.randn(8, 4), torch.randint(0, 2, (8,)),"
        " local=LocalTraining(epochs=1, batch_size=4, lr=0.1, momentum=0.9))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
