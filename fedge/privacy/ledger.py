"""A device's privacy ledger: every DP-SGD run it has done, kept in its own state directory.

The ledger is one small JSON file (``privacy-ledger.json``) next to the device's data, written
atomically (temporary file, fsync, rename), so it survives restarts and crashes and moves with
the device from simulation to the gRPC runtime unchanged. ε is recomputed from the entries at
the requested δ, never stored, so it cannot drift from what was actually spent.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedge.errors import FedgeError, PrivacyBudgetExceededError
from fedge.files import atomic_write
from fedge.privacy.accountant import Accountant

__all__ = ["LEDGER_FILE", "DeviceLedger", "LedgerEntry"]

LEDGER_FILE = "privacy-ledger.json"
_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One DP-SGD run: its noise multiplier, sampling rate and number of steps."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    server_round: int = 0
    time: float = 0.0


class DeviceLedger:
    """The privacy spent by one device, persisted in ``state_dir``."""

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / LEDGER_FILE
        self.entries: list[LedgerEntry] = self._read()

    def accountant(self, *, delta: float, method: str = "rdp") -> Accountant:
        """An accountant holding every entry of this ledger."""
        acc = Accountant(delta=delta, method=method)
        for e in self.entries:
            acc.step(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate, steps=e.steps)
        return acc

    def epsilon(self, *, delta: float, method: str = "rdp") -> float:
        """ε spent by this device so far, across all runs."""
        return self.accountant(delta=delta, method=method).epsilon()

    def check(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        budget: float | None,
        delta: float,
        method: str = "rdp",
    ) -> float:
        """ε after the planned run; raise :class:`PrivacyBudgetExceededError` past ``budget``."""
        acc = self.accountant(delta=delta, method=method)
        after = acc.epsilon_after(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps
        )
        if budget is not None and after > budget:
            raise PrivacyBudgetExceededError(
                f"device privacy budget exhausted: spent epsilon {acc.epsilon():.3f}, this task "
                f"would bring it to {after:.3f} > budget {budget:g} (delta {delta:g}); "
                f"ledger {self.path}"
            )
        return after

    def record(self, entry: LedgerEntry) -> None:
        """Append ``entry`` and write the ledger atomically."""
        self.entries.append(entry)
        self._write()

    def _read(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            if data.get("version") != _VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            return [LedgerEntry(**e) for e in data["entries"]]
        except (ValueError, KeyError, TypeError) as err:
            # Refusing is the only safe answer: an unreadable ledger cannot prove the budget.
            raise FedgeError(f"privacy ledger {self.path} is unreadable: {err}") from err

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": _VERSION, "entries": [asdict(e) for e in self.entries]}
        atomic_write(self.path, json.dumps(doc, indent=1).encode())


def now() -> float:
    """Wall-clock time for ledger entries."""
    return time.time()
