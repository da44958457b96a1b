"""A release built from a real checkpoint: files, ONNX checks, int8 in a fresh session, report."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fedge.app.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedge.builder import ARTIFACTS, ReleaseReport, ReleaseSettings, build_release
from fedge.builder.export import EXPORT_ATOL, EXPORT_RTOL, OPSET, export_onnx, verify_export
from fedge.builder.report import read_report
from fedge.data import Dataset, get_dataset
from fedge.errors import ReleaseError
from fedge.files import file_sha256
from fedge.models import get_model


def test_release_directory_holds_every_artifact_and_nothing_half_written(
    release: tuple[Path, ReleaseReport],
) -> None:
    out, _ = release
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACTS.values())
    for path in out.iterdir():
        assert path.stat().st_size > 0
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_fp32_export_agrees_with_torch(tmp_path: Path, digits: Dataset) -> None:
    torch.manual_seed(1)
    model = get_model("student-cnn", input_shape=digits.input_shape, num_classes=10).eval()
    path = export_onnx(model, tmp_path / "s.onnx", input_shape=digits.input_shape)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    check = verify_export(model, path, digits.x_public)
    assert check.samples == len(digits.x_public)
    assert check.max_abs_diff <= EXPORT_ATOL + EXPORT_RTOL
    assert check.argmax_agreement == 1.0
    # The batch axis is dynamic: batches of 1 and 7 run and match torch row by row.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = digits.x_test[:n]
        got = sess.run(None, {"input": x})[0]
        want = model(torch.from_numpy(x)).detach().numpy()
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, want, atol=EXPORT_ATOL, rtol=EXPORT_RTOL)


def test_int8_model_loads_and_runs_in_a_fresh_session(
    release: tuple[Path, ReleaseReport], digits: Dataset
) -> None:
    out, report = release
    model = onnx.load(str(out / "model.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weight in the int8 model"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(out / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and list(inp.shape)[1:] == [1, 8, 8]
    logits = sess.run(None, {"input": digits.x_test})[0]
    assert logits.shape == (len(digits.x_test), 10)
    accuracy = float((logits.argmax(1) == digits.y_test).mean())
    assert accuracy == pytest.approx(report.student_int8.accuracy)
    # int8 stays close to its fp32 source: quantization must not wreck the model.
    assert accuracy >= report.student_fp32.accuracy - 0.05
    assert report.student_int8.size_bytes < report.student_fp32.size_bytes


def test_report_json_is_machine_readable_for_a_manifest(
    release: tuple[Path, ReleaseReport], teacher_path: Path
) -> None:
    out, report = release
    data = json.loads((out / "report.json").read_text())
    assert data["format"] == "fedge-release-report"
    artifact = data["artifact"]
    assert artifact["file"] == "model.onnx"
    assert artifact["sha256"] == file_sha256(out / "model.onnx")
    assert artifact["size_bytes"] == (out / "model.onnx").stat().st_size
    assert artifact["input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    assert artifact["output"]["shape"] == ["batch", 10]
    assert artifact["opset"] == 17
    rows = [data["teacher"], data["student_fp32"], data["student_int8"]]
    for row, name in zip(rows, ("teacher.onnx", "model_fp32.onnx", "model.onnx"), strict=True):
        assert row["file"] == name
        assert row["size_bytes"] == (out / name).stat().st_size
        assert row["sha256"] == file_sha256(out / name)
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert row["parameters"] > 0
    teacher_params = sum(v.numel() for v in load_checkpoint(teacher_path).state_dict.values())
    assert data["teacher"]["parameters"] == teacher_params
    assert data["ratios"]["size_x"] == pytest.approx(
        data["teacher"]["size_bytes"] / data["student_int8"]["size_bytes"]
    )
    assert data["export_check"]["max_abs_diff"] <= data["export_check"]["atol"] + 1e-3
    assert data["transfer"]["samples"] == 180
    # The drift reference: the int8 model's class shares and input-mean bins on the transfer set.
    drift = data["drift"]
    assert len(drift["classes"]) == 10 and sum(drift["classes"]) == pytest.approx(1, abs=1e-4)
    assert len(drift["inputs"]) == len(drift["input_edges"]) + 1
    assert sum(drift["inputs"]) == pytest.approx(1, abs=1e-4)
    markdown = (out / "report.md").read_text()
    for row in report.rows:
        assert row.role in markdown
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rebuild_replaces_the_release_whole(
    tmp_path: Path, teacher_path: Path, fast: ReleaseSettings
) -> None:
    out = tmp_path / "release"
    out.mkdir()
    (out / "stale.txt").write_text("from an older release")
    build_release(checkpoint=teacher_path, out_dir=out, settings=fast)
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACTS.values())
    assert [p.name for p in tmp_path.iterdir()] == ["release"]


def test_report_json_reads_back_into_the_same_report(
    release: tuple[Path, ReleaseReport], tmp_path: Path
) -> None:
    out, report = release
    assert read_report(out / "report.json").to_dict() == report.to_dict()
    bad = tmp_path / "report.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ReleaseError, match="is not a fedge release report"):
        read_report(bad)


def test_a_tabular_teacher_gets_the_mlp_student(
    tmp_path: Path, fast: ReleaseSettings, make_teacher: Callable[..., Checkpoint]
) -> None:
    tabular = get_dataset("breast-cancer")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_teacher(tabular, "mlp", epochs=5))
    report = build_release(checkpoint=ckpt, out_dir=tmp_path / "rel", settings=fast)
    assert report.student_int8.architecture == "student-mlp"
    assert report.input_shape == ["batch", 30] and report.output_shape == ["batch", 2]
    sess = ort.InferenceSession(str(tmp_path / "rel" / "model.onnx"))
    assert sess.run(None, {"input": tabular.x_test})[0].shape == (len(tabular.x_test), 2)
