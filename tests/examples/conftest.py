"""Helpers of the examples' tests: load an example's module from its file, one torch thread."""

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(example: str, module: str) -> ModuleType:
    """``examples/<example>/<module>.py`` imported as a module of its own."""
    path = EXAMPLES / example / f"{module}.py"
    name = f"fedge_example_{example}_{module}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models train fastest on one thread; on a busy machine more threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
