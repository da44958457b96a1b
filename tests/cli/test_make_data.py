"""``fedge edge make-data --profile`` takes what ``release build --profile`` takes: a built-in
profile's name (an installed fedge has no ``clients/profiles/`` folder) or a profile file."""

import shutil
from pathlib import Path

import click
import typer.main
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.inference.profiles import DeviceDataSpec
from fedge.options import config_key, declared_options

runner = CliRunner()
PROFILES = Path(__file__).resolve().parents[2] / "fedge" / "inference" / "device_profiles"
CAMERA_TOML = PROFILES / "camera.toml"


def test_a_built_in_profile_name_writes_its_data(tmp_path: Path) -> None:
    out = tmp_path / "cam0"
    result = runner.invoke(app, ["edge", "make-data", "--profile", "camera", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # camera.toml's [device] table: mnist-5k as 28x28 PNG images, partition 0 of 3
    assert "wrote mnist-5k partition 0/3 as images" in result.output
    labels = sorted(p.name for p in (out / "images").iterdir())
    assert labels == [str(d) for d in range(10)]


def test_a_profile_file_works_and_flags_win_over_it(tmp_path: Path) -> None:
    own = tmp_path / "my-camera.toml"
    shutil.copy(CAMERA_TOML, own)
    out = tmp_path / "cam1"
    result = runner.invoke(
        app,
        ["edge", "make-data", "--profile", str(own), "--format", "npz", "--partition-id", "2",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote mnist-5k partition 2/3 as npz" in result.output
    assert (out / "data.npz").is_file()


def test_an_unknown_profile_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    out = tmp_path / "nowhere"
    for command in (
        ["edge", "make-data", "--profile", "toaster", "--out", str(out)],
        ["release", "build", "--profile", "toaster", "--checkpoint", "x.pt", "--out", str(out)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "--profile: 'toaster' is neither a built-in profile (camera, clinic" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_bad_flags_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "nowhere"
    for flags, message in (
        (
            ["--partition-id", "5", "--num-partitions", "3"],
            "partition-id: 5 must be < num-partitions (3)",
        ),
        (["--format", "bmp"], "format: 'bmp' is not one of: npz, csv, images"),
        (["--partition", "by:site"], "partition: 'by:site' is not a partition spec"),
        (
            ["--dataset", "breast-cancer", "--format", "images"],
            "breast-cancer is not an image dataset",
        ),
    ):
        result = runner.invoke(app, ["edge", "make-data", *flags, "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()


def test_its_flags_are_the_device_table_declaration() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    edge = group.commands["edge"]
    assert isinstance(edge, click.Group)
    flags = {opt for param in edge.commands["make-data"].params for opt in param.opts}
    declared = {"--" + config_key(f.name) for f, _ in declared_options(DeviceDataSpec)}
    assert flags - {"--out", "--profile"} == declared
