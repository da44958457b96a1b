"""Reading Flower ``Array`` values without copying them or parsing their headers.

An ``Array`` of numpy's kind carries ``.npy`` bytes: a text header (a Python dict literal that
``np.load`` reads with ``ast.literal_eval``) and then the values. For the arrays a round moves
(a model's tensors, ten clients, every round) parsing those headers was most of the time spent
reading them, all of it holding the GIL that clients training side by side share. The header
``np.save`` writes for a C-order array is fixed by its dtype and shape, which the ``Array``
states: where the bytes begin with exactly that header, the values are read from behind it.
Any other bytes (Fortran order, another format version, a header that disagrees with the
stated dtype or shape) are parsed in full, as ``np.load`` would.
"""

import functools
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array
from flwr.common.constant import SType
from numpy.lib import format as npy_format

if TYPE_CHECKING:
    import torch

__all__ = ["array_values", "torch_state_dict"]


def array_values(array: Array) -> np.ndarray:
    """The values of ``array``, read-only and without copying its data where possible.

    Flower's ``Array.numpy()`` copies the data out of its ``.npy`` bytes; a check that only
    reads the values (shape, finiteness) does not need that copy. Raises ``ValueError`` or
    ``TypeError`` for data that does not decode, as ``Array.numpy()`` does.
    """
    if array.stype != SType.NUMPY:
        return array.numpy()  # raises TypeError for what it cannot decode
    data = array.data
    known = _stated_layout(array)
    if known is not None:
        dtype, shape, header = known
        if len(data) == len(header) + dtype.itemsize * math.prod(shape) and data.startswith(header):
            return np.frombuffer(data, dtype=dtype, offset=len(header)).reshape(shape)
    return _parsed_values(data)


def torch_state_dict(arrays: Mapping[str, Array]) -> "dict[str, torch.Tensor]":
    """``ArrayRecord.to_torch_state_dict()``, reading each array as :func:`array_values` does.

    The tensors own writable copies of the values (``load_state_dict`` copies them once more
    into the model's weights, but a tensor over read-only bytes is one torch warns about).
    Torch is imported here: the gateway's reply checks read arrays without it.
    """
    import torch

    return {name: torch.from_numpy(array_values(a).copy()) for name, a in arrays.items()}


def _stated_layout(array: Array) -> tuple[np.dtype, tuple[int, ...], bytes] | None:
    try:
        dtype, shape = np.dtype(array.dtype), tuple(int(n) for n in array.shape)
    except (TypeError, ValueError):
        return None  # the bytes alone say what they hold
    if dtype.hasobject:
        return None
    return dtype, shape, _c_order_header(dtype.str, shape)


@functools.lru_cache(maxsize=256)
def _c_order_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The header ``np.save`` writes (format 1.0) for a C-order array of ``dtype`` and
    ``shape``; a model has a few dozen such pairs."""
    fp = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    npy_format.write_array_header_1_0(fp, header)
    return fp.getvalue()


def _parsed_values(data: bytes) -> np.ndarray:
    fp = io.BytesIO(data)  # shares the bytes: only the header is read
    try:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
    except (ValueError, OSError, SyntaxError) as err:
        raise ValueError(f"not a .npy array: {err}") from err
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    values = np.frombuffer(data, dtype=dtype, count=count, offset=fp.tell())
    return values.reshape(shape, order="F" if fortran else "C")
