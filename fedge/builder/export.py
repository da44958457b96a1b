"""ONNX export with a fixed opset and a dynamic batch axis, checked against torch.

The model is exported with ``torch.onnx.export`` (the ``torch.export``/dynamo path, which
needs no network), validated by ``onnx.checker`` and then run in ONNX Runtime on the transfer
set: its logits must match torch's within :data:`EXPORT_ATOL` + :data:`EXPORT_RTOL` * |torch|.

A student is exported with a second output, ``features``: the input of its last ``Linear``
layer, which a device fits its own last layer on (on-device personalisation). ``logits`` stays
the first output, so whatever reads only the first output is unchanged.
"""

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from fedge.errors import ExportError, first_line
from fedge.protocol.manifest import FEATURES_OUTPUT

__all__ = [
    "EXPORT_ATOL",
    "EXPORT_RTOL",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportCheck",
    "export_onnx",
    "feature_layer",
    "verify_export",
]

#: The ONNX opset every fedge release uses (ONNX Runtime >= 1.14 runs it everywhere).
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: Tolerance of an fp32 export against torch: float reordering only, no approximation.
EXPORT_ATOL = 1e-4
EXPORT_RTOL = 1e-3


@dataclass(frozen=True)
class ExportCheck:
    """How far the ONNX model's logits are from torch's on the samples checked."""

    samples: int
    max_abs_diff: float
    atol: float
    rtol: float
    argmax_agreement: float


class _WithFeatures(nn.Module):
    """``model`` returning ``(logits, features)``: features are its last Linear's input."""

    def __init__(self, model: nn.Module, last: nn.Linear) -> None:
        super().__init__()
        self.model = model
        self._seen: list[torch.Tensor] = []
        last.register_forward_pre_hook(self._keep_input)

    def _keep_input(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self._seen.append(args[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._seen.clear()
        logits = self.model(x)
        return logits, self._seen[-1]


def feature_layer(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Linear | None:
    """The model's last ``Linear`` when its logits are exactly that layer's output (so a new
    layer over its input replaces the model's last step); else ``None`` (e.g. an autoencoder
    with its threshold in the graph)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    last = linears[-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros((2, *input_shape)))
    finally:
        handle.remove()
    if not seen or not isinstance(logits, torch.Tensor) or seen[-1].shape != logits.shape:
        return None
    return last if torch.equal(seen[-1], logits) else None


def export_onnx(
    model: nn.Module, path: Path, *, input_shape: tuple[int, ...], features: bool = False
) -> Path:
    """Export ``model`` (eval mode) to ``path`` as one self-contained ONNX file.

    Input ``input`` is ``(batch, *input_shape)`` float32 with a dynamic ``batch`` axis;
    output ``logits`` is ``(batch, num_classes)``. With ``features`` (and a model whose last
    step is a ``Linear``, see :func:`feature_layer`), a second output ``features`` is that
    layer's input, ``(batch, width)``.
    """
    model = model.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    outputs = [OUTPUT_NAME]
    last = feature_layer(model, input_shape) if features else None
    if last is not None:
        # A copy: the hook that hands out the features must not stay on the caller's model.
        copied = copy.deepcopy(model)
        copied_last = feature_layer(copied, input_shape)
        assert copied_last is not None  # a copy has the same layers as the model checked
        model = _WithFeatures(copied, copied_last).eval()
        outputs.append(FEATURES_OUTPUT)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_shapes=({0: batch},),
                optimize=True,
                verbose=False,
            )
            if program is None:  # only the legacy exporter returns None
                raise ExportError("torch.onnx.export returned no program")
            program.save(str(path), external_data=False)
        onnx.checker.check_model(str(path), full_check=True)
    except ExportError:
        raise
    except Exception as err:  # the exporter raises many error types; say which model failed
        name = type(model).__name__
        raise ExportError(f"cannot export {name} to ONNX: {first_line(err)}") from err
    return path


def verify_export(model: nn.Module, path: Path, x: np.ndarray) -> ExportCheck:
    """Compare ONNX Runtime's logits for ``x`` with torch's; :class:`ExportError` if too far."""
    from fedge.builder.onnx_eval import predict

    onnx_logits = predict(path, x)
    with torch.no_grad():
        torch_logits = model.eval()(torch.from_numpy(x)).numpy()
    if onnx_logits.shape != torch_logits.shape:
        raise ExportError(
            f"{path.name} outputs shape {onnx_logits.shape}, torch {torch_logits.shape}"
        )
    diff = np.abs(onnx_logits - torch_logits)
    limit = EXPORT_ATOL + EXPORT_RTOL * np.abs(torch_logits)
    check = ExportCheck(
        samples=len(x),
        max_abs_diff=float(diff.max()),
        atol=EXPORT_ATOL,
        rtol=EXPORT_RTOL,
        argmax_agreement=float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean()),
    )
    if not (diff <= limit).all():
        raise ExportError(
            f"{path.name} disagrees with torch: max |diff| {check.max_abs_diff:.3g} exceeds "
            f"atol {EXPORT_ATOL} + rtol {EXPORT_RTOL} * |torch|"
        )
    return check


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and INFO chatter ("Obtain model graph ...")."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
