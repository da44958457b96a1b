"""A device's training result is kept on disk until the coordinator takes it: whole after a
save, gone after a clear, and a torn payload (a crash mid-write) is dropped, not sent."""

from pathlib import Path

from fedge.edge.outbox import PendingResult
from fedge.protocol.payload import EncodedMessage
from fedge.v1 import fleet_pb2 as pb


def _header(payload: EncodedMessage) -> pb.ResultHeader:
    return pb.ResultHeader(
        task_id="t1",
        run_id=3,
        server_round=5,
        payload_bytes=payload.total_bytes,
        part_bytes=payload.part_bytes,
    )


def test_a_kept_result_survives_a_new_process_until_cleared(tmp_path: Path) -> None:
    payload = EncodedMessage([b"message", b"", b"\x00" * 1000])
    PendingResult(tmp_path).save(_header(payload), payload)
    kept = PendingResult(tmp_path).load()  # as a restarted device reads it
    assert kept is not None
    header, again = kept
    assert (header.task_id, header.run_id, header.server_round) == ("t1", 3, 5)
    assert again.parts == payload.parts
    PendingResult(tmp_path).clear()
    assert PendingResult(tmp_path).load() is None


def test_a_torn_result_is_dropped(tmp_path: Path) -> None:
    payload = EncodedMessage([b"message", b"arrays"])
    pending = PendingResult(tmp_path)
    pending.save(_header(payload), payload)
    (pending.dir / "payload.bin").write_bytes(b"mess")
    assert pending.load() is None
    assert not (pending.dir / "header.pb").exists()


def test_no_result_without_its_header(tmp_path: Path) -> None:
    pending = PendingResult(tmp_path)
    pending.dir.mkdir()
    (pending.dir / "payload.bin").write_bytes(b"a payload whose header was never written")
    assert pending.load() is None
