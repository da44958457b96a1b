"""The control service (operator ↔ coordinator): one typed service layer, two front ends.

Every operator action (runs, fleet, releases) is a typed method of :class:`ControlService`. The
gRPC :class:`ControlServicer` is one short call into it per RPC (the interceptor authenticates
the operator credential and maps errors to status codes); the web console calls the same
methods directly. Nothing edits the coordinator's state from outside; the coordinator owns its
release store and its signing key.
"""

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import grpc

from fedge.coordinator.auth import Operator
from fedge.coordinator.gateways import Sites
from fedge.coordinator.metrics import device_state
from fedge.coordinator.plan import FleetView, resolve_plan
from fedge.coordinator.runs import RunManager
from fedge.coordinator.state import KIND_GATEWAY, DeviceRow, RoundRow, RunRow, State
from fedge.errors import ConfigError, NotFoundError, PayloadError, ReleaseError
from fedge.protocol.interceptor import caller
from fedge.protocol.manifest import SignedManifest, key_id, load_public_key
from fedge.protocol.serde import run_state_to_proto
from fedge.protocol.tasks import TaskHub
from fedge.protocol.tokens import make_token
from fedge.records import copy_fields
from fedge.release.drift import DeviceDrift
from fedge.release.gate import RolloutController
from fedge.release.publish import publish_artifact, publish_build
from fedge.release.rollout import RolloutPolicy
from fedge.release.rollout_table import FAILED_STATES, Rollout
from fedge.release.store import ReleaseInfo, ReleaseStore
from fedge.release.telemetry import DeviceTelemetry
from fedge.v1 import control_pb2 as pb

__all__ = [
    "ControlService",
    "ControlServicer",
    "async_status_to_proto",
    "device_to_proto",
    "run_to_proto",
]

Context: TypeAlias = grpc.ServicerContext

_SITE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def run_to_proto(run: RunRow, rounds: list[RoundRow]) -> pb.RunSummary:
    """A run's summary for the operator."""
    summary = pb.RunSummary(
        run_id=run.id,
        state=run_state_to_proto(run.state),
        config_json=run.config_json,
        rounds_total=run.rounds_total,
        rounds_done=len(rounds),
        error=run.error,
        created_unix=run.created,
    )
    if rounds:
        summary.accuracy = rounds[-1].accuracy
    if run.async_json:
        summary.async_status.CopyFrom(async_status_to_proto(json.loads(run.async_json)))
    return summary


def async_status_to_proto(status: dict[str, Any]) -> pb.AsyncStatus:
    """An async run's live status as the run manager recorded it."""
    counts = ("version", "in_buffer", "buffer", "training")
    updates = ("updates_received", "updates_applied", "updates_refused")
    return pb.AsyncStatus(
        **{k: int(status.get(k, 0)) for k in (*counts, *updates)},
        refused_by_reason={k: int(v) for k, v in status.get("refused_by_reason", {}).items()},
        last_refusals=[pb.Drop(**d) for d in status.get("last_refusals", [])],
        staleness_histogram={
            int(k): int(v) for k, v in status.get("staleness_histogram", {}).items()
        },
    )


def round_to_proto(row: RoundRow) -> pb.RoundSummary:
    """A round's summary: accuracy, devices asked, replied and dropped with reasons."""
    return copy_fields(
        pb.RoundSummary,
        row,
        drops=[pb.Drop(**d) for d in json.loads(row.drops_json or "[]")],
        sites=[_site_round(s) for s in json.loads(row.sites_json or "[]")],
        metrics=json.loads(row.metrics_json or "{}"),
        updates=[pb.AsyncUpdate(**u) for u in json.loads(row.async_json or "[]")],
    )


def _site_round(fact: dict[str, Any]) -> pb.SiteRound:
    site = pb.SiteRound(
        site=str(fact.get("site", "")),
        gateway_id=str(fact.get("gateway_id", "")),
        replies=int(fact.get("replies", 0)),
        asked=int(fact.get("asked", 0)),
        aggregated=int(fact.get("aggregated", 0)),
        examples=int(fact.get("examples", 0)),
    )
    loss = fact.get("train_loss")
    if isinstance(loss, int | float):
        site.train_loss = float(loss)
    return site


def device_to_proto(
    device: DeviceRow,
    *,
    online: bool,
    telemetry: DeviceTelemetry | None = None,
    drift: DeviceDrift | None = None,
) -> pb.Device:
    """A device's row for ``fedge fleet ls`` (with its latest inference telemetry, if any)."""
    proto = copy_fields(
        pb.Device,
        device,
        node_id=device.id,
        state=device_state(device.state, revoked=device.revoked, online=online),
        last_seen_unix=device.last_seen,
        data=_data_text(device),
    )
    if telemetry is not None:
        proto.inference_requests = telemetry.requests
        proto.inference_errors = telemetry.errors
        proto.latency_p50_ms = telemetry.latency_p50_ms
        proto.latency_p99_ms = telemetry.latency_p99_ms
    if drift is not None:
        proto.drifted = drift.drifted
        proto.drift_psi = max(drift.psi_classes, drift.psi_inputs)
    return proto


def _data_text(device: DeviceRow) -> str:
    if not device.data_shape:
        return ""
    name = f"{device.data_dataset} " if device.data_dataset else ""
    return (
        f"{name}{device.data_shape}, {device.data_classes} classes, {device.data_samples} samples"
    )


def rollout_to_proto(rollout: Rollout, states: dict[str, int]) -> pb.RolloutStatus:
    """Where a health-gated rollout stands."""
    failures = sum(states.get(s, 0) for s in FAILED_STATES)
    return pb.RolloutStatus(
        state=rollout.state,
        stages=list(rollout.stages),
        stage=rollout.stage,
        max_failure_rate=rollout.policy.max_failure_rate,
        min_devices=rollout.policy.min_devices,
        stage_wait_seconds=rollout.policy.stage_wait,
        reason=rollout.reason,
        failures=failures,
        outcomes=failures + states.get("installed", 0),
    )


def release_to_proto(
    info: ReleaseInfo, states: dict[str, int], length: int, rollout: Rollout | None = None
) -> pb.ReleaseSummary:
    """A release's row for ``fedge release ls`` / ``status``."""
    summary = copy_fields(pb.ReleaseSummary, info, length=length, states=states)
    if rollout is not None:
        summary.rollout.CopyFrom(rollout_to_proto(rollout, states))
    return summary


class ControlService:
    """Every operator action, typed: the gRPC control servicer and the web console call it."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        sites: Sites,
        runs: RunManager,
        releases: ReleaseStore,
        release_key_pem: bytes,
        token_ttl: float,
        enroll_fingerprint: str,
        max_upload_bytes: int,
        console_login: Callable[[str], tuple[str, float]] | None = None,
        rollouts: RolloutController | None = None,
    ) -> None:
        self._state = state
        self._hub = hub
        self._sites = sites
        self._runs = runs
        self._releases = releases
        self._release_key_pem = release_key_pem
        self._token_ttl = token_ttl
        self._fingerprint = enroll_fingerprint
        self._max_upload = max_upload_bytes
        self._console_login = console_login
        self._rollouts = rollouts

    # runs

    def start_run(self, config_json: str) -> pb.StartRunResponse:
        """Resolve the operator's options into a run plan against the fleet, and queue it."""
        options = _json_object(config_json, "run options")
        plan = resolve_plan(options, fleet=FleetView.of(self._state, self._hub))
        run = self._runs.submit(plan)
        return pb.StartRunResponse(run=run_to_proto(run, []))

    def get_run(self, run_id: int) -> pb.GetRunResponse:
        """A run with its rounds and events (run 0 = the latest)."""
        run = self._state.run(run_id)
        rounds = self._state.rounds(run.id)
        return pb.GetRunResponse(
            run=run_to_proto(run, rounds),
            rounds=[round_to_proto(r) for r in rounds],
            events=[
                pb.Event(time_unix=e.time, kind=e.kind, device_id=e.device_id, message=e.message)
                for e in self._state.events(run_id=run.id)
            ],
        )

    def list_runs(self) -> pb.ListRunsResponse:
        """All runs."""
        runs = [run_to_proto(r, self._state.rounds(r.id)) for r in self._state.runs()]
        return pb.ListRunsResponse(runs=runs)

    def stop_run(self, run_id: int) -> pb.StopRunResponse:
        """Stop a run."""
        run = self._runs.stop(run_id)
        return pb.StopRunResponse(run=run_to_proto(run, self._state.rounds(run.id)))

    def run_results(self, run_id: int) -> pb.GetRunResultsResponse:
        """The run's results.json as it wrote it."""
        run = self._state.run(run_id)
        path = self._runs.run_dir(run.id) / "results.json"
        if not path.is_file():
            raise NotFoundError(f"run {run.id} has no results yet (state {run.state})")
        return pb.GetRunResultsResponse(run_id=run.id, results_json=path.read_text())

    # fleet

    def list_devices(self) -> pb.ListDevicesResponse:
        """Every enrolled device."""
        rows = self._state.devices()
        online = set(self._sites.online([d.id for d in rows]))
        telemetry = {t.device_id: t for t in self._releases.telemetry.latest()}
        drift = {x.device_id: x for x in self._releases.drift.latest()}
        devices = [
            device_to_proto(
                d,
                online=d.id in online,
                telemetry=telemetry.get(d.device_id),
                drift=drift.get(d.device_id),
            )
            for d in rows
        ]
        return pb.ListDevicesResponse(devices=devices)

    def revoke_device(self, device: str) -> pb.RevokeDeviceResponse:
        """Revoke a device (by id, unique id prefix or name): refused from its next call on (a
        device behind a gateway: at its gateway, from the gateway's next sync on)."""
        row = self._state.revoke(self._state.find_device(device).device_id)
        self._hub.forget(row.id)
        self._state.add_event("revoked", f"{row.device_id} revoked", device_id=row.device_id)
        return pb.RevokeDeviceResponse(device=device_to_proto(row, online=False))

    def create_enroll_token(
        self, *, site: str = "", gateway: bool = False, ttl_seconds: float = 0.0
    ) -> pb.CreateEnrollTokenResponse:
        """A one-time enrolment token: for a device of the cloud, a device of a site (it pins
        the site gateway's enrolment certificate) or the gateway of a site (``gateway``)."""
        ttl = min(ttl_seconds if ttl_seconds > 0 else self._token_ttl, 30 * 86400)
        site = site.strip()
        fingerprint = self._fingerprint
        if gateway:
            if not _SITE_NAME.fullmatch(site):
                raise ConfigError(
                    "--site", site, "must name the site: letters, digits, '.', '_', '-' (1-100)"
                )
            issued = self._state.create_token(ttl_seconds=ttl, kind=KIND_GATEWAY, site=site)
        elif site:
            site_gateway = self._state.gateway_of(site)
            if site_gateway is None or not site_gateway.enroll_fingerprint:
                raise NotFoundError(
                    f"site {site!r} has no gateway yet: create a gateway token with "
                    f"`fedge fleet token create --gateway --site {site}` and start it first"
                )
            fingerprint = site_gateway.enroll_fingerprint
            issued = self._state.create_token(ttl_seconds=ttl, site=site)
            # The device talks to the gateway: the token itself names the cloud's release key.
            release_key = key_id(load_public_key(pem=self._release_key_pem))
            return pb.CreateEnrollTokenResponse(
                token=make_token(issued.secret, fingerprint, release_key),
                expires_unix=issued.expires,
            )
        else:
            issued = self._state.create_token(ttl_seconds=ttl)
        return pb.CreateEnrollTokenResponse(
            token=make_token(issued.secret, fingerprint), expires_unix=issued.expires
        )

    def list_drift(self) -> pb.ListDriftResponse:
        """Each device's latest drift window against its release's reference."""
        names = {d.device_id: d.name for d in self._state.devices()}
        return pb.ListDriftResponse(
            threshold=self._releases.drift.threshold,
            devices=[
                copy_fields(
                    pb.DeviceDrift,
                    x,
                    name=names.get(x.device_id, ""),
                    samples=round(x.samples),
                    updated_unix=x.updated,
                )
                for x in self._releases.drift.latest()
            ],
        )

    def create_console_login(self, operator: str) -> pb.CreateConsoleLoginResponse:
        """A one-time URL that opens a web console session for ``operator``."""
        if self._console_login is None:
            raise NotFoundError("this coordinator serves no console")
        url, expires = self._console_login(operator)
        self._state.add_event("console", f"{operator} asked for a console login URL")
        return pb.CreateConsoleLoginResponse(url=url, expires_unix=expires)

    # releases

    def upload_artifact(
        self, request_iterator: Iterator[pb.UploadArtifactRequest]
    ) -> pb.UploadArtifactResponse:
        """Store an artifact streamed in chunks (header first); refused if its hash differs."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise PayloadError("an upload must start with a header")
        header = first.header
        if header.length > self._max_upload:
            raise PayloadError(f"an artifact of {header.length} bytes is over the limit")
        sha, length = self._releases.artifacts.add_stream(
            _upload_chunks(request_iterator, header.length), sha256=header.sha256
        )
        self._releases.record_artifact(sha, length)
        return pb.UploadArtifactResponse(sha256=sha, length=length)

    def publish_release(self, request: pb.PublishReleaseRequest) -> pb.PublishReleaseResponse:
        """Sign an uploaded artifact, or a run's release build, as the next release; with a
        policy, start its health-gated rollout at the first stage."""
        policy = None
        if request.HasField("policy") and request.policy.stages:
            if self._rollouts is None:
                raise ReleaseError("this coordinator runs no health-gated rollouts")
            policy = RolloutPolicy(
                stages=tuple(int(p) for p in request.policy.stages),
                max_failure_rate=request.policy.max_failure_rate,
                min_devices=request.policy.min_devices,
                stage_wait=request.policy.stage_wait_seconds,
            )
            request.percent = policy.stages[0]
        if request.run_id:
            signed = self._publish_run(request)
        elif request.sha256:
            signed = publish_artifact(
                self._releases,
                sha256=request.sha256,
                report=_json_object(request.report_json or "{}", "report"),
                percent=request.percent,
                name=request.name,
                profile=request.profile or "cpu-small",
                labels=tuple(request.labels),
            )
        else:
            raise ReleaseError("publish needs an uploaded artifact (sha256) or a run id")
        if policy is not None:
            self._releases.rollouts.create(signed.manifest.version, policy)
            stages = ", ".join(f"{p}%" for p in policy.stages)
            detail = (
                f"to {request.percent}%, gated: stages {stages}, halts above a failure rate of "
                f"{policy.max_failure_rate:.2f} among at least {policy.min_devices} devices"
            )
        else:
            detail = f"to {request.percent}%"
        self._event("published", signed, detail)
        return pb.PublishReleaseResponse(release=self._summary(signed.manifest.version))

    def _publish_run(self, request: pb.PublishReleaseRequest) -> SignedManifest:
        run = self._state.run(request.run_id)
        build = self._runs.run_dir(run.id) / "release"
        if not (build / "model.onnx").is_file():
            raise NotFoundError(
                f"run {run.id} built no release (state {run.state}; a run builds one when it "
                "completes, unless started with --no-release)"
            )
        return publish_build(
            self._releases,
            build,
            percent=request.percent,
            name=request.name,
            profile=request.profile or "cpu-small",
            labels=tuple(request.labels),
        )

    def promote_release(self, version: int, *, percent: int) -> pb.PromoteReleaseResponse:
        """Widen (or narrow) a release's rollout (version 0: the newest)."""
        info = self._releases.promote(self._version(version), percent=percent)
        self._state.add_event("promoted", f"release {info.version} to {info.percent}%")
        return pb.PromoteReleaseResponse(release=self._summary(info.version))

    def rollback_release(self, version: int) -> pb.RollbackReleaseResponse:
        """Withdraw a release (0: the newest); re-release the last good model as a new, higher
        version."""
        signed = self._releases.rollback(version=version or None)
        self._event("rolled-back", signed, f"withdraws release {signed.manifest.rollback_of}")
        return pb.RollbackReleaseResponse(release=self._summary(signed.manifest.version))

    def pause_rollout(self, version: int) -> pb.PauseRolloutResponse:
        """Hold a health-gated rollout at its stage."""
        version = self._version(version)
        self._gate().pause(version)
        return pb.PauseRolloutResponse(release=self._summary(version))

    def resume_rollout(self, version: int) -> pb.ResumeRolloutResponse:
        """Go on with a paused health-gated rollout."""
        version = self._version(version)
        self._gate().resume(version)
        return pb.ResumeRolloutResponse(release=self._summary(version))

    def abort_rollout(self, version: int) -> pb.AbortRolloutResponse:
        """Stop a health-gated rollout and roll the fleet back to the last good release."""
        version = self._version(version)
        rollout = self._gate().abort(version)
        return pb.AbortRolloutResponse(
            release=self._summary(version), rollback_version=rollout.rollback_version
        )

    def _version(self, requested: int) -> int:
        """The release a request names; 0 names the newest."""
        return int(requested) or self._releases.newest_version()

    def _gate(self) -> RolloutController:
        if self._rollouts is None:
            raise ReleaseError("this coordinator runs no health-gated rollouts")
        return self._rollouts

    def list_releases(self) -> pb.ListReleasesResponse:
        """Every release, newest first."""
        return pb.ListReleasesResponse(
            releases=[self._summary(r.version) for r in self._releases.list_releases()]
        )

    def release_status(self, version: int) -> pb.GetReleaseStatusResponse:
        """A release's devices per install state, each device's outcome, and telemetry."""
        version = self._version(version)
        summary = self._summary(version)
        names = {d.device_id: d.name for d in self._state.devices()}
        return pb.GetReleaseStatusResponse(
            release=summary,
            devices=[
                pb.DeviceInstall(
                    device_id=r.device_id,
                    name=names.get(r.device_id, ""),
                    state=r.state,
                    reason=r.reason,
                    latency_p50_ms=r.measured.latency_p50_ms,
                    latency_p99_ms=r.measured.latency_p99_ms,
                    peak_memory_mb=r.measured.peak_memory_mb,
                )
                for r in self._releases.device_reports(version)
            ],
            telemetry=[
                copy_fields(pb.DeviceTelemetry, t)
                for t in self._releases.telemetry.latest(version=version)
            ],
        )

    def release_key(self) -> pb.GetReleaseKeyResponse:
        """The release public key devices pin at enrolment."""
        pem = self._release_key_pem
        return pb.GetReleaseKeyResponse(public_key_pem=pem, key_id=key_id(load_public_key(pem=pem)))

    def _summary(self, version: int) -> pb.ReleaseSummary:
        info = self._releases.get(version)
        summary = release_to_proto(
            info,
            self._releases.status(version),
            self._releases.artifacts.length(info.sha256),
            self._releases.rollouts.get(version),
        )
        measured = [
            r.measured.latency_p99_ms
            for r in self._releases.device_reports(version)
            if r.measured.latency_p99_ms > 0
        ]
        summary.runtime = self._releases.signed(version).manifest.engine
        summary.measured_p99_ms = max(measured, default=0.0)
        summary.measured_devices = len(measured)
        return summary

    def _event(self, kind: str, signed: SignedManifest, detail: str) -> None:
        m = signed.manifest
        self._state.add_event(kind, f"release {m.version} ({m.name}, {m.profile}) {detail}")


class ControlServicer:
    """gRPC handlers of ``fedge.v1.ControlService`` (the operator, on every call): one typed
    call each into :class:`ControlService`."""

    def __init__(self, service: ControlService) -> None:
        self._service = service

    def StartRun(self, request: pb.StartRunRequest, context: Context) -> pb.StartRunResponse:  # noqa: N802
        """See :meth:`ControlService.start_run`."""
        return self._service.start_run(request.config_json)

    def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:  # noqa: N802
        """See :meth:`ControlService.get_run`."""
        return self._service.get_run(request.run_id)

    def ListRuns(self, request: pb.ListRunsRequest, context: Context) -> pb.ListRunsResponse:  # noqa: N802
        """See :meth:`ControlService.list_runs`."""
        return self._service.list_runs()

    def StopRun(self, request: pb.StopRunRequest, context: Context) -> pb.StopRunResponse:  # noqa: N802
        """See :meth:`ControlService.stop_run`."""
        return self._service.stop_run(request.run_id)

    def GetRunResults(  # noqa: N802
        self, request: pb.GetRunResultsRequest, context: Context
    ) -> pb.GetRunResultsResponse:
        """See :meth:`ControlService.run_results`."""
        return self._service.run_results(request.run_id)

    def ListDevices(  # noqa: N802
        self, request: pb.ListDevicesRequest, context: Context
    ) -> pb.ListDevicesResponse:
        """See :meth:`ControlService.list_devices`."""
        return self._service.list_devices()

    def RevokeDevice(  # noqa: N802
        self, request: pb.RevokeDeviceRequest, context: Context
    ) -> pb.RevokeDeviceResponse:
        """See :meth:`ControlService.revoke_device`."""
        return self._service.revoke_device(request.device_id)

    def CreateEnrollToken(  # noqa: N802
        self, request: pb.CreateEnrollTokenRequest, context: Context
    ) -> pb.CreateEnrollTokenResponse:
        """See :meth:`ControlService.create_enroll_token`."""
        return self._service.create_enroll_token(
            site=request.site, gateway=request.gateway, ttl_seconds=request.ttl_seconds
        )

    def ListDrift(self, request: pb.ListDriftRequest, context: Context) -> pb.ListDriftResponse:  # noqa: N802
        """See :meth:`ControlService.list_drift`."""
        return self._service.list_drift()

    def CreateConsoleLogin(  # noqa: N802
        self, request: pb.CreateConsoleLoginRequest, context: Context
    ) -> pb.CreateConsoleLoginResponse:
        """See :meth:`ControlService.create_console_login` (for the calling operator)."""
        who = caller()
        operator = who.name if isinstance(who, Operator) else "operator"
        return self._service.create_console_login(operator)

    def UploadArtifact(  # noqa: N802
        self, request_iterator: Iterator[pb.UploadArtifactRequest], context: Context
    ) -> pb.UploadArtifactResponse:
        """See :meth:`ControlService.upload_artifact`."""
        return self._service.upload_artifact(request_iterator)

    def PublishRelease(  # noqa: N802
        self, request: pb.PublishReleaseRequest, context: Context
    ) -> pb.PublishReleaseResponse:
        """See :meth:`ControlService.publish_release`."""
        return self._service.publish_release(request)

    def PromoteRelease(  # noqa: N802
        self, request: pb.PromoteReleaseRequest, context: Context
    ) -> pb.PromoteReleaseResponse:
        """See :meth:`ControlService.promote_release`."""
        return self._service.promote_release(request.version, percent=request.percent)

    def RollbackRelease(  # noqa: N802
        self, request: pb.RollbackReleaseRequest, context: Context
    ) -> pb.RollbackReleaseResponse:
        """See :meth:`ControlService.rollback_release`."""
        return self._service.rollback_release(request.version)

    def PauseRollout(  # noqa: N802
        self, request: pb.PauseRolloutRequest, context: Context
    ) -> pb.PauseRolloutResponse:
        """See :meth:`ControlService.pause_rollout`."""
        return self._service.pause_rollout(request.version)

    def ResumeRollout(  # noqa: N802
        self, request: pb.ResumeRolloutRequest, context: Context
    ) -> pb.ResumeRolloutResponse:
        """See :meth:`ControlService.resume_rollout`."""
        return self._service.resume_rollout(request.version)

    def AbortRollout(  # noqa: N802
        self, request: pb.AbortRolloutRequest, context: Context
    ) -> pb.AbortRolloutResponse:
        """See :meth:`ControlService.abort_rollout`."""
        return self._service.abort_rollout(request.version)

    def ListReleases(  # noqa: N802
        self, request: pb.ListReleasesRequest, context: Context
    ) -> pb.ListReleasesResponse:
        """See :meth:`ControlService.list_releases`."""
        return self._service.list_releases()

    def GetReleaseStatus(  # noqa: N802
        self, request: pb.GetReleaseStatusRequest, context: Context
    ) -> pb.GetReleaseStatusResponse:
        """See :meth:`ControlService.release_status`."""
        return self._service.release_status(request.version)

    def GetReleaseKey(  # noqa: N802
        self, request: pb.GetReleaseKeyRequest, context: Context
    ) -> pb.GetReleaseKeyResponse:
        """See :meth:`ControlService.release_key`."""
        return self._service.release_key()


def _upload_chunks(requests: Iterator[Any], length: int) -> Iterator[memoryview]:
    received = 0
    for part in requests:
        if part.WhichOneof("part") != "chunk":
            raise PayloadError("an upload has one header, then chunks")
        data = memoryview(part.chunk.data)
        received += len(data)
        if received > length:
            raise PayloadError(f"the upload is longer than the announced {length} bytes")
        yield data
    if received != length:
        raise PayloadError(f"the upload has {received} bytes, announced {length}")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise PayloadError(f"{what}: not JSON ({err})") from err
    if not isinstance(value, dict):
        raise PayloadError(f"{what}: must be a JSON object")
    return value
