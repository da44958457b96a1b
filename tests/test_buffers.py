"""BytesBuilder: the bytes it builds equal the join of what was written, and it refuses the
writes and builds that would hand out a wrong or partly written object."""

import gc
import sys

import numpy as np
import pytest

from fedge.protocol import buffers
from fedge.protocol.buffers import BytesBuilder


def test_this_interpreter_builds_in_place() -> None:
    # CPython (which the project pins) passes the layout check; elsewhere the fallback runs.
    assert (sys.implementation.name == "cpython") == buffers._IN_PLACE


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("sizes", [[0], [1], [3, 0, 4], [2**20, 1, 2**16 + 7]])
def test_builds_the_join_of_its_writes_as_real_bytes(
    sizes: list[int], in_place: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffers, "_IN_PLACE", in_place and buffers._IN_PLACE)
    rng = np.random.default_rng(len(sizes))
    pieces = [rng.bytes(n) for n in sizes]
    builder = BytesBuilder(sum(sizes))
    for piece in pieces:
        builder.write(memoryview(piece) if len(piece) % 2 else piece)
    built = builder.build()
    expected = b"".join(pieces)
    assert type(built) is bytes
    assert built == expected and hash(built) == hash(expected)
    assert built[-1:] == expected[-1:] and built.decode("latin-1") == expected.decode("latin-1")


def test_refuses_too_much_and_too_little() -> None:
    builder = BytesBuilder(4)
    builder.write(b"ab")
    with pytest.raises(ValueError, match="3 bytes do not fit: 2 of 4 left"):
        builder.write(b"cde")
    with pytest.raises(ValueError, match="only 2 of 4 bytes were written"):
        builder.build()
    builder.write(b"cd")
    assert builder.build() == b"abcd"
    with pytest.raises(ValueError, match="negative"):
        BytesBuilder(-1)


def test_built_bytes_are_owned_once_and_freed() -> None:
    builder = BytesBuilder(8)
    builder.write(b"01234567")
    built = builder.build()
    del builder
    gc.collect()
    assert sys.getrefcount(built) == 2  # the name and getrefcount's argument: no leak
    values = np.frombuffer(built, dtype=np.uint8)
    assert not values.flags.writeable  # numpy sees read-only bytes, as for any bytes
