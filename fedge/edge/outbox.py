"""The device's outbox of install reports: durable until the hub acknowledges each one.

Every install outcome is appended (and fsynced) before it is sent, so a report survives a cut
link, a crash or a power cut and is delivered, in order, when the hub can be reached again.
"""

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import grpc

from fedge.files import atomic_write
from fedge.log import logger
from fedge.protocol.serde import InstallReport

__all__ = ["OUTBOX_FILE", "ReportOutbox"]

OUTBOX_FILE = "outbox.jsonl"


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
