"""The device's outbox: what it must deliver, durable until the other side acknowledges it.

Every install outcome is appended (and fsynced) before it is sent, so a report survives a cut
link, a crash or a power cut and is delivered, in order, when the hub can be reached again.
So is a training update (:class:`PendingResult`): written before it is pushed, so a device
whose link is cut keeps it, across a restart, and delivers it when the link returns (an
asynchronous run weighs it by the version it started from). A site gateway keeps each reply it
owes the cloud the same way, one :class:`PendingResult` per task.
"""

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import grpc

from fedge.files import atomic_write
from fedge.log import logger
from fedge.protocol.payload import EncodedMessage
from fedge.protocol.serde import InstallReport
from fedge.v1 import fleet_pb2 as pb

__all__ = ["KEEP_ON", "OUTBOX_FILE", "PENDING_RESULT_DIR", "PendingResult", "ReportOutbox"]

OUTBOX_FILE = "outbox.jsonl"
PENDING_RESULT_DIR = "pending-result"
#: A push that failed this way may not have arrived (or may be accepted later, once the
#: identity is sorted out): the result is kept.
KEEP_ON = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


class ReportOutbox:
    """Install reports queued on disk in ``state_dir/outbox.jsonl``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / OUTBOX_FILE
        self._lock = threading.Lock()

    def add(self, report: InstallReport) -> None:
        """Queue ``report`` durably."""
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(report)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def pending(self) -> list[InstallReport]:
        """The reports not yet acknowledged, oldest first (a torn last line is skipped)."""
        return [r for r in map(_parse, self._lines()) if r is not None]

    def flush(self, send: Callable[[InstallReport], None]) -> int:
        """Send queued reports in order until one fails; keep the rest. How many were sent."""
        with self._lock:
            lines = self._lines()
            sent = 0
            for line in lines:
                report = _parse(line)
                if report is not None:
                    try:
                        send(report)
                    except grpc.RpcError as exc:
                        logger.warning("cannot send install report yet: %s", exc.code().name)
                        break
                sent += 1
            if sent or lines:
                atomic_write(self.path, "".join(x + "\n" for x in lines[sent:]).encode())
            return sum(1 for line in lines[:sent] if _parse(line) is not None)

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []


def _parse(line: str) -> InstallReport | None:
    try:
        return InstallReport(**json.loads(line))
    except (ValueError, TypeError):
        return None  # a torn last line from a crash


class PendingResult:
    """A result not yet acknowledged, in ``state_dir/name/`` (a device's training result in
    ``pending-result/``: the agent works on one task at a time; a gateway's replies one
    directory per task).

    The payload is written first and the header last, atomically: a result with a header is
    whole, and a crash before it leaves no result at all.
    """

    def __init__(self, state_dir: Path, name: str = PENDING_RESULT_DIR) -> None:
        self.dir = Path(state_dir) / name

    def save(self, header: pb.ResultHeader, payload: EncodedMessage) -> None:
        """Keep ``payload`` and its ``header`` until :meth:`clear`."""
        self.clear()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "payload.bin", "wb") as handle:
            for part in payload.parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        atomic_write(self.dir / "header.pb", header.SerializeToString())

    def load(self) -> tuple[pb.ResultHeader, EncodedMessage] | None:
        """The kept result, if there is a whole one."""
        try:
            header = pb.ResultHeader.FromString((self.dir / "header.pb").read_bytes())
            data = (self.dir / "payload.bin").read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != sum(header.part_bytes):
            logger.warning("dropping a torn pending result in %s", self.dir)
            self.clear()
            return None
        parts, start = [], 0
        for size in header.part_bytes:
            parts.append(data[start : start + size])
            start += size
        return header, EncodedMessage(parts)

    def deliver(self, push: Callable[[], None]) -> None:
        """Make ``push`` (the kept result's upload); forget the result once the other side
        took or refused it, keep it (and re-raise) while it may not have arrived."""
        try:
            push()
        except grpc.RpcError as err:
            if err.code() in KEEP_ON:
                raise  # kept: delivered when the link (or the identity) is back
            # Refused (stale, duplicate, invalid): the other side recorded why; carry on.
            logger.warning("result refused: %s: %s", err.code().name, err.details())
        self.clear()

    def clear(self) -> None:
        """Forget the kept result (delivered, or refused for good)."""
        for name in ("header.pb", "payload.bin"):
            (self.dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # one directory per result: leave none behind
            self.dir.rmdir()
