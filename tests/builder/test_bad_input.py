"""Bad input to the release pipeline: a FedgeError naming the fault, no half-written release."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedge.app.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from fedge.builder import ReleaseSettings, TransferSet, build_release
from fedge.builder.export import export_onnx
from fedge.builder.quantize import quantize_int8
from fedge.data import Dataset, get_dataset
from fedge.errors import (
    CalibrationError,
    ExportError,
    FedgeError,
    QuantizationError,
    StudentShapeError,
)


def _assert_nothing_written(parent: Path) -> None:
    assert list(parent.iterdir()) == [], [p.name for p in parent.iterdir()]


class WrongOutput(nn.Module):
    """Maps a digits batch to 5 classes instead of 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class WrongInput(nn.Module):
    """Expects 100 features, the teacher takes 1x8x8 = 64."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class EinsumStudent(nn.Module):
    """A linear layer written as Einsum, an op ONNX Runtime has no int8 kernel for."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(64, 10) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bf,fc->bc", x.flatten(1), self.weight)


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (WrongOutput(), "maps a batch of 2 to shape (2, 5), the teacher to (2, 10)"),
        (WrongInput(), "cannot take the teacher's input (B, 1, 8, 8)"),
    ],
)
def test_a_student_that_does_not_fit_the_teacher(
    tmp_path: Path, teacher_path: Path, fast: ReleaseSettings, student: nn.Module, message: str
) -> None:
    with pytest.raises(StudentShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_release(
            checkpoint=teacher_path, out_dir=tmp_path / "rel", student=student, settings=fast
        )
    _assert_nothing_written(tmp_path)


def test_an_image_student_for_a_tabular_teacher(
    tmp_path: Path, fast: ReleaseSettings, make_teacher: Callable[..., Checkpoint]
) -> None:
    tabular = get_dataset("breast-cancer")
    ckpt = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(ckpt, make_teacher(tabular, "mlp", epochs=1))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StudentShapeError, match="student 'student-cnn' does not fit the teacher"):
        build_release(checkpoint=ckpt, out_dir=out / "rel", student="student-cnn", settings=fast)
    _assert_nothing_written(out)


def test_an_unknown_student_names_the_choices(
    tmp_path: Path, teacher_path: Path, fast: ReleaseSettings
) -> None:
    with pytest.raises(FedgeError, match=r"--student: .mlp. is not one of: .*student-cnn"):
        build_release(checkpoint=teacher_path, out_dir=tmp_path / "r", student="mlp", settings=fast)
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"not a checkpoint at all", "is not a fedge checkpoint"),
        (None, "is not a fedge checkpoint"),
    ],
)
def test_a_file_that_is_not_a_fedge_checkpoint(
    tmp_path: Path, fast: ReleaseSettings, content: bytes | None, message: str
) -> None:
    bad = tmp_path / "in" / "bad.pt"
    bad.parent.mkdir()
    if content is None:
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)  # a torch file, not ours
    else:
        bad.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match=message):
        build_release(checkpoint=bad, out_dir=out / "rel", settings=fast)
    _assert_nothing_written(out)


def test_a_missing_checkpoint(tmp_path: Path, fast: ReleaseSettings) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_release(checkpoint=tmp_path / "nope.pt", out_dir=tmp_path / "rel", settings=fast)
    _assert_nothing_written(tmp_path)


def test_an_empty_calibration_set(
    tmp_path: Path, teacher_path: Path, digits: Dataset, fast: ReleaseSettings
) -> None:
    with pytest.raises(CalibrationError, match="transfer set is empty"):
        empty = TransferSet(x=digits.x_public[:0], y=digits.y_public[:0], source="test")
        build_release(checkpoint=teacher_path, out_dir=tmp_path / "r", transfer=empty)
    _assert_nothing_written(tmp_path)
    fp32 = export_onnx(
        WrongOutput(), tmp_path / "m.onnx", input_shape=digits.input_shape
    )  # a valid model
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        quantize_int8(fp32, tmp_path / "m8.onnx", np.zeros((0, 1, 8, 8), np.float32))
    assert not (tmp_path / "m8.onnx").exists()


def test_a_mismatched_calibration_set(
    tmp_path: Path, teacher_path: Path, digits: Dataset, fast: ReleaseSettings
) -> None:
    wrong = TransferSet(
        x=np.zeros((10, 1, 28, 28), np.float32), y=np.zeros(10, np.int64), source="mnist-like"
    )
    with pytest.raises(CalibrationError, match=r"shape \(1, 28, 28\), the model takes \(1, 8, 8\)"):
        build_release(
            checkpoint=teacher_path, out_dir=tmp_path / "r", transfer=wrong, settings=fast
        )
    _assert_nothing_written(tmp_path)
    with pytest.raises(CalibrationError, match="100 samples but 99 labels"):
        TransferSet(x=digits.x_public[:100], y=digits.y_public[:99], source="public")
    fp32 = export_onnx(WrongOutput(), tmp_path / "m.onnx", input_shape=digits.input_shape)
    with pytest.raises(CalibrationError, match=r"samples of shape \(1, 28, 28\)"):
        quantize_int8(fp32, tmp_path / "m8.onnx", wrong.x)


def test_an_op_onnx_runtime_cannot_quantize(
    tmp_path: Path, teacher_path: Path, fast: ReleaseSettings
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "rel").mkdir()
    (out / "rel" / "model.onnx").write_bytes(b"the release already shipped")
    with pytest.raises(QuantizationError, match=r"cannot quantize op\(s\) Einsum"):
        build_release(
            checkpoint=teacher_path, out_dir=out / "rel", student=EinsumStudent(), settings=fast
        )
    fp32 = export_onnx(EinsumStudent(), tmp_path / "e.onnx", input_shape=(1, 8, 8))
    with pytest.raises(QuantizationError, match=r"Einsum \(node_einsum\)"):
        quantize_int8(fp32, tmp_path / "e8.onnx", np.zeros((4, 1, 8, 8), np.float32))
    assert not (tmp_path / "e8.onnx").exists()
    # The failed build left no partial directory and did not touch the existing release.
    assert [p.name for p in out.iterdir()] == ["rel"]
    assert (out / "rel" / "model.onnx").read_bytes() == b"the release already shipped"


class DataDependent(nn.Module):
    """Branches on the values of its input: torch.export cannot trace that into one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def test_a_model_onnx_export_cannot_trace(tmp_path: Path, digits: Dataset) -> None:
    with pytest.raises(ExportError, match="cannot export DataDependent to ONNX: ") as info:
        export_onnx(DataDependent(), tmp_path / "m.onnx", input_shape=digits.input_shape)
    assert "\n" not in str(info.value)
