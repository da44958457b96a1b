"""ONNX export with a fixed opset and a dynamic batch axis, checked against torch.

The model is exported with ``torch.onnx.export`` (the ``torch.export``/dynamo path, which
needs no network), validated by ``onnx.checker`` and then run in ONNX Runtime on the transfer
set: its logits must match torch's within :data:`EXPORT_ATOL` + :data:`EXPORT_RTOL` * |torch|.
"""

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

__all__ = [
    "EXPORT_ATOL",
    "EXPORT_RTOL",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportCheck",
    "export_onnx",
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


def export_onnx(model: nn.Module, path: Path, *, input_shape: tuple[int, ...]) -> Path:
    """Export ``model`` (eval mode) to ``path`` as one self-contained ONNX file.

    Input ``input`` is ``(batch, *input_shape)`` float32 with a dynamic ``batch`` axis;
    output ``logits`` is ``(batch, num_classes)``.
    """
    model = model.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
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
