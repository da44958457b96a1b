"""int8 quantization of graphs ONNX Runtime's symbolic shape inference cannot follow: a 1-D
convolutional autoencoder with upsampling (its Resize) still quantizes, weights int8; and of
an anomaly flagger, whose error and threshold comparison stay float."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from fedge.builder.anomaly import FlaggingAutoencoder
from fedge.builder.export import export_onnx
from fedge.builder.quantize import float_tail, quantize_int8, unquantized_weights


def test_a_1d_upsampling_autoencoder_quantizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 4, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv1d(4, 1, kernel_size=5, padding=2),
    ).eval()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", input_shape=(1, 64))
    x = np.random.default_rng(0).normal(size=(32, 1, 64)).astype(np.float32)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", x)
    assert unquantized_weights(onnx.load(str(int8))) == []
    session = ort.InferenceSession(str(int8))
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert out.shape == expected.shape
    assert np.abs(out - expected).mean() < 0.1 * np.abs(expected).mean() + 0.05


def test_a_flagging_autoencoder_flags_errors_beyond_what_calibration_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calibrated on normal samples only, a quantized error would be clipped to their (small)
    # range and no anomaly could pass the threshold: the head after the last weight stays float.
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    autoencoder = nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Upsample(scale_factor=2),
        nn.Conv1d(8, 1, 5, padding=2),
    )
    normal = np.zeros((16, 1, 32), dtype=np.float32)
    with torch.no_grad():
        errors = ((autoencoder(torch.from_numpy(normal)) - torch.from_numpy(normal)) ** 2).mean()
    flagging = FlaggingAutoencoder(autoencoder, threshold=float(errors) * 2 + 1e-3).eval()
    fp32 = export_onnx(flagging, tmp_path / "fp32.onnx", input_shape=(1, 32))
    assert float_tail(onnx.load(str(fp32)))  # the error and the comparison
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", normal)
    assert unquantized_weights(onnx.load(str(int8))) == []
    # ONNX Runtime's failed shape inference leaves no file in the working directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]
    session = ort.InferenceSession(str(int8))
    spikes = normal.copy()
    spikes[:, :, ::4] = 5.0  # far from anything calibration saw
    flags = session.run(None, {session.get_inputs()[0].name: np.concatenate([normal, spikes])})[0]
    assert flags.argmax(axis=1).tolist() == [0] * 16 + [1] * 16
