"""Rollout commands of ``fedge release``: publish, promote, rollback, pause, resume, abort, ls,
status, key.

Every one goes through the coordinator's control service with the operator credential
(``--coordinator``, ``--operator``, as for ``fedge run``), so it works from any host and any
directory; the coordinator owns its release store and its signing key. A local build is
uploaded in chunks; ``--run RUN`` publishes the release a finished coordinator run built.
``publish --stages 10,50,100`` starts a health-gated rollout the coordinator widens on its own
and halts (rolling the fleet back) when too many devices fail it; pause, resume and abort steer
it.
:func:`register` adds the commands to the ``release`` Typer group.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from fedge.builder.artifact import ProfileArtifact
from fedge.cli._control import Control, operator_command
from fedge.cli.common import JsonOption, command_group, console, count, fail
from fedge.errors import FedgeError
from fedge.release.builds import resolve_build, resolve_profile_build
from fedge.release.rollout import RolloutPolicy, parse_stages
from fedge.v1 import control_pb2 as pb
from fedge.v1 import control_pb2_grpc

__all__ = ["app", "register", "upload_and_publish"]

UPLOAD_CHUNK = 512 * 1024

VersionArg = Annotated[int | None, typer.Argument(help="Release version (default: the newest).")]


def _upload(stub: control_pb2_grpc.ControlServiceStub, path: Path) -> str:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()

    def parts() -> Iterator[pb.UploadArtifactRequest]:
        yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(length=len(data), sha256=sha))
        for start in range(0, len(data), UPLOAD_CHUNK):
            chunk = pb.UploadChunk(data=data[start : start + UPLOAD_CHUNK])
            yield pb.UploadArtifactRequest(chunk=chunk)

    return str(stub.UploadArtifact(parts(), timeout=300).sha256)


def upload_and_publish(
    stub: control_pb2_grpc.ControlServiceStub,
    model: Path,
    *,
    percent: int,
    name: str = "",
    profile: str = "",
    labels: tuple[str, ...] = (),
    policy: pb.RolloutPolicy | None = None,
) -> pb.ReleaseSummary:
    """Upload a local build (``model.onnx`` or its directory) and publish it."""
    onnx_path, report = resolve_build(model)
    sha = _upload(stub, onnx_path)
    request = pb.PublishReleaseRequest(
        sha256=sha,
        name=name or str(report.get("dataset") or onnx_path.parent.name or "model"),
        profile=profile,
        percent=percent,
        labels=list(labels),
        report_json=json.dumps(report),
        policy=policy,
    )
    return stub.PublishRelease(request, timeout=60).release


def upload_profile_build(
    stub: control_pb2_grpc.ControlServiceStub,
    artifacts: list[ProfileArtifact],
    *,
    percent: int,
    name: str = "",
    policy: pb.RolloutPolicy | None = None,
) -> list[pb.ReleaseSummary]:
    """Upload and publish each profile's artifact of a per-profile build: one release each,
    offered only to that profile's devices."""
    published = []
    for artifact in artifacts:
        sha = _upload(stub, artifact.path)
        request = pb.PublishReleaseRequest(
            sha256=sha,
            name=name or str(artifact.document.get("dataset") or "model"),
            profile=artifact.profile,
            percent=percent,
            report_json=json.dumps(artifact.document),
            policy=policy,
        )
        published.append(stub.PublishRelease(request, timeout=60).release)
    return published


def _check_percent(percent: int) -> None:
    if not 0 <= percent <= 100:
        fail(f"--percent: {percent} must be between 0 and 100")


def _print_release(r: pb.ReleaseSummary, verb: str) -> None:
    console.print(
        f"{verb} release {r.version} ({r.name}, {r.length} bytes, sha256 {r.sha256[:12]}) "
        f"to {r.percent}% of {r.profile!r} devices; expires {r.expires}",
        soft_wrap=True,
        highlight=False,
    )


@operator_command
def publish_command(
    model: Annotated[
        Path | None, typer.Argument(help="model.onnx, or the directory `build` wrote.")
    ] = None,
    run: Annotated[
        int | None, typer.Option("--run", help="Publish the release this coordinator run built.")
    ] = None,
    percent: Annotated[
        int | None, typer.Option("--percent", help="Share of devices (0-100, default 10).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Release name.")] = "",
    profile: Annotated[str, typer.Option("--profile", help="Device profile.")] = "cpu-small",
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated class names.")] = "",
    stages: Annotated[
        str | None,
        typer.Option(
            "--stages",
            help="A health-gated rollout: percentages the coordinator widens to on its own, "
            "e.g. 10,50,100.",
        ),
    ] = None,
    max_failure_rate: Annotated[
        float,
        typer.Option(
            "--max-failure-rate",
            help="With --stages: halt and roll back when this share of devices fails (0-1).",
        ),
    ] = 0.2,
    min_devices: Annotated[
        int,
        typer.Option("--min-devices", help="With --stages: outcomes needed before judging."),
    ] = 3,
    stage_wait: Annotated[
        float,
        typer.Option(
            "--stage-wait",
            help="With --stages: seconds a stage lasts at least (and until its devices report).",
        ),
    ] = 300.0,
    control: Control = Control(),
) -> None:
    """Sign MODEL (or run RUN's release) as the next release, rolled out to PERCENT, or stage
    by stage (--stages) with a health gate.

    A per-profile build (`release build --profile ...`) becomes one release per profile, each
    offered only to its profile's devices.
    """
    if (model is None) == (run is None):
        fail("give MODEL (a local build) or --run RUN (a coordinator run's release), not both")
    policy = None
    if stages is not None:
        if percent is not None:
            fail("--percent: give either --percent or --stages (its first stage is the percent)")
        try:
            plan = RolloutPolicy(
                stages=parse_stages(stages),
                max_failure_rate=max_failure_rate,
                min_devices=min_devices,
                stage_wait=stage_wait,
            )
        except FedgeError as err:
            fail(str(err))
        policy = pb.RolloutPolicy(
            stages=list(plan.stages),
            max_failure_rate=plan.max_failure_rate,
            min_devices=plan.min_devices,
            stage_wait_seconds=plan.stage_wait,
        )
        percent = plan.stages[0]
    percent = 10 if percent is None else percent
    _check_percent(percent)
    names = tuple(x for x in labels.split(",") if x)
    per_profile = _profile_artifacts(model)
    if per_profile:
        releases = control.call(
            lambda stub: upload_profile_build(
                stub, per_profile, percent=percent, name=name, policy=policy
            ),
        )
        for published in releases:
            _print_release(published, f"published ({published.runtime})")
        return
    if model is not None:
        release = control.call(
            lambda stub: upload_and_publish(
                stub,
                model,
                percent=percent,
                name=name,
                profile=profile,
                labels=names,
                policy=policy,
            ),
        )
    else:
        request = pb.PublishReleaseRequest(
            run_id=int(run or 0),
            name=name,
            profile=profile,
            percent=percent,
            labels=list(names),
            policy=policy,
        )
        release = control.call(lambda stub: stub.PublishRelease(request, timeout=60)).release
    _print_release(release, "published")
    if release.HasField("rollout"):
        console.print(_rollout_line(release.rollout), soft_wrap=True, highlight=False)


def _rollout_line(ro: pb.RolloutStatus) -> str:
    stages = " -> ".join(f"{p}%" for p in ro.stages)
    rate = f"{ro.failures / ro.outcomes:.2f}" if ro.outcomes else "-"
    line = (
        f"gated rollout {ro.state}: stage {ro.stage + 1}/{len(ro.stages)} ({stages}), failure "
        f"rate {rate} of {ro.outcomes} outcomes (halts above {ro.max_failure_rate:.2f} once "
        f"{ro.min_devices} devices have one; each stage at least {ro.stage_wait_seconds:g}s)"
    )
    return line + (f"; {ro.reason}" if ro.reason else "")


def _steer(verb: str, method: str, request_type: Any) -> Any:
    @operator_command
    def command(
        version: VersionArg = None,
        control: Control = Control(),
    ) -> None:
        request = request_type(version=version or 0)
        response = control.call(lambda stub: getattr(stub, method)(request, timeout=30))
        console.print(_rollout_line(response.release.rollout), soft_wrap=True, highlight=False)

    command.__doc__ = {
        "pause": "Hold the gated rollout of VERSION (default: the newest) at its stage.",
        "resume": "Go on with the paused rollout of VERSION (default: the newest).",
        "abort": "Stop the rollout of VERSION (default: the newest) and roll the fleet back.",
    }[verb]
    return command


def _profile_artifacts(model: Path | None) -> list[ProfileArtifact]:
    if model is None or not model.is_dir():
        return []
    try:
        return resolve_profile_build(model)
    except FedgeError as err:
        fail(str(err))


@operator_command
def promote_command(
    version: VersionArg = None,
    percent: Annotated[int, typer.Option("--percent", help="New share of devices.")] = 100,
    control: Control = Control(),
) -> None:
    """Widen the rollout of VERSION (default: the newest release) to PERCENT of the devices."""
    _check_percent(percent)
    request = pb.PromoteReleaseRequest(version=version or 0, percent=percent)
    release = control.call(lambda stub: stub.PromoteRelease(request, timeout=30)).release
    console.print(f"release {release.version} now targets {release.percent}% of devices")


@operator_command
def rollback_command(
    version: Annotated[
        int | None, typer.Argument(help="Release to withdraw (default: the newest).")
    ] = None,
    control: Control = Control(),
) -> None:
    """Withdraw a release; re-release the last good model as a NEW, higher version."""
    request = pb.RollbackReleaseRequest(version=version or 0)
    r = control.call(lambda stub: stub.RollbackRelease(request, timeout=30)).release
    console.print(
        f"rolled back release {r.rollback_of}: release {r.version} re-ships sha256 "
        f"{r.sha256[:12]} ({r.name}) to 100% of devices",
        soft_wrap=True,
        highlight=False,
    )


def _states(r: pb.ReleaseSummary) -> str:
    order = (
        "offered",
        "downloading",
        "installed",
        "refused",
        "rolled_back",
        "failed",
        "running",
        "downloads",
    )
    return ", ".join(f"{k} {r.states.get(k, 0)}" for k in order)


@operator_command
def ls_command(
    as_json: JsonOption = False,
    control: Control = Control(),
) -> None:
    """List the coordinator's releases, newest first."""
    rows = control.call(
        lambda stub: stub.ListReleases(pb.ListReleasesRequest(), timeout=30)
    ).releases
    if as_json:
        console.print_json(json.dumps([_release_json(r) for r in rows]))
        return
    if not rows:
        console.print("no releases yet")
    for r in rows:  # plain lines: nothing truncated on a narrow terminal
        status = "withdrawn" if r.withdrawn else "live"
        if r.rollback_of:
            status += f" (rollback of {r.rollback_of})"
        if r.HasField("rollout"):
            status += f", gated rollout {r.rollout.state}"
        measured = (
            f", p99 <= {r.measured_p99_ms:.3f} ms on {count(r.measured_devices, 'device')}"
            if r.measured_devices
            else ""
        )
        console.print(
            f"release {r.version}: {r.name} [{r.profile}, {r.runtime}] {r.percent}% {status}, "
            f"installed on {r.states.get('installed', 0)}{measured}, sha256 {r.sha256[:12]}, "
            f"created {r.created}, expires {r.expires}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def _release_json(r: pb.ReleaseSummary) -> dict[str, Any]:
    return {
        "version": r.version,
        "name": r.name,
        "sha256": r.sha256,
        "length": r.length,
        "profile": r.profile,
        "percent": r.percent,
        "withdrawn": r.withdrawn,
        "rollback_of": r.rollback_of,
        "created": r.created,
        "expires": r.expires,
        "states": dict(r.states),
        "runtime": r.runtime,
        "measured_p99_ms": r.measured_p99_ms,
        "measured_devices": r.measured_devices,
    }


@operator_command
def status_command(
    version: VersionArg = None,
    devices: Annotated[bool, typer.Option("--devices", help="One line per device.")] = False,
    control: Control = Control(),
) -> None:
    """Devices per install state for VERSION, default the newest (each device's, with --devices)."""
    response = control.call(
        lambda stub: stub.GetReleaseStatus(
            pb.GetReleaseStatusRequest(version=version or 0), timeout=30
        ),
    )
    r = response.release
    flag = " withdrawn" if r.withdrawn else ""
    console.print(f"release {r.version} ({r.percent}%{flag}): {_states(r)}", soft_wrap=True)
    if r.HasField("rollout"):
        console.print(_rollout_line(r.rollout), soft_wrap=True, highlight=False, markup=False)
    if devices:
        for d in response.devices:
            who = f"{d.device_id} ({d.name})" if d.name else d.device_id
            measured = (
                f" [measured p50 {d.latency_p50_ms:.3f} ms, p99 {d.latency_p99_ms:.3f} ms, "
                f"{d.peak_memory_mb:.1f} MB]"
                if d.latency_p99_ms > 0
                else ""
            )
            console.print(
                f"  {who}: {d.state} {d.reason}".rstrip() + measured, soft_wrap=True, markup=False
            )
    if response.telemetry:
        requests = sum(t.requests for t in response.telemetry)
        errors = sum(t.errors for t in response.telemetry)
        p99 = max(t.latency_p99_ms for t in response.telemetry)
        console.print(
            f"inference on {count(len(response.telemetry), 'device')}: "
            f"{count(requests, 'request')}, {count(errors, 'error')}, worst p99 {p99:.2f} ms",
            soft_wrap=True,
        )


@operator_command
def key_command(
    control: Control = Control(),
) -> None:
    """Print the release public key (PEM) that devices pin at enrolment."""
    response = control.call(lambda stub: stub.GetReleaseKey(pb.GetReleaseKeyRequest(), timeout=30))
    typer.echo(bytes(response.public_key_pem).decode(), nl=False)


def register(group: typer.Typer) -> None:
    """Add the rollout commands to the ``release`` group."""
    group.command("publish")(publish_command)
    group.command("promote")(promote_command)
    group.command("rollback")(rollback_command)
    group.command("pause")(_steer("pause", "PauseRollout", pb.PauseRolloutRequest))
    group.command("resume")(_steer("resume", "ResumeRollout", pb.ResumeRolloutRequest))
    group.command("abort")(_steer("abort", "AbortRollout", pb.AbortRolloutRequest))
    group.command("ls")(ls_command)
    group.command("status")(status_command)
    group.command("key")(key_command)


# Stand-alone group (tests; and the `release` group until `fedge/cli/release.py` registers us).
app = command_group("Signed model releases and staged rollout.")
register(app)
