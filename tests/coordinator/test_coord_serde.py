"""Payload serde without copies: chunk views, reassembly across chunks, array views.

The fast paths must decode exactly what protobuf and Flower decode, and fall back to them for
anything else, so each test compares against the library's own result.
"""

import hashlib

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, RecordDict
from google.protobuf.message import DecodeError

from fedge.app.arrays import array_values, torch_state_dict
from fedge.errors import PayloadError
from fedge.protocol.messages import decode_message, encode_message
from fedge.protocol.payload import PayloadAssembler
from fedge.protocol.wire import ChunkView, FlatView, chunk_parser, use_zero_copy_streams
from fedge.runtime.local import set_server_identity
from fedge.v1 import fleet_pb2, hub_pb2

SIZES = [0, 1, 127, 128, 16_383, 16_384, 2**20 + 3]


@pytest.mark.parametrize("cls", [fleet_pb2.PullTaskResponse, fleet_pb2.PushResultRequest])
@pytest.mark.parametrize("size", SIZES)
def test_chunk_messages_decode_as_views_of_the_same_bytes(cls: type, size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    wire = cls(chunk=fleet_pb2.Chunk(data=data)).SerializeToString()
    parsed = chunk_parser(cls)(wire)
    assert parsed.WhichOneof("part") == "chunk"
    assert bytes(parsed.chunk.data) == data
    if size:  # protobuf leaves out an empty field: that message goes to protobuf
        assert isinstance(parsed, ChunkView)


def test_other_messages_go_to_protobuf() -> None:
    parse = chunk_parser(fleet_pb2.PushResultRequest)
    header = fleet_pb2.PushResultRequest(header=fleet_pb2.ResultHeader(task_id="t", run_id=3))
    parsed = parse(header.SerializeToString())
    assert parsed.WhichOneof("part") == "header" and parsed.header.task_id == "t"
    # a chunk followed by anything else is not the one-field shape: protobuf decides
    wire = fleet_pb2.PushResultRequest(chunk=fleet_pb2.Chunk(data=b"abc")).SerializeToString()
    parsed = parse(wire + header.SerializeToString())
    assert parsed.WhichOneof("part") == "header"
    with pytest.raises(DecodeError):
        parse(b"\x12\x05\x0a\x09abc")  # lengths that overrun: refused as protobuf refuses
    assert chunk_parser(fleet_pb2.HeartbeatRequest) == fleet_pb2.HeartbeatRequest.FromString


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("offset", [0, 1, 300, 2**40])
def test_download_replies_decode_as_views(size: int, offset: int) -> None:
    class _Channel:
        def unary_stream(self, path: str, **kwargs: object) -> object:
            return kwargs["response_deserializer"]

    class _Stub:
        DownloadArtifact: object = None

    stub = _Stub()
    service = hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"]
    use_zero_copy_streams(stub, _Channel(), service)
    parse = stub.DownloadArtifact
    assert callable(parse)
    data = np.random.default_rng(size).bytes(size)
    reply = hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=offset + size)
    parsed = parse(reply.SerializeToString())
    assert isinstance(parsed, FlatView)
    assert (parsed.offset, bytes(parsed.data), parsed.length) == (offset, data, offset + size)


def _message(arrays: dict[str, np.ndarray]) -> Message:
    set_server_identity(1)
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return Message(RecordDict({"arrays": record}), 3, MessageType.TRAIN, group_id="1")


@pytest.mark.parametrize("chunk", [1, 7, 4096, 2**20])
def test_payload_reassembles_across_chunks(chunk: int) -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "empty": np.zeros((0,), dtype=np.float64),
        "b": rng.integers(0, 9, size=5000, dtype=np.int64),
    }
    encoded = encode_message(_message(arrays))
    assembler = PayloadAssembler(
        expected_bytes=encoded.total_bytes, part_bytes=encoded.part_bytes, sha256=encoded.sha256
    )
    for piece in encoded.views(chunk):
        assembler.add(piece)  # as the chunk views arrive
    parts = assembler.finish()
    assert parts == encoded.parts and all(type(p) is bytes for p in parts)
    decoded = decode_message(parts)
    for key, value in arrays.items():
        got = decoded.content.array_records["arrays"][key]
        np.testing.assert_array_equal(got.numpy(), value)
        np.testing.assert_array_equal(array_values(got), value)


def test_chunks_spanning_parts_and_empty_parts_land_in_their_parts() -> None:
    parts = [b"head", b"", b"x" * 10, b"", b"yz", b""]
    assembler = PayloadAssembler(
        expected_bytes=16, part_bytes=[len(p) for p in parts], sha256="", require_sha256=False
    )
    for piece in (b"hea", b"dxxx", b"xxxxxxxy", b"z"):
        assembler.add(piece)
    assert assembler.finish() == parts


def test_a_wrong_hash_or_size_is_refused() -> None:
    data = b"payload"
    sha = hashlib.sha256(b"x").hexdigest()
    assembler = PayloadAssembler(expected_bytes=len(data), part_bytes=[len(data)], sha256=sha)
    assembler.add(data)
    with pytest.raises(PayloadError, match="SHA-256"):
        assembler.finish()
    for sizes in ([3, 3], [], [8, -1]):  # refused before any chunk is taken
        with pytest.raises(PayloadError, match="do not add up"):
            PayloadAssembler(expected_bytes=len(data), part_bytes=sizes, sha256=sha)
    short = PayloadAssembler(expected_bytes=len(data), part_bytes=[2, 5], sha256=sha)
    short.add(data[:4])
    with pytest.raises(PayloadError, match="has 4 bytes, announced 7"):
        short.finish()
    with pytest.raises(PayloadError, match="longer than the announced"):
        short.add(data)
    with pytest.raises(PayloadError, match="at least its message part"):
        decode_message([])


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.array(3.5, dtype=np.float16),
        np.zeros((2, 0, 3), dtype=np.int8),
        np.array([True, False]),
    ],
)
def test_array_values_equal_flowers_numpy(value: np.ndarray) -> None:
    array = Array(value)
    got = array_values(array)
    np.testing.assert_array_equal(got, array.numpy())
    assert got.dtype == value.dtype and got.shape == value.shape


def test_bytes_that_disagree_with_the_stated_shape_or_dtype_are_read_as_the_bytes_say() -> None:
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    honest = Array(value)
    for dtype, shape in (("float32", (4, 3)), ("int32", (3, 4)), ("float32", (12,))):
        stated = Array(dtype, shape, honest.stype, honest.data)
        got = array_values(stated)
        np.testing.assert_array_equal(got, value)
        assert got.dtype == value.dtype and got.shape == value.shape


def test_torch_state_dict_equals_flowers() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    record = ArrayRecord(model.state_dict())
    ours, flowers = torch_state_dict(record), record.to_torch_state_dict()
    assert list(ours) == list(flowers)
    for name, tensor in flowers.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor)
        ours[name].add_(1)  # writable, and not the record's bytes
    again = record.to_torch_state_dict()
    for name, tensor in flowers.items():
        assert torch.equal(again[name], tensor) and not torch.equal(ours[name], tensor)


def test_array_values_refuse_what_does_not_decode() -> None:
    array = Array(np.ones(100, dtype=np.float32))
    truncated = Array(array.dtype, array.shape, array.stype, array.data[:-8])
    with pytest.raises(ValueError):
        array_values(truncated)
    garbage = Array(array.dtype, array.shape, array.stype, b"\x00" * 64)
    with pytest.raises(ValueError):
        array_values(garbage)
