"""When simulated devices are reachable and how fast they train, on a simulated clock.

Simulated time is cut into slots of ``--slot-seconds``. An availability model says, for each
device and slot, whether the device is reachable:

- ``always``: every device, every slot;
- ``random:P``: each device independently with probability ``P`` in each slot;
- ``diurnal:P``: a day of 24 slots, each device reachable for ``round(24·P)`` consecutive slots a
  day from its own (random) hour, like phones that sync while they charge at night;
- ``trace:FILE``: a CSV (``device,start,end``: 0-based device index, seconds) of the intervals in
  which each device is reachable, repeated with the period of its last end; devices the file
  does not name are never reachable.

A device trains at ``--device-speed`` examples per simulated second times a log-normal factor
``exp(sigma·N(0,1))`` drawn once per device (``--speed-sigma``). Every draw comes from the run's
seed, so a simulated fleet behaves the same in every run of that seed.
"""

import csv
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedge.errors import ConfigError

__all__ = [
    "AVAILABILITY_HELP",
    "Availability",
    "device_speeds",
    "parse_availability",
]

AVAILABILITY_HELP = "always, random:P, diurnal:P or trace:FILE (CSV device,start,end in seconds)."

_DAY_SLOTS = 24
# How far ahead a device's next reachable slot is searched before it counts as never reachable.
_SEARCH_SLOTS = 100_000
_OPTION = "--availability"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Availability:
    """Whether device ``i`` (0-based) is reachable at a simulated time, from one parsed spec."""

    kind: str
    probability: float = 1.0
    slot_seconds: float = 60.0
    devices: int = 1
    seed: int = 0
    # trace: each device's reachable intervals (sorted), and the trace's period.
    intervals: tuple[tuple[tuple[float, float], ...], ...] = field(default=(), repr=False)
    period: float = 0.0

    def available(self, device: int, time: float) -> bool:
        """Whether ``device`` is reachable at ``time``."""
        if self.kind == "always":
            return True
        if self.kind == "trace":
            return self._in_trace(device, time)
        return bool(self._slot_on(self._slot(time))[device])

    def available_devices(self, devices: Sequence[int], time: float) -> list[int]:
        """The members of ``devices`` reachable at ``time``, in the given order."""
        if self.kind == "always":
            return list(devices)
        if self.kind == "trace":
            return [d for d in devices if self._in_trace(d, time)]
        on = self._slot_on(self._slot(time))
        return [d for d in devices if on[d]]

    def next_available(self, device: int, time: float) -> float:
        """The first time at or after ``time`` when ``device`` is reachable (``inf``: never)."""
        if self.available(device, time):
            return time
        return self.next_change(device, time)

    def next_change(self, device: int, time: float) -> float:
        """The first time after ``time`` when ``device`` is reachable and was not just before
        (the start of its next reachable stretch; ``inf`` if there is none)."""
        if self.kind == "always":
            return math.inf
        if self.kind == "trace":
            return self._next_trace_start(device, time)
        slot = self._slot(time)
        for ahead in range(slot + 1, slot + _SEARCH_SLOTS):
            if self._slot_on(ahead)[device] and not self._slot_on(ahead - 1)[device]:
                return ahead * self.slot_seconds
        return math.inf

    def _slot(self, time: float) -> int:
        # A slot's start time, computed as slot * seconds, must fall in that slot, not the one
        # before it by a rounding error (the clock jumps to exactly those times).
        return math.floor(time / self.slot_seconds + _TOLERANCE)

    def _slot_on(self, slot: int) -> np.ndarray:
        return _slot_mask(self.kind, self.probability, self.devices, self.seed, slot)

    def _in_trace(self, device: int, time: float) -> bool:
        if device >= len(self.intervals) or not self.intervals[device]:
            return False
        t = time % self.period
        return any(
            start - _TOLERANCE <= t < end - _TOLERANCE for start, end in self.intervals[device]
        )

    def _next_trace_start(self, device: int, time: float) -> float:
        if device >= len(self.intervals) or not self.intervals[device]:
            return math.inf
        cycle = math.floor(time / self.period)
        for k in (cycle, cycle + 1):
            for start, _ in self.intervals[device]:
                at = k * self.period + start
                if at > time:
                    return at
        return math.inf


@functools.lru_cache(maxsize=4096)
def _slot_mask(kind: str, probability: float, devices: int, seed: int, slot: int) -> np.ndarray:
    """Which devices are reachable in ``slot`` (one seeded draw per slot, cached)."""
    if kind == "random":
        draws = np.random.default_rng([seed, 0xA7A11, slot]).random(devices)
        return draws < probability
    hours = np.random.default_rng([seed, 0xD1A1]).integers(0, _DAY_SLOTS, devices)
    awake = max(1, round(_DAY_SLOTS * probability))
    return (slot + hours) % _DAY_SLOTS < awake


def parse_availability(spec: str, *, devices: int, slot_seconds: float, seed: int) -> Availability:
    """The availability model ``spec`` names for ``devices`` devices, or a :class:`ConfigError`
    naming ``--availability`` and what is wrong."""
    kind, _, arg = spec.partition(":")
    if kind == "always" and not arg:
        return Availability("always", devices=devices, slot_seconds=slot_seconds, seed=seed)
    if kind in ("random", "diurnal"):
        p = _probability(spec, arg)
        return Availability(
            kind, probability=p, slot_seconds=slot_seconds, devices=devices, seed=seed
        )
    if kind == "trace" and arg:
        intervals, period = _read_trace(spec, Path(arg).expanduser(), devices)
        return Availability(
            "trace",
            slot_seconds=slot_seconds,
            devices=devices,
            seed=seed,
            intervals=intervals,
            period=period,
        )
    raise ConfigError(_OPTION, spec, f"is not one of: {AVAILABILITY_HELP}")


def _probability(spec: str, arg: str) -> float:
    try:
        p = float(arg)
    except ValueError:
        raise ConfigError(
            _OPTION, spec, "needs a probability after the colon, e.g. random:0.5"
        ) from None
    if not 0.0 < p <= 1.0:
        raise ConfigError(_OPTION, spec, "needs a probability in (0, 1]")
    return p


def _read_trace(
    spec: str, path: Path, devices: int
) -> tuple[tuple[tuple[tuple[float, float], ...], ...], float]:
    if not path.is_file():
        raise ConfigError(_OPTION, spec, f"names {path}, which is not a file")
    per_device: list[list[tuple[float, float]]] = [[] for _ in range(devices)]
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"device", "start", "end"} <= set(reader.fieldnames):
            raise ConfigError(_OPTION, spec, "needs a CSV header device,start,end")
        for line, row in enumerate(reader, start=2):
            device, start, end = _trace_row(spec, path, line, row, devices)
            per_device[device].append((start, end))
    period = max((end for rows in per_device for _, end in rows), default=0.0)
    if period <= 0:
        raise ConfigError(_OPTION, spec, f"{path} has no interval in which a device is reachable")
    return tuple(tuple(sorted(rows)) for rows in per_device), period


def _trace_row(
    spec: str, path: Path, line: int, row: dict[str, str], devices: int
) -> tuple[int, float, float]:
    try:
        device, start, end = int(row["device"]), float(row["start"]), float(row["end"])
    except (TypeError, ValueError):
        raise ConfigError(
            _OPTION, spec, f"{path} line {line}: {row} is not device,start,end"
        ) from None
    if not 0 <= device < devices:
        raise ConfigError(
            _OPTION, spec, f"{path} line {line}: device {device} is outside [0, {devices})"
        )
    if not 0 <= start < end:
        raise ConfigError(_OPTION, spec, f"{path} line {line}: needs 0 <= start < end")
    return device, start, end


def device_speeds(devices: int, *, median: float, sigma: float, seed: int) -> np.ndarray:
    """Each device's training speed (examples per simulated second): log-normal around
    ``median`` with shape ``sigma`` (all equal for ``sigma`` 0)."""
    normal = np.random.default_rng([seed, 0x5BEED]).standard_normal(devices)
    return np.asarray(median * np.exp(sigma * normal), dtype=np.float64)
