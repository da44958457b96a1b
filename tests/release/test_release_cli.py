"""``fedge release publish/promote/rollback/ls/status/key`` on a coordinator state directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from fedge.cli.release_rollout import app
from fedge.release import open_release_store
from fedge.release.testing import make_linear_model

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_publish_promote_rollback_status(tmp_path: Path) -> None:
    state = str(tmp_path / "coord")
    build = tmp_path / "build"
    model = make_linear_model(build / "model.onnx", seed=1)
    from fedge.edge.slots import sha256_file

    (build / "report.json").write_text(
        json.dumps(
            {
                "dataset": "digits",
                "num_classes": 4,
                "student_int8": {"sha256": sha256_file(model), "accuracy": 0.93, "size_bytes": 9},
            }
        )
    )
    code, out = _run("publish", str(build), "--percent", "34", "--state", state)
    assert code == 0, out
    assert "published release 1 (digits" in out and "34%" in out
    make_linear_model(tmp_path / "m2.onnx", seed=2)
    code, out = _run("publish", str(tmp_path / "m2.onnx"), "--percent", "34", "--state", state)
    assert code == 0 and "release 2" in out
    assert _run("promote", "2", "--percent", "100", "--state", state)[0] == 0
    store = open_release_store(state_dir=Path(state))
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
    store.close()
    code, out = _run("status", "2", "--devices", "--state", state)
    assert code == 0
    assert "rolled_back 1" in out and "dev-1: rolled_back nan output" in out
    code, out = _run("rollback", "--state", state)
    assert code == 0 and "rolled back release 2: release 3" in out
    code, out = _run("ls", "--state", state)
    assert code == 0
    assert "withdrawn" in out and "rollback of 2" in out
    code, out = _run("key", "--state", state)
    assert code == 0 and out.startswith("-----BEGIN PUBLIC KEY-----")


def test_bad_input_is_one_line_exit_2_and_loses_nothing(tmp_path: Path) -> None:
    state = str(tmp_path / "coord")
    model = make_linear_model(tmp_path / "m.onnx", seed=1)
    assert _run("publish", str(model), "--percent", "10", "--state", state)[0] == 0
    mismatched = tmp_path / "build"
    make_linear_model(mismatched / "model.onnx", seed=5)
    (mismatched / "report.json").write_text(json.dumps({"student_int8": {"sha256": "0" * 64}}))
    cases = [
        (("publish", str(model), "--percent", "150"), "percent"),
        (("publish", str(tmp_path / "missing.onnx")), "does not exist"),
        (("publish", str(mismatched)), "sha256 differs"),
        (("promote", "9", "--percent", "50"), "no release with version 9"),
        (("status", "9"), "no release with version 9"),
        (("rollback",), "no earlier good release"),
    ]
    for args, message in cases:
        code, out = _run(*args, "--state", state)
        assert code == 2, (args, out)
        assert message in out and "Traceback" not in out
    store = open_release_store(state_dir=Path(state))
    assert [r.version for r in store.list_releases()] == [1]
    assert store.get(1).percent == 10 and not store.get(1).withdrawn
    store.close()


def test_register_adds_commands_to_a_group() -> None:
    from fedge.cli.release_rollout import register

    group = typer.Typer()
    register(group)
    names = {c.name for c in group.registered_commands}
    assert names == {"publish", "promote", "rollback", "ls", "status", "key"}
