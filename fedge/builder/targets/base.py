"""What a release target is: an engine a model is exported for, loaded in and measured with.

A :class:`Target` exports a torch model (eval mode, batch-first float32 input) to one artifact
file for its engine at a precision (``fp32`` or ``int8``, calibrated on the server-held
transfer set), and loads such a file into a :class:`~fedge.inference.runners.Runner` that
maps a float32 batch to float32 logits on a given number of threads (the runners live in
:mod:`fedge.inference.runners`, which devices import too). Artifacts are single files so that a
release manifest can sign one sha256 and length per device profile.

A target's engine package is an optional extra: :meth:`Target.require` raises
:class:`TargetUnavailableError`, one line naming the package and the extra to install, when it
is missing.
"""

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from fedge.errors import TargetUnavailableError
from fedge.inference.runners import Runner, load_runner

if TYPE_CHECKING:  # torch is needed to export, never to load and run an artifact
    from torch import nn

    from fedge.builder.transfer import TransferSet

__all__ = [
    "Artifact",
    "Target",
    "importable",
    "onnx_fp32",
    "quiet_converter",
    "quiet_stdout",
]


@dataclass(frozen=True)
class Artifact:
    """One exported model file for ``engine`` at ``precision``."""

    path: Path
    engine: str
    precision: str


class Target(ABC):
    """An engine that release artifacts are built for (see the module docstring)."""

    #: The engine name device profiles list (``onnxruntime``, ``openvino``, ``litert``).
    name: ClassVar[str] = ""
    #: File name suffix of the artifact (``.onnx``, ``.tflite``, ...).
    extension: ClassVar[str] = ""
    #: Python packages (import names) that exporting needs.
    export_modules: ClassVar[tuple[str, ...]] = ()
    #: Python packages (import names) that loading and running an artifact needs.
    engine_modules: ClassVar[tuple[str, ...]] = ()
    #: The ``fedge[...]`` extra that installs them ("" when fedge itself depends on them).
    extra: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")

    def missing(self, *, export: bool = True) -> list[str]:
        """The needed packages that cannot be imported here."""
        modules = (*self.export_modules, *self.engine_modules) if export else self.engine_modules
        return [m for m in dict.fromkeys(modules) if not importable(m)]

    def require(self, *, export: bool = True) -> None:
        """:class:`TargetUnavailableError` unless every needed package is installed."""
        missing = self.missing(export=export)
        if missing:
            raise TargetUnavailableError(f"engine {self.name!r}", self.extra, missing=missing)

    def import_engine(self) -> None:
        """Import the engine's packages (so that measuring a session leaves their cost out)."""
        self.require(export=False)
        for module in self.engine_modules:
            importlib.import_module(module)

    def export(
        self,
        model: "nn.Module",
        transfer: "TransferSet",
        out_dir: Path,
        precision: str,
    ) -> Artifact:
        """Write ``model`` as this engine's artifact at ``precision`` into ``out_dir``.

        ``out_dir`` belongs to this one model: targets may keep intermediate files there and
        reuse them (the fp32 ONNX export several targets start from). int8 is calibrated on
        ``transfer.x`` only.
        """
        self.require()
        self.check_precision(precision)
        path = out_dir / f"{self.name}-{precision}{self.extension}"
        self.convert(model, transfer, path, precision)
        return Artifact(path, self.name, precision)

    @abstractmethod
    def convert(
        self, model: "nn.Module", transfer: "TransferSet", path: Path, precision: str
    ) -> None:
        """Write ``model`` at ``precision`` to the artifact file ``path`` (see :meth:`export`:
        ``path.parent`` belongs to this one model)."""

    def load(self, path: Path, *, threads: int = 1) -> Runner:
        """A runner of the artifact at ``path`` on ``threads`` CPU threads."""
        return load_runner(self.name, path, threads=threads)

    def check_precision(self, precision: str) -> None:
        """``ValueError`` naming the valid precisions if this target has no ``precision``."""
        if precision not in self.precisions:
            raise ValueError(
                f"target {self.name!r} has no precision {precision!r}; valid choices: "
                f"{', '.join(self.precisions)}"
            )


def onnx_fp32(model: "nn.Module", transfer: "TransferSet", out_dir: Path) -> Path:
    """The model's fp32 ONNX export in ``out_dir``, checked against torch; written once."""
    from fedge.builder.export import export_onnx, verify_export

    path = out_dir / "source_fp32.onnx"
    if not path.exists():
        export_onnx(model, path, input_shape=transfer.input_shape)
        verify_export(model, path, transfer.x)
    return path


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


@contextmanager
def quiet_converter() -> Iterator[None]:
    """Keep a converter's chatter off this process's stderr inside the block.

    Converters and their dependencies write to file descriptor 2 from native code (TensorFlow's
    and absl's INFO lines, oneDNN notes) and from import-time loggers (torch's CUDA probe);
    a command whose errors are one line cannot let them through. What they wrote is logged at
    DEBUG level; a failure still raises its own exception.
    """
    import os
    import sys
    import tempfile

    from fedge.log import logger

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            chatter = sink.read().decode(errors="replace").strip()
            if chatter:
                logger.debug("converter output:\n%s", chatter)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Drop what a library prints on stdout (progress bars) inside the block."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield
