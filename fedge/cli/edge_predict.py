"""``fedge edge predict --state DIR INPUT...``: predictions from the device's committed model.

Each INPUT is raw when the release carries its preprocessing (a task whose data fedge read):
a ``.csv`` of rows (a table) or of one window of readings (a sensor series), or an image file.
Otherwise it is a ``.npy`` file (one sample, or a batch), an ``.npz`` with an ``x`` array, or a
``.json`` array of numbers, shaped like the model's input (for the camera profile: 1x28x28
floats, normalized as the device's data). Prints one line per sample: the predicted label (a
regression model's number, in its target's units) and the release version. Programs on the
device call the gRPC inference server of ``fedge edge start`` instead
(``fedge.v1.InferenceService``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fedge.cli.common import console, fail
from fedge.errors import FedgeError

__all__ = ["predict_command"]


def predict_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Input files: raw (a .csv of rows or of a window of readings, an image) when "
            "the release carries its preprocessing; else .npy, .npz (with 'x') or .json."
        ),
    ],
    state: Annotated[
        Path,
        typer.Option("--state", help="The device's state directory.", envvar="FEDGE_DEVICE_STATE"),
    ] = Path("device-state"),
) -> None:
    """Predict with the device's committed model: one line per sample (label, release).

    Each INPUT is a .npy file (one sample or a batch), an .npz with an 'x' array, or a .json
    array of numbers, shaped like the model's input with or without the batch dimension (a
    camera model takes 1x28x28 floats). Programs on the device call the gRPC inference server
    of `fedge edge start` (fedge.v1.InferenceService) instead.
    """
    from fedge.edge.inference import predict_arrays
    from fedge.edge.raw_inputs import read_input
    from fedge.edge.slots import POINTER_FILE, Slots

    # Make no slot folders in a wrong --state: look for its pointer file first.
    installed = (state / POINTER_FILE).is_file()
    signed = None
    if installed:
        slots = Slots(state)
        signed = slots.signed_manifest(slots.state().serving or "a")
    spec = signed.manifest.report.get("preprocessing") if signed is not None else None
    try:
        arrays = [read_input(p, spec) for p in inputs]
    except FedgeError as err:
        fail(str(err))
    if not installed:
        fail(f"--state: {str(state)!r} has no installed model (no {POINTER_FILE})")
    try:
        outputs, version = predict_arrays(state, arrays)
    except FedgeError as err:
        fail(str(err))
    except Exception as err:  # ONNX Runtime rejects a wrong shape with its own error types
        fail(f"prediction failed (does the input match the model?): {err}")
    if spec is not None and spec.get("spec", {}).get("target"):
        _print_numbers(inputs, outputs, spec, version)
        return
    names = signed.manifest.labels if signed is not None else ()
    for path, out in zip(inputs, outputs, strict=True):
        for row, label in enumerate(np.argmax(out.reshape(-1, out.shape[-1]), axis=-1)):
            name = names[label] if label < len(names) else str(label)
            console.print(
                f"{path}[{row}]: {name} (release {version})", highlight=False, soft_wrap=True
            )


def _print_numbers(
    inputs: list[Path], outputs: list[np.ndarray], spec: dict[str, object], version: int
) -> None:
    """A regression model's answers, in the target's units (the manifest's spec has its scale)."""
    from fedge.data.preprocessing import Preprocessing

    preprocessing = Preprocessing.from_json(spec)
    for path, out in zip(inputs, outputs, strict=True):
        for row, value in enumerate(preprocessing.to_target_units(out)):
            console.print(
                f"{path}[{row}]: {value:.6g} (release {version})", highlight=False, soft_wrap=True
            )
