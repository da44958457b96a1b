"""Simulated devices' reachability and speeds: the models behave as declared, for a seed."""

import math
from pathlib import Path

import numpy as np
import pytest

from fedge.app.availability import device_speeds, parse_availability
from fedge.errors import ConfigError


def _on_fraction(spec: str, devices: int = 50, slots: int = 200) -> float:
    model = parse_availability(spec, devices=devices, slot_seconds=10.0, seed=3)
    on = [len(model.available_devices(range(devices), s * 10.0 + 5)) for s in range(slots)]
    return sum(on) / (devices * slots)


def test_always_is_always_reachable_and_never_changes() -> None:
    model = parse_availability("always", devices=5, slot_seconds=60.0, seed=0)
    assert model.available_devices([0, 1, 2, 3, 4], 12345.0) == [0, 1, 2, 3, 4]
    assert model.next_change(2, 0.0) == math.inf


def test_random_availability_is_on_with_its_probability_and_fixed_by_the_seed() -> None:
    assert _on_fraction("random:0.5") == pytest.approx(0.5, abs=0.02)
    assert _on_fraction("random:0.2") == pytest.approx(0.2, abs=0.02)
    a = parse_availability("random:0.5", devices=30, slot_seconds=60.0, seed=1)
    b = parse_availability("random:0.5", devices=30, slot_seconds=60.0, seed=1)
    c = parse_availability("random:0.5", devices=30, slot_seconds=60.0, seed=2)
    slots = [a.available_devices(range(30), 60.0 * s) for s in range(20)]
    assert slots == [b.available_devices(range(30), 60.0 * s) for s in range(20)]
    assert slots != [c.available_devices(range(30), 60.0 * s) for s in range(20)]


def test_a_device_offline_now_is_next_reachable_at_the_start_of_an_on_slot() -> None:
    model = parse_availability("random:0.3", devices=10, slot_seconds=60.0, seed=0)
    checked = 0
    for device in range(10):
        for t in (5.0, 130.0, 611.0):
            if model.available(device, t):
                assert model.next_available(device, t) == t
                continue
            at = model.next_available(device, t)
            assert at > t and at % 60.0 == 0 and model.available(device, at)
            # nowhere in between
            assert not any(model.available(device, s) for s in np.arange(t, at, 7.0))
            checked += 1
    assert checked > 5


def test_diurnal_devices_are_awake_a_contiguous_share_of_each_day() -> None:
    model = parse_availability("diurnal:0.25", devices=20, slot_seconds=3600.0, seed=0)
    hours = np.array([[model.available(d, 3600.0 * h + 1) for h in range(48)] for d in range(20)])
    assert (hours.sum(axis=1) == 12).all()  # 6 hours a day, two days
    for row in hours[:, :24]:
        # one stretch a day (on a circle): exactly one off->on switch
        assert sum(1 for h in range(24) if row[h] and not row[h - 1]) == 1
    assert len({tuple(r) for r in hours}) > 1  # devices wake at different hours


def test_a_trace_file_gives_each_device_its_intervals_repeated(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("device,start,end\n0,0,10\n0,50,100\n1,20,30\n")
    model = parse_availability(f"trace:{trace}", devices=3, slot_seconds=60.0, seed=0)
    assert model.available(0, 5) and not model.available(0, 20) and model.available(0, 60)
    assert model.next_available(0, 20) == 50
    assert model.next_available(1, 35) == 120  # the trace repeats every 100 s
    assert model.available(0, 105)  # 105 is 5 in the second period
    assert not model.available(2, 5) and model.next_available(2, 0) == math.inf


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("random:1.5", "probability in (0, 1]"),
        ("random", "needs a probability"),
        ("sometimes", "is not one of"),
        ("trace:/nonexistent/trace.csv", "not a file"),
    ],
)
def test_a_bad_availability_is_one_config_error(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match="--availability") as err:
        parse_availability(spec, devices=4, slot_seconds=60.0, seed=0)
    assert words in str(err.value)


def test_a_trace_naming_a_device_outside_the_fleet_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("device,start,end\n0,0,10\n7,0,10\n")
    with pytest.raises(ConfigError, match=r"line 3: device 7 is outside \[0, 4\)"):
        parse_availability(f"trace:{trace}", devices=4, slot_seconds=60.0, seed=0)


def test_speeds_are_log_normal_around_the_median_and_fixed_by_the_seed() -> None:
    speeds = device_speeds(4000, median=2.0, sigma=1.0, seed=0)
    logs = np.log(speeds / 2.0)
    assert np.median(speeds) == pytest.approx(2.0, rel=0.08)
    assert logs.std() == pytest.approx(1.0, rel=0.05)
    assert (device_speeds(4000, median=2.0, sigma=1.0, seed=0) == speeds).all()
    assert (device_speeds(5, median=3.0, sigma=0.0, seed=9) == 3.0).all()
