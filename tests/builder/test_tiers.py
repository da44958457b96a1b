"""Per-profile release builds: the right artifact per profile, checked in its real engine;
every bad input is one error before anything is written."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.builder import (
    BuildStep,
    CandidateRow,
    DistillSettings,
    ProfileRelease,
    TierSettings,
    build_profile_release,
    read_profile_artifacts,
)
from fedge.builder.targets import get_target
from fedge.builder.tiers import MIN_AGREEMENT, choose_candidate
from fedge.data import Dataset
from fedge.data.device import DeviceDataSpec
from fedge.errors import BudgetError, ConfigError, ReleaseError, TargetUnavailableError
from fedge.inference.profiles import Budget, DeviceProfile
from fedge.inference.runners import predict
from fedge.release.builds import profile_figures

#: Enough for student-tiny to learn 8x8 digits (about 0.94), in a fraction of a second.
FAST_DISTILL = DistillSettings(epochs=20, copies=3, lr=0.01)
#: Tiny candidates: the teacher, one pruned teacher and one student; few timed runs.
FAST = TierSettings(
    students=("student-tiny",),
    prune_ratios=(0.3,),
    distill=FAST_DISTILL,
    finetune=FAST_DISTILL,
    latency_runs=20,
    warmup=2,
)
#: Only one student, no teacher, no pruning: the least work a build can do.
MINIMAL = TierSettings(
    students=("student-tiny",),
    prune_ratios=(),
    include_teacher=False,
    distill=FAST_DISTILL,
    finetune=FAST_DISTILL,
    latency_runs=10,
    warmup=1,
)


def profile(
    name: str,
    engines: tuple[str, ...],
    max_bytes: int,
    *,
    p99_ms: float = 50.0,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    dataset: str | None = "digits",
) -> DeviceProfile:
    """A digits device profile with a generous budget except for what the test sets."""
    return DeviceProfile(
        name=name,
        tier="device",
        engines=engines,
        budget=Budget(max_bytes, p99_ms, 2048.0, 0.5),
        precisions=precisions,
        data=DeviceDataSpec(dataset=dataset),
    )


WATCH = profile("t-watch", ("litert", "onnxruntime"), 8 * 1024)
GATEWAY = profile("t-gateway", ("openvino", "onnxruntime"), 64 << 20, dataset=None)


@pytest.fixture(scope="module")
def steps() -> list[BuildStep]:
    """The steps the module's build tells its progress callback, in order."""
    return []


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, teacher_path: Path, steps: list[BuildStep]
) -> ProfileRelease:
    """One build for a small watch and a gateway from the digits teacher."""
    out = tmp_path_factory.mktemp("tiers") / "release"
    return build_profile_release(
        checkpoint=teacher_path,
        out_dir=out,
        profiles=[WATCH, GATEWAY],
        settings=FAST,
        progress=steps.append,
    )


def _fits(row: CandidateRow, prof: DeviceProfile) -> bool:
    return (
        row.status == "measured"
        and row.engine in prof.engines
        and row.size_bytes <= prof.budget.max_model_bytes
        and float(row.latency_p99_ms or 0) <= prof.budget.p99_ms
        and float(row.peak_memory_mb or 0) <= prof.budget.peak_memory_mb
        and float(row.agreement or 0) >= MIN_AGREEMENT
    )


def test_each_profile_gets_the_most_accurate_artifact_that_fits(built: ProfileRelease) -> None:
    for prof in (WATCH, GATEWAY):
        chosen = built.chosen_row(prof.name)
        assert _fits(chosen, prof)
        best = max(float(r.accuracy or 0) for r in built.candidates if _fits(r, prof))
        assert chosen.accuracy == best
    watch = built.chosen_row("t-watch")
    assert watch.size_bytes <= 8 * 1024 and watch.engine in ("litert", "onnxruntime")
    # The teacher's int8 weights alone exceed the watch's 8 KiB: never converted for LiteRT.
    skipped = built.candidate("teacher:litert:int8")
    assert skipped.status == "skipped" and skipped.size_bytes == skipped.parameters
    assert built.candidate("student-tiny:openvino:int8").status == "measured"
    sources = {r.source for r in built.candidates}
    assert sources == {"teacher", "pruned", "distilled"}


def test_the_build_tells_each_step_with_n_of_m(
    built: ProfileRelease, steps: list[BuildStep]
) -> None:
    models = [(s.stage, s.detail, s.index, s.count) for s in steps if s.phase == "model"]
    assert models == [("prune", "cnn-small at ratio 0.3", 1, 2), ("distil", "student-tiny", 2, 2)]
    assert [s.phase for s in steps[:2]] == ["model", "model"]  # models first, then artifacts
    attempted = [r for r in built.candidates if r.status != "skipped"]
    exports = [s for s in steps if s.stage == "export"]
    assert [(s.index, s.count) for s in exports] == [
        (i, len(attempted)) for i in range(1, 1 + len(attempted))
    ]
    assert [s.detail for s in exports] == [r.label for r in attempted]
    measures = {s.detail: s.index for s in steps if s.stage == "measure"}
    for export in exports:
        if attempted[export.index - 1].status == "measured":
            assert measures[export.detail] == export.index
    assert str(exports[0]) == f"artifact 1/{len(attempted)}: export {attempted[0].label}"
    assert len(steps) == len(models) + len(exports) + len(measures)


def test_the_release_holds_one_checked_artifact_per_profile(built: ProfileRelease) -> None:
    out = built.out_dir
    assert sorted(p.name for p in (out / "profiles").iterdir()) == ["t-gateway", "t-watch"]
    assert {p.name for p in out.iterdir()} == {"profiles", "report.json", "report.md", "report.png"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    artifacts = {a.profile: a for a in read_profile_artifacts(out)}
    for name, artifact in artifacts.items():
        row = built.chosen_row(name)
        assert artifact.path.name == f"model{get_target(row.engine).extension}"
        assert artifact.engine == row.engine and artifact.precision == row.precision
        assert artifact.length == artifact.path.stat().st_size == row.size_bytes
        assert artifact.sha256 == row.sha256
        fields = profile_figures(artifact.document)  # what the signed manifest carries
        assert fields["runtime"] == row.engine and fields["precision"] == row.precision
        assert fields["built.latency_p99_ms"] == row.latency_p99_ms
        assert fields["built.accuracy"] == row.accuracy
        assert artifact.document["profile"]["budget"]["max-model-bytes"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "fedge-tier-report"
    assert {c["id"] for c in report["candidates"]} == {r.id for r in built.candidates}
    assert report["profiles"]["t-watch"]["chosen"] == built.chosen["t-watch"]
    pruned = report["models"]["cnn-small-pruned-0.3"]
    assert pruned["source"] == "pruned" and pruned["ratio"] == 0.3
    assert pruned["parameters"] < report["models"]["teacher"]["parameters"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "## t-watch" in markdown and "## t-gateway" in markdown and "**chosen**" in markdown


def test_each_shipped_artifact_agrees_with_its_torch_model(
    built: ProfileRelease, digits: Dataset
) -> None:
    for artifact in read_profile_artifacts(built.out_dir):
        row = built.chosen_row(artifact.profile)
        runner = get_target(artifact.engine).load(artifact.path, threads=1)
        predictions = predict(runner, digits.x_test).argmax(1)
        with torch.no_grad():
            model = built.models[row.model].eval()
            reference = model(torch.from_numpy(digits.x_test)).argmax(1).numpy()
        assert float((predictions == reference).mean()) >= MIN_AGREEMENT
        assert float((predictions == digits.y_test).mean()) == artifact.figures["accuracy"]


def test_a_tampered_artifact_is_refused_when_read(built: ProfileRelease, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built.out_dir, copy)
    model = next((copy / "profiles" / "t-watch").glob("model*"))
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=r"is not the artifact .* describes"):
        read_profile_artifacts(copy)
    with pytest.raises(ReleaseError, match="is not a per-profile release"):
        read_profile_artifacts(tmp_path)


def test_an_artifact_json_missing_a_field_is_refused_in_one_line(
    built: ProfileRelease, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built.out_dir, copy)
    meta = copy / "profiles" / "t-watch" / "artifact.json"
    document = json.loads(meta.read_text())
    del document["runtime"]
    meta.write_text(json.dumps(document))
    with pytest.raises(
        ReleaseError,
        match=r"t-watch/artifact.json is not a fedge profile "
        r"artifact: no 'runtime'$",
    ):
        read_profile_artifacts(copy)


def _existing_release(tmp_path: Path) -> Path:
    out = tmp_path / "rel"
    out.mkdir()
    (out / "shipped.txt").write_text("the release already shipped")
    return out


def _assert_untouched(tmp_path: Path, out: Path) -> None:
    assert [p.name for p in tmp_path.iterdir()] == ["rel"]
    assert [p.name for p in out.iterdir()] == ["shipped.txt"]


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (
            profile("t-speck", ("onnxruntime",), 512, precisions=("int8",)),
            r"profile 't-speck': no candidate fits its budget \(<= 0.5 KiB, .*closest: "
            r"student-tiny int8 on onnxruntime misses size by 1.4 KiB \(1.9 KiB > 0.5 KiB\)",
        ),
        (
            profile("t-instant", ("onnxruntime",), 1 << 20, p99_ms=1e-6, precisions=("int8",)),
            r"closest: student-tiny int8 on onnxruntime misses p99 by [0-9.]+ ms",
        ),
    ],
)
def test_an_impossible_budget_names_the_closest_candidate_and_writes_nothing(
    tmp_path: Path, teacher_path: Path, budget: DeviceProfile, message: str
) -> None:
    out = _existing_release(tmp_path)
    with pytest.raises(BudgetError, match=message) as info:
        build_profile_release(
            checkpoint=teacher_path, out_dir=out, profiles=[budget], settings=MINIMAL
        )
    assert "\n" not in str(info.value)
    _assert_untouched(tmp_path, out)


def test_bad_inputs_fail_before_any_training(tmp_path: Path, teacher_path: Path) -> None:
    out = _existing_release(tmp_path)
    stages: list[str] = []
    cases: list[tuple[list[DeviceProfile], TierSettings, type[Exception], str]] = [
        (
            [profile("t-x", ("test-absent",), 1 << 20)],
            MINIMAL,
            TargetUnavailableError,
            "engine 'test-absent' needs the Python package(s) fedge_test_no_such_engine, "
            "which are not installed: pip install 'fedge[absent]'",
        ),
        (
            [profile("t-cam", ("onnxruntime",), 1 << 20, dataset="mnist-5k")],
            MINIMAL,
            ConfigError,
            "--profile: 't-cam' is for mnist-5k models; the checkpoint's cnn-small is for digits",
        ),
        ([], MINIMAL, ConfigError, "--profile: [] is empty"),
        ([WATCH, WATCH], MINIMAL, ConfigError, "--profile: 't-watch' is given twice"),
        ([WATCH], TierSettings(students=("vit",)), ConfigError, "--student: 'vit' is not one"),
    ]
    for profiles, settings, kind, message in cases:
        with pytest.raises(kind) as info:
            build_profile_release(
                checkpoint=teacher_path,
                out_dir=out,
                profiles=profiles,
                settings=settings,
                progress=lambda step: stages.append(step.stage),
            )
        assert message in str(info.value)
        assert "\n" not in str(info.value)
    assert stages == []  # nothing was distilled, pruned or exported
    _assert_untouched(tmp_path, out)
    with pytest.raises(ValueError, match=r"pruning ratio 1\.0 must be in"):
        TierSettings(prune_ratios=(1.0,))


def _row(
    model: str, engine: str, accuracy: float, size: int, agreement: float = 1.0
) -> CandidateRow:
    return CandidateRow(
        id=f"{model}:{engine}:int8",
        model=model,
        architecture=model,
        source="distilled",
        engine=engine,
        precision="int8",
        parameters=size,
        status="measured",
        size_bytes=size,
        accuracy=accuracy,
        agreement=agreement,
        latency_p50_ms=0.1,
        latency_p99_ms=0.2,
        peak_memory_mb=10.0,
    )


def test_choice_rules_accuracy_then_engine_preference_then_size() -> None:
    prof = profile("t-rules", ("litert", "onnxruntime"), 10_000)
    rows = [
        _row("a", "onnxruntime", 0.95, 5_000),
        _row("b", "litert", 0.95, 6_000),
        _row("c", "litert", 0.95, 4_000),
        _row("d", "onnxruntime", 0.97, 20_000),  # more accurate, too big
        _row("e", "onnxruntime", 0.99, 3_000, agreement=0.99),  # disagrees with torch
    ]
    assert choose_candidate(prof, rows).id == "c:litert:int8"
    assert choose_candidate(prof, [*rows, _row("f", "onnxruntime", 0.96, 9_000)]).model == "f"
    assert choose_candidate(prof, rows, min_agreement=0.98).model == "e"
    with pytest.raises(BudgetError, match="closest: e int8 on onnxruntime misses agreement"):
        choose_candidate(prof, [rows[3], rows[4]])
    other = profile("t-other", ("openvino",), 10_000)
    with pytest.raises(BudgetError, match=r"every candidate failed \(no candidate was built\)"):
        choose_candidate(other, rows)


def test_a_profile_release_round_trips_its_numbers(built: ProfileRelease) -> None:
    data = built.to_dict()
    assert data["teacher"]["accuracy"] == pytest.approx(built.teacher["accuracy"])
    assert all(np.isfinite(c["size_bytes"]) for c in data["candidates"])
    assert "t-watch:" in built.summary() and "t-gateway:" in built.summary()
