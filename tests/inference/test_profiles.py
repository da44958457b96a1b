"""Device profiles: the shipped ones load, every bad field is named, the registry lists names."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedge.errors import ConfigError
from fedge.inference import profiles
from fedge.inference.profiles import (
    Budget,
    DeviceProfile,
    get_profile,
    list_profiles,
    load_profile,
    register_profile,
    resolve_profile,
)

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[profile]
tier = "device"
engines = ["onnxruntime"]

[budget]
max-model-bytes = 1000
p99-ms = 2.5
peak-memory-mb = 16
min-accuracy = 0.8

[device]
dataset = "digits"
format = "npz"
partition-id = 1
num-partitions = 4
partition = "dirichlet:0.5"
seed = 3
"""


def test_builtin_profiles_load_with_their_budgets() -> None:
    assert {"camera", "clinic", "gateway"} <= set(list_profiles())
    camera = get_profile("camera")
    assert camera.tier == "device" and camera.engines[0] == "litert"
    assert camera.budget.max_model_bytes <= 16 * 1024 and camera.budget.p99_ms <= 1.0
    assert camera.data.dataset == "mnist-5k" and camera.data.format == "images"
    gateway = get_profile("gateway")
    assert gateway.tier == "gateway" and set(gateway.engines) == {"openvino", "onnxruntime"}
    assert gateway.data.dataset is None and gateway.serves("breast-cancer")
    assert get_profile("clinic").data.dataset == "breast-cancer"


def test_the_clients_profiles_path_still_reads_the_same_files() -> None:
    link = REPO / "clients" / "profiles"
    assert link.is_symlink()
    for name in ("camera", "clinic"):
        assert load_profile(link / f"{name}.toml") == get_profile(name)


def test_a_profile_file_loads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "sensor.toml"
    path.write_text(GOOD)
    profile = load_profile(path)
    assert profile.name == "sensor"
    assert profile.budget == Budget(1000, 2.5, 16.0, 0.8)
    assert profile.precisions == ("fp32", "int8")
    assert (profile.data.partition_id, profile.data.num_partitions, profile.data.partition) == (
        1,
        4,
        "dirichlet:0.5",
    )
    assert resolve_profile(str(path)) == profile


def test_a_profile_written_with_the_old_runtimes_key_still_loads(tmp_path: Path) -> None:
    new = tmp_path / "new.toml"
    new.write_text(GOOD.replace('engines = ["onnxruntime"]', 'engines = ["litert", "onnxruntime"]'))
    old = tmp_path / "old.toml"
    old.write_text(
        GOOD.replace('engines = ["onnxruntime"]', 'runtimes = ["litert", "onnxruntime"]')
    )
    assert load_profile(old).engines == load_profile(new).engines == ("litert", "onnxruntime")
    old.write_text(GOOD.replace('engines = ["onnxruntime"]', 'runtimes = ["tensorrt"]'))
    with pytest.raises(
        ConfigError, match=r"\[profile\] runtimes: \['tensorrt'\] lists 'tensorrt', which must be"
    ):
        load_profile(old)
    both = tmp_path / "both.toml"
    both.write_text(GOOD.replace("engines =", 'runtimes = ["litert"]\nengines ='))
    with pytest.raises(ConfigError, match=r"\[profile\] runtimes: \['litert'\] is the old name"):
        load_profile(both)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('tier = "device"', 'tier = "phone"', "[profile] tier: 'phone' is not one of: gateway"),
        (
            '["onnxruntime"]',
            '["tensorrt"]',
            "[profile] engines: ['tensorrt'] lists 'tensorrt', which must be a non-empty list of",
        ),
        ('["onnxruntime"]', "[]", "[profile] engines: [] must be a non-empty list"),
        ('["onnxruntime"]', '["litert", "litert"]', "lists a name twice"),
        ("max-model-bytes = 1000", "max-model-bytes = 0", "max-model-bytes: 0 must be an integer"),
        ("max-model-bytes = 1000", 'max-model-bytes = "1k"', "max-model-bytes: '1k' must be"),
        ("p99-ms = 2.5", "p99-ms = -1", "[budget] p99-ms: -1 must be positive"),
        ("p99-ms = 2.5", "p99-ms = nan", "[budget] p99-ms: nan must be positive"),
        ("peak-memory-mb = 16", "", "[budget] peak-memory-mb: None is missing"),
        ("min-accuracy = 0.8", "min-accuracy = 1.5", "min-accuracy: 1.5 is outside [0, 1]"),
        ('format = "npz"', 'format = "parquet"', "[device] format: 'parquet' is not one of"),
        ("partition-id = 1", "partition-id = 4", "partition-id: 4 must be < num-partitions (4)"),
        ('"dirichlet:0.5"', '"zipf"', "[device] partition: 'zipf' is not a partition spec"),
        ("seed = 3", "seed = -1", "[device] seed: -1 must be an integer >= 0"),
        ("seed = 3", "sede = 3", "[device] sede: 3 is not a device option; valid: dataset"),
        ("[budget]", "[budgets]", "budgets: {"),
    ],
)
def test_a_bad_field_names_file_field_and_value(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text
    assert "\n" not in text


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_profile(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profile\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_profile(bad)
    bad.write_text(GOOD.replace("[budget]", "[extra]").replace("max-model-bytes", "x"))
    with pytest.raises(ConfigError, match="extra"):
        load_profile(bad)


def test_registry_refuses_unknown_and_duplicate_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown device profile 'toaster'; valid choices: camera"
    ):
        get_profile("toaster")
    with pytest.raises(ValueError, match="already registered"):
        register_profile(get_profile("camera"))
    extra = DeviceProfile(
        name="test-watch", tier="device", engines=("litert",), budget=Budget(4096, 0.5, 8, 0.5)
    )
    register_profile(extra)
    try:
        assert "test-watch" in list_profiles() and get_profile("test-watch") is extra
    finally:  # other tests build for every registered profile
        del profiles._PROFILES["test-watch"]


def test_budget_misses_name_each_limit() -> None:
    budget = Budget(max_model_bytes=16384, p99_ms=1.0, peak_memory_mb=32, min_accuracy=0.95)
    assert budget.misses(size_bytes=16384, p99_ms=1.0, peak_memory_mb=32, accuracy=0.95) == []
    misses = budget.misses(size_bytes=20480, p99_ms=1.5, peak_memory_mb=40, accuracy=0.9)
    assert [m.field for m in misses] == [
        "max-model-bytes",
        "p99-ms",
        "peak-memory-mb",
        "min-accuracy",
    ]
    assert str(misses[0]) == "size by 4.0 KiB (20.0 KiB > 16.0 KiB)"
    assert str(misses[3]) == "accuracy by 5.00 points (90.00% < 95.00%)"
    assert misses[0].relative == pytest.approx(0.25)


def test_the_module_imports_without_numpy_or_torch() -> None:
    code = (
        "import sys, fedge.inference.profiles as p; p.get_profile('camera'); "
        "print(sorted(m for m in ('numpy', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
