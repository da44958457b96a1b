"""Training precision: bf16 autocast trains the same models, deterministically, fp32 weights."""

import threading

import pytest
import torch

from fedge.app.config import RunConfig
from fedge.app.training import (
    LocalTraining,
    compute_precision,
    evaluate,
    map_one_thread_each,
    to_fast_layout,
    train,
)
from fedge.errors import ConfigError
from fedge.models import get_model
from fedge.simulation import simulate


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"--precision.*fp16.*fp32, bf16"):
        RunConfig(precision="fp16")
    with pytest.raises(ValueError, match="fp32, bf16"):
        compute_precision("int4")


def test_bf16_runs_matmuls_in_bfloat16_and_fp32_does_not() -> None:
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with compute_precision("bf16"):
        assert layer(x).dtype == torch.bfloat16
    with compute_precision("fp32"):
        assert layer(x).dtype == torch.float32


def test_fast_layout_changes_memory_not_values() -> None:
    images = torch.randn(3, 2, 5, 5)
    fast = to_fast_layout(images)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(fast, images)
    rows = torch.randn(3, 4)
    assert to_fast_layout(rows) is rows


def test_evaluate_in_fast_layout_matches_the_plain_model_and_leaves_it_alone() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(300, 1, 12, 12), torch.randint(0, 4, (300,))
    model = get_model("cnn-small", input_shape=(1, 12, 12), num_classes=4)
    with torch.no_grad():
        logits = model(x)
    plain_loss = float(torch.nn.functional.cross_entropy(logits, y))
    plain_accuracy = float((logits.argmax(dim=1) == y).float().mean())
    result = evaluate(model, x, y, batch_size=64)
    assert result.num_examples == 300
    assert result.accuracy == pytest.approx(plain_accuracy)
    assert result.loss == pytest.approx(plain_loss, rel=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())  # the caller's layout
    # and its ReLUs: training on it still keeps each activation for the backward pass
    assert not any(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))


def test_tasks_side_by_side_run_on_one_torch_thread_each_and_keep_their_order() -> None:
    before = torch.get_num_threads()
    seen = map_one_thread_each(lambda i: (i, torch.get_num_threads()), list(range(7)), 2)
    assert seen == [(i, 1) for i in range(7)]
    assert torch.get_num_threads() == before


def test_a_map_inside_a_mapped_task_runs_in_turn_on_the_same_threads() -> None:
    # Every worker busy with a task that maps again: a nested map that waited for a free
    # worker of the kept pool would never return.
    def outer(i: int) -> tuple[str, list[int]]:
        inner = map_one_thread_each(lambda j: j * i, list(range(3)), 2)
        return threading.current_thread().name, inner

    first = map_one_thread_each(outer, list(range(4)), 2)
    assert [inner for _, inner in first] == [[0, i, 2 * i] for i in range(4)]
    assert all(name.startswith("fedge-torch") for name, _ in first)
    pool_threads = {t.name for t in threading.enumerate() if t.name.startswith("fedge-torch")}
    for _ in range(3):  # later maps reuse the pool's threads instead of starting new ones
        again = map_one_thread_each(outer, list(range(4)), 2)
        assert {name for name, _ in again} <= pool_threads


def test_bf16_training_keeps_fp32_weights_and_learns() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    model = get_model("cnn-small", input_shape=(1, 8, 8), num_classes=2)
    before = evaluate(model, x, y).accuracy
    local = LocalTraining(epochs=5, batch_size=32, lr=0.1, momentum=0.9)
    train(model, x, y, local=local, precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert evaluate(model, x, y).accuracy > max(before + 0.2, 0.8)


def test_bf16_simulation_is_deterministic_and_close_to_fp32(tiny_config: RunConfig) -> None:
    bf16 = tiny_config.replace(precision="bf16")
    first, second = simulate(bf16), simulate(bf16)
    assert [r.accuracy for r in first.rounds] == [r.accuracy for r in second.rounds]
    full = simulate(tiny_config)
    assert [r.loss for r in first.rounds] != [r.loss for r in full.rounds]  # it did use bf16
    assert abs(first.final_accuracy - full.final_accuracy) < 0.05
