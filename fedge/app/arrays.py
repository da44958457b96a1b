"""Reading Flower ``Array`` values without copying them."""

import io

import numpy as np
from flwr.app import Array
from flwr.common.constant import SType

__all__ = ["array_values"]


def array_values(array: Array) -> np.ndarray:
    """The values of ``array``, read-only and without copying its data where possible.

    Flower's ``Array.numpy()`` copies the data out of its ``.npy`` bytes; a check that only
    reads the values (shape, finiteness) does not need that copy. Raises ``ValueError`` or
    ``TypeError`` for data that does not decode, as ``Array.numpy()`` does.
    """
    if array.stype != SType.NUMPY:
        return array.numpy()  # raises TypeError for what it cannot decode
    data = array.data
    fp = io.BytesIO(data)  # shares the bytes: only the header is read
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except (ValueError, OSError, SyntaxError) as err:
        raise ValueError(f"not a .npy array: {err}") from err
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape, dtype=np.int64))
    values = np.frombuffer(data, dtype=dtype, count=count, offset=fp.tell())
    return values.reshape(shape, order="F" if fortran else "C")
