"""``fedge release publish/promote/rollback/ls/status/key`` through a running coordinator.

Every command goes through the control service with the operator credential, from a directory
that is not the coordinator's: nothing is read from or written to a state directory here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fedge.cli.release_rollout import app
from fedge.release.testing import make_linear_model

from ..conftest import Fleet

runner = CliRunner()


@pytest.fixture
def op(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operator options for ``fleet``, run from an empty directory of their own."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return fleet.operator_args


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_publish_promote_rollback_status(fleet: Fleet, op: list[str], tmp_path: Path) -> None:
    build = tmp_path / "build"
    model = make_linear_model(build / "model.onnx", seed=1)
    from fedge.files import file_sha256

    (build / "report.json").write_text(
        json.dumps(
            {
                "dataset": "digits",
                "num_classes": 4,
                "student_int8": {"sha256": file_sha256(model), "accuracy": 0.93, "size_bytes": 9},
            }
        )
    )
    code, out = _run("publish", str(build), "--percent", "34", *op)
    assert code == 0, out
    assert "published release 1 (digits" in out and "34%" in out
    make_linear_model(tmp_path / "m2.onnx", seed=2)
    code, out = _run("publish", str(tmp_path / "m2.onnx"), "--percent", "34", *op)
    assert code == 0 and "release 2" in out
    assert _run("promote", "2", "--percent", "100", *op)[0] == 0
    store = fleet.coordinator.releases
    manifest = store.signed(1).manifest
    assert manifest.report == {
        "dataset": "digits",
        "num_classes": 4,
        "student_int8.accuracy": 0.93,
        "student_int8.size_bytes": 9,
    }
    assert manifest.labels == ("0", "1", "2", "3")
    store.manifest_for(device_id="dev-1", profile="cpu-small")
    store.record_status(device_id="dev-1", version=2, state="rolled_back", reason="nan output")
    code, out = _run("status", "2", "--devices", *op)
    assert code == 0
    assert "rolled_back 1" in out and "dev-1: rolled_back nan output" in out
    code, out = _run("rollback", *op)
    assert code == 0 and "rolled back release 2: release 3" in out
    code, out = _run("status", *op)  # no VERSION: the newest, the rollback's
    assert code == 0 and out.startswith("release 3 (100%): "), out
    code, out = _run("ls", *op)
    assert code == 0
    assert "withdrawn" in out and "rollback of 2" in out
    code, out = _run("ls", "--json", *op)
    assert [r["version"] for r in json.loads(out)] == [3, 2, 1]
    code, out = _run("key", *op)
    assert code == 0 and out.startswith("-----BEGIN PUBLIC KEY-----")
    assert fleet.coordinator.release_key_pem.decode() == out
    assert list(Path.cwd().iterdir()) == []  # nothing made where the operator stands


def test_every_command_needs_the_operator_credential(fleet: Fleet, op: list[str]) -> None:
    for args in (("ls",), ("status", "1"), ("key",), ("rollback",)):
        code, out = _run(*args, "--coordinator", fleet.address)
        assert code == 2, out
        assert "--operator" in out and "lacks" in out and "Traceback" not in out
    assert list(Path.cwd().iterdir()) == []  # no state directory, no key


def test_a_command_naming_no_release_on_an_empty_coordinator_says_so(op: list[str]) -> None:
    for verb in ("status", "promote", "pause", "resume", "abort"):
        code, out = _run(verb, *op)
        assert code == 2, (verb, out)
        assert "no releases yet" in out and "Traceback" not in out
        assert len(out.strip().splitlines()) == 1


def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    fleet: Fleet, op: list[str], tmp_path: Path
) -> None:
    model = make_linear_model(tmp_path / "m.onnx", seed=1)
    assert _run("publish", str(model), "--percent", "10", *op)[0] == 0
    mismatched = tmp_path / "build"
    make_linear_model(mismatched / "model.onnx", seed=5)
    (mismatched / "report.json").write_text(json.dumps({"student_int8": {"sha256": "0" * 64}}))
    cases = [
        (("publish", str(model), "--percent", "150"), "percent"),
        (("publish", str(tmp_path / "missing.onnx")), "does not exist"),
        (("publish", str(mismatched)), "sha256 differs"),
        (("publish",), "give MODEL"),
        (("publish", "--run", "7"), "no run 7"),
        (("promote", "9", "--percent", "50"), "no release with version 9"),
        (("status", "9"), "no release with version 9"),
        (("rollback",), "no earlier good release"),
    ]
    for args, message in cases:
        code, out = _run(*args, *op)
        assert code == 2, (args, out)
        assert message in out and "Traceback" not in out
    store = fleet.coordinator.releases
    assert [r.version for r in store.list_releases()] == [1]
    assert store.get(1).percent == 10 and not store.get(1).withdrawn


def test_register_adds_commands_to_a_group() -> None:
    from fedge.cli.release_rollout import register

    group = typer.Typer()
    register(group)
    names = {c.name for c in group.registered_commands}
    assert names == {
        "publish",
        "promote",
        "rollback",
        "pause",
        "resume",
        "abort",
        "ls",
        "status",
        "key",
    }
