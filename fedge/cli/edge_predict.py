"""``fedge edge predict --state DIR INPUT...``: predictions from the device's committed model.

Each INPUT is a ``.npy`` file (one sample, or a batch), an ``.npz`` with an ``x`` array, or a
``.json`` array of numbers, shaped like the model's input (for the camera profile: 1x28x28
floats, normalized as the device's data). Prints one line per sample: the predicted label and
the release version. Programs on the device call the gRPC inference server of
``fedge edge start`` instead (``fedge.v1.InferenceService``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from fedge.cli.common import console, fail
from fedge.errors import FedgeError

__all__ = ["load_input", "predict_command"]


def load_input(path: Path) -> np.ndarray:
    """Read one INPUT file as float32; a clear error names a bad file."""
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return np.asarray(data["x"], dtype=np.float32)
        if path.suffix == ".json":
            return np.asarray(json.loads(path.read_text()), dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FedgeError(f"input {path}: cannot read it: {err}") from err
    raise FedgeError(f"input {path}: use a .npy, .npz (with 'x') or .json file")


def predict_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Input files: .npy (a sample or a batch), .npz with an 'x' array, or .json."
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
    from fedge.edge.slots import POINTER_FILE, Slots

    try:
        arrays = [load_input(p) for p in inputs]
        if not (state / POINTER_FILE).is_file():  # and make no slot folders in a wrong --state
            fail(f"--state: {str(state)!r} has no installed model (no {POINTER_FILE})")
        outputs, version = predict_arrays(state, arrays)
    except FedgeError as err:
        fail(str(err))
    except Exception as err:  # ONNX Runtime rejects a wrong shape with its own error types
        fail(f"prediction failed (does the input match the model?): {err}")
    slots = Slots(state)
    signed = slots.signed_manifest(slots.state().serving or "a")
    names = signed.manifest.labels if signed is not None else ()
    for path, out in zip(inputs, outputs, strict=True):
        for row, label in enumerate(np.argmax(out.reshape(-1, out.shape[-1]), axis=-1)):
            name = names[label] if label < len(names) else str(label)
            console.print(
                f"{path}[{row}]: {name} (release {version})", highlight=False, soft_wrap=True
            )
