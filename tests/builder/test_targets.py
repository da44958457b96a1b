"""Release targets: each engine's artifact runs in the real engine and agrees with torch."""

import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from fedge.app.checkpoint import load_checkpoint
from fedge.builder.targets import (
    Artifact,
    Target,
    get_target,
    list_targets,
    register_target,
)
from fedge.builder.targets.probe import measure_artifact
from fedge.builder.tiers import MIN_AGREEMENT
from fedge.builder.transfer import TransferSet, public_transfer_set
from fedge.data import Dataset
from fedge.errors import MeasurementError, TargetUnavailableError
from fedge.inference.profiles import ENGINES
from fedge.inference.runners import load_runner, predict


@pytest.fixture(scope="module")
def teacher(teacher_path: Path) -> nn.Module:
    """The digits teacher (cnn-small) in eval mode."""
    return load_checkpoint(teacher_path).build_model().eval()


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory, teacher: nn.Module, digits: Dataset
) -> dict[tuple[str, str], Artifact]:
    """The teacher exported by every built-in target at both precisions."""
    out = tmp_path_factory.mktemp("targets")
    transfer = public_transfer_set(digits)
    return {
        (engine, precision): get_target(engine).export(teacher, transfer, out, precision)
        for engine in ("onnxruntime", "openvino", "litert")
        for precision in ("fp32", "int8")
    }


def test_the_registry_lists_the_builtin_targets_and_names_choices() -> None:
    assert {"onnxruntime", "openvino", "litert"} <= set(list_targets())
    assert {"onnxruntime", "openvino", "litert", "test-absent"} <= set(ENGINES)
    with pytest.raises(ValueError, match=r"unknown target 'tensorrt'; valid choices: .*litert"):
        get_target("tensorrt")
    with pytest.raises(ValueError, match="already registered"):
        register_target()(type(get_target("test-absent")))
    with pytest.raises(ValueError, match="has no precision 'int4'; valid choices: fp32, int8"):
        get_target("onnxruntime").check_precision("int4")
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'; valid choices: litert, onnx"):
        load_runner("tensorrt", "model.engine")


def test_a_missing_engine_is_one_line_naming_the_extra(tmp_path: Path, digits: Dataset) -> None:
    target = get_target("test-absent")
    assert target.missing() == ["fedge_test_no_such_engine"]
    with pytest.raises(TargetUnavailableError) as info:
        target.export(nn.Linear(64, 10), public_transfer_set(digits), tmp_path, "fp32")
    message = str(info.value)
    assert message == (
        "engine 'test-absent' needs the Python package(s) fedge_test_no_such_engine, which "
        "are not installed: pip install 'fedge[absent]'"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino", "litert"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_each_artifact_agrees_with_torch_in_its_engine(
    artifacts: dict[tuple[str, str], Artifact],
    teacher: nn.Module,
    digits: Dataset,
    engine: str,
    precision: str,
) -> None:
    artifact = artifacts[engine, precision]
    assert artifact.path.name.endswith(get_target(engine).extension)
    runner = get_target(engine).load(artifact.path, threads=1)
    logits = predict(runner, digits.x_test)
    with torch.no_grad():
        reference = teacher(torch.from_numpy(digits.x_test)).numpy()
    assert logits.shape == reference.shape
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    assert agreement >= MIN_AGREEMENT
    if precision == "fp32":
        np.testing.assert_allclose(logits, reference, atol=1e-3, rtol=1e-3)


def test_int8_artifacts_hold_int8_weights_and_are_smaller(
    artifacts: dict[tuple[str, str], Artifact],
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for engine in ("onnxruntime", "openvino", "litert"):
        fp32, int8 = artifacts[engine, "fp32"].path, artifacts[engine, "int8"].path
        assert int8.stat().st_size < fp32.stat().st_size / 2, engine
    onnx_model = onnx.load(str(artifacts["onnxruntime", "int8"].path))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in onnx_model.graph.initializer)
    with zipfile.ZipFile(artifacts["openvino", "int8"].path) as archive:
        assert archive.namelist() == ["model.xml", "model.bin"]
        assert b'element_type="i8"' in archive.read("model.xml")
    interpreter = Interpreter(model_path=str(artifacts["litert", "int8"].path))
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in kinds and np.float32 not in kinds


def test_the_same_model_exports_to_the_same_bytes(
    tmp_path: Path, teacher: nn.Module, digits: Dataset, artifacts: dict[tuple[str, str], Artifact]
) -> None:
    transfer = public_transfer_set(digits)
    for engine in ("onnxruntime", "openvino", "litert"):  # int8: calibration included
        folder = tmp_path / engine
        folder.mkdir()
        again = get_target(engine).export(teacher, transfer, folder, "int8")
        assert again.path.read_bytes() == artifacts[engine, "int8"].path.read_bytes(), engine


def test_measuring_in_a_fresh_process_gives_the_runners_logits(
    artifacts: dict[tuple[str, str], Artifact], digits: Dataset
) -> None:
    for engine in ("onnxruntime", "litert"):
        artifact = artifacts[engine, "int8"]
        measured = measure_artifact(
            engine, artifact.path, digits.x_test, sample=digits.x_test[0], runs=10, warmup=2
        )
        local = predict(get_target(engine).load(artifact.path), digits.x_test)
        np.testing.assert_array_equal(measured.logits, local)
        np.testing.assert_array_equal(
            local, predict(load_runner(engine, artifact.path), digits.x_test)
        )
        assert 0 < measured.latency_p50_ms <= measured.latency_p99_ms
        assert measured.latency_runs == 10
        assert measured.peak_memory_mb >= 0 and measured.load_ms > 0


def test_an_artifact_the_engine_cannot_load_is_a_measurement_error(
    tmp_path: Path, digits: Dataset
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(MeasurementError, match=r"onnxruntime cannot run broken\.onnx: ") as info:
        measure_artifact("onnxruntime", broken, digits.x_test[:4], sample=digits.x_test[0], runs=2)
    assert "\n" not in str(info.value)


class RecordingTarget(Target):
    """Not registered: checks the precision names every target accepts."""

    name = "test-recording"
    seen: ClassVar[list[str]] = []

    def convert(self, model: nn.Module, transfer: TransferSet, path: Path, precision: str) -> None:
        RecordingTarget.seen.append(precision)


def test_precision_names_are_checked_before_exporting(tmp_path: Path, digits: Dataset) -> None:
    target = RecordingTarget()
    transfer = public_transfer_set(digits)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        target.export(nn.Linear(64, 10), transfer, tmp_path, "fp16")
    target.export(nn.Linear(64, 10), transfer, tmp_path, "int8")
    assert RecordingTarget.seen == ["int8"]


def test_a_device_runs_every_artifact_without_torch_or_the_build_side(
    artifacts: dict[tuple[str, str], Artifact], digits: Dataset, tmp_path: Path
) -> None:
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", digits.x_test[:5])
    code = (
        "import sys, numpy as np\n"
        "from fedge.inference.runners import load_runner, predict\n"
        "x = np.load(sys.argv[2])\n"
        "for engine, path in zip(('onnxruntime', 'openvino', 'litert'), sys.argv[3:]):\n"
        "    assert predict(load_runner(engine, path), x).shape == (5, 10)\n"
        "print(sorted(m for m in ('torch', 'onnx', 'litert_torch', 'fedge.builder') "
        "if m in sys.modules))\n"
    )
    paths = [str(artifacts[r, "int8"].path) for r in ("onnxruntime", "openvino", "litert")]
    out = subprocess.run(
        [sys.executable, "-c", code, "-", str(tmp_path / "x.npy"), *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
