"""Invariants of the model registry as a whole."""

import pytest
import torch

from fedge.models import get_model, list_models, model_info, register_model

IMAGE_SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32)]


def _built_in() -> list[str]:
    """fedge's own models: not a user's task (``task:``) or a test's (``test-``) that other
    test modules entered into the registry of this process."""
    return [n for n in list_models() if not n.startswith(("task:", "test-"))]


@pytest.mark.parametrize("name", _built_in())
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_every_model_maps_an_image_batch_to_logits(name: str, shape: tuple[int, ...]) -> None:
    model = get_model(name, input_shape=shape, num_classes=7)
    out = model(torch.zeros(3, *shape))
    assert out.shape == (3, 7)


@pytest.mark.parametrize("name", [n for n in _built_in() if not model_info(n).images_only])
def test_tabular_models_take_feature_vectors(name: str) -> None:
    model = get_model(name, input_shape=(30,), num_classes=2)
    assert model(torch.zeros(5, 30)).shape == (5, 2)


@pytest.mark.parametrize("name", [n for n in _built_in() if model_info(n).images_only])
def test_image_models_refuse_tabular_input(name: str) -> None:
    with pytest.raises(ValueError, match="needs image input"):
        get_model(name, input_shape=(30,), num_classes=2)


def test_fedavg_cnn_has_the_papers_parameter_count() -> None:
    model = get_model("fedavg-cnn", input_shape=(1, 28, 28), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 1_663_370


def test_students_are_smaller_than_every_teacher() -> None:
    def size(name: str) -> int:
        model = get_model(name, input_shape=(1, 28, 28), num_classes=10)
        return sum(p.numel() for p in model.parameters())

    students = list_models(students_only=True)
    assert len(students) >= 2
    teachers = [n for n in _built_in() if n not in students]
    assert max(size(s) for s in students) < min(size(t) for t in teachers if t != "mlp") / 2


def test_unknown_model_names_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"valid choices: .*fedavg-cnn"):
        get_model("resnet-9000", input_shape=(1, 28, 28), num_classes=10)


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", images_only=False)(lambda **kw: torch.nn.Identity())


def test_models_are_seeded_by_torch_seed() -> None:
    torch.manual_seed(0)
    a = get_model("cnn-small", input_shape=(1, 8, 8), num_classes=10).state_dict()
    torch.manual_seed(0)
    b = get_model("cnn-small", input_shape=(1, 8, 8), num_classes=10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_student_tiny_is_under_half_of_student_cnn() -> None:
    def size(name: str) -> int:
        model = get_model(name, input_shape=(1, 28, 28), num_classes=10)
        return sum(p.numel() for p in model.parameters())

    # About 9 k parameters: its int8 file fits a 16 KiB device (the camera profile).
    assert size("student-tiny") == 9_098
    assert size("student-tiny") < size("student-cnn") / 2
