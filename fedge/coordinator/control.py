"""The control service (operator ↔ coordinator): thin gRPC handlers over plain functions."""

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from fedge.config import RunConfig
from fedge.coordinator.auth import authenticate_operator
from fedge.coordinator.errors import PayloadError, status_for
from fedge.coordinator.fleet import make_token
from fedge.coordinator.runs import RunManager
from fedge.coordinator.serde import config_from_json
from fedge.coordinator.state import DeviceRow, RunRow, State
from fedge.coordinator.tasks import TaskHub
from fedge.errors import FedgeError
from fedge.log import logger
from fedge.net import Malformed
from fedge.v1 import control_pb2 as pb

__all__ = ["ControlServicer", "device_to_proto", "run_to_proto"]

T = TypeVar("T")

_RUN_STATES = {
    "queued": pb.RUN_STATE_QUEUED,
    "running": pb.RUN_STATE_RUNNING,
    "completed": pb.RUN_STATE_COMPLETED,
    "failed": pb.RUN_STATE_FAILED,
    "stopped": pb.RUN_STATE_STOPPED,
}


def run_to_proto(run: RunRow, state: State) -> pb.RunSummary:
    """A run's summary for the operator."""
    rounds = state.rounds(run.id)
    summary = pb.RunSummary(
        run_id=run.id,
        state=_RUN_STATES.get(run.state, pb.RUN_STATE_UNSPECIFIED),
        config_json=run.config_json,
        rounds_total=run.rounds_total,
        rounds_done=len(rounds),
        error=run.error,
        created_unix=run.created,
    )
    if rounds:
        summary.accuracy = rounds[-1].accuracy
    return summary


def device_to_proto(device: DeviceRow, *, online: bool) -> pb.Device:
    """A device's row for ``fedge fleet ls``."""
    proto = pb.Device(
        device_id=device.device_id,
        name=device.name,
        node_id=device.id,
        state="revoked" if device.revoked else (device.state if online else "offline"),
        version=device.version,
        last_seen_unix=device.last_seen,
    )
    if device.privacy_spent is not None:
        proto.privacy_spent = device.privacy_spent
    return proto


class ControlServicer:
    """gRPC handlers of ``fedge.v1.ControlService`` (operator certificate required)."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        runs: RunManager,
        insecure: bool,
        token_ttl: float,
        enroll_fingerprint: str,
    ) -> None:
        self._state = state
        self._hub = hub
        self._runs = runs
        self._insecure = insecure
        self._token_ttl = token_ttl
        self._fingerprint = enroll_fingerprint

    def _call(
        self, name: str, request: Any, context: grpc.ServicerContext, fn: Callable[[], T]
    ) -> T:
        try:
            authenticate_operator(context, insecure=self._insecure)
            if isinstance(request, Malformed):
                raise PayloadError(request.reason)
            return fn()
        except FedgeError as err:
            self._refuse(context, name, err)

    def _refuse(self, context: grpc.ServicerContext, name: str, err: FedgeError) -> NoReturn:
        code = status_for(err)
        self._state.add_event(
            "refused", f"{name}: {code.name}: {err}", run_id=self._runs.active_run
        )
        logger.warning("refused control %s: %s: %s", name, code.name, err)
        context.abort(code, str(err))
        raise AssertionError("unreachable")

    def StartRun(self, request: Any, context: grpc.ServicerContext) -> pb.StartRunResponse:  # noqa: N802
        """Queue a run."""

        def start() -> pb.StartRunResponse:
            config = RunConfig.from_mapping(config_from_json(request.config_json))
            return pb.StartRunResponse(run=run_to_proto(self._runs.submit(config), self._state))

        return self._call("StartRun", request, context, start)

    def GetRun(self, request: Any, context: grpc.ServicerContext) -> pb.GetRunResponse:  # noqa: N802
        """A run with its rounds and events (run 0 = the latest)."""

        def get() -> pb.GetRunResponse:
            run = self._state.run(request.run_id)
            return pb.GetRunResponse(
                run=run_to_proto(run, self._state),
                rounds=[
                    pb.RoundSummary(
                        server_round=r.server_round,
                        accuracy=r.accuracy,
                        loss=r.loss,
                        sampled=r.sampled,
                        aggregated=r.aggregated,
                        dropped=r.dropped,
                        seconds=r.seconds,
                    )
                    for r in self._state.rounds(run.id)
                ],
                events=[
                    pb.Event(
                        time_unix=e.time, kind=e.kind, device_id=e.device_id, message=e.message
                    )
                    for e in self._state.events(run_id=run.id)
                ],
            )

        return self._call("GetRun", request, context, get)

    def ListRuns(self, request: Any, context: grpc.ServicerContext) -> pb.ListRunsResponse:  # noqa: N802
        """All runs."""
        return self._call(
            "ListRuns",
            request,
            context,
            lambda: pb.ListRunsResponse(
                runs=[run_to_proto(r, self._state) for r in self._state.runs()]
            ),
        )

    def StopRun(self, request: Any, context: grpc.ServicerContext) -> pb.StopRunResponse:  # noqa: N802
        """Stop a run."""
        return self._call(
            "StopRun",
            request,
            context,
            lambda: pb.StopRunResponse(
                run=run_to_proto(self._runs.stop(request.run_id), self._state)
            ),
        )

    def ListDevices(self, request: Any, context: grpc.ServicerContext) -> pb.ListDevicesResponse:  # noqa: N802
        """Every enrolled device."""

        def devices() -> pb.ListDevicesResponse:
            rows = self._state.devices()
            online = set(self._hub.online([d.id for d in rows]))
            return pb.ListDevicesResponse(
                devices=[device_to_proto(d, online=d.id in online) for d in rows]
            )

        return self._call("ListDevices", request, context, devices)

    def RevokeDevice(self, request: Any, context: grpc.ServicerContext) -> pb.RevokeDeviceResponse:  # noqa: N802
        """Revoke a device: refused from its next call on."""

        def revoke() -> pb.RevokeDeviceResponse:
            device = self._state.revoke(request.device_id)
            self._hub.forget(device.id)
            self._state.add_event(
                "revoked", f"{device.device_id} revoked", device_id=device.device_id
            )
            return pb.RevokeDeviceResponse(device=device_to_proto(device, online=False))

        return self._call("RevokeDevice", request, context, revoke)

    def CreateEnrollToken(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> pb.CreateEnrollTokenResponse:
        """A one-time enrolment token."""

        def create() -> pb.CreateEnrollTokenResponse:
            ttl = request.ttl_seconds if request.ttl_seconds > 0 else self._token_ttl
            issued = self._state.create_token(ttl_seconds=min(ttl, 30 * 86400))
            return pb.CreateEnrollTokenResponse(
                token=make_token(issued.secret, self._fingerprint), expires_unix=issued.expires
            )

        return self._call("CreateEnrollToken", request, context, create)
