"""The edge agent: the device's session with its coordinator (or site gateway).

The agent heartbeats (saying whether it can train, its profile and the release it serves) and,
on a device with training support (``fedge[train]``) and local data, pulls training tasks and
runs them (:mod:`fedge.edge.trainer`, imported only then). A device without training support is
inference + OTA only, and the coordinator never sends it a training task.

A lost connection is retried on the same channel: gRPC reconnects with a short capped backoff
(``TransportOptions.max_reconnect_backoff_ms``), and the agent waits for the channel to be ready
again instead of sleeping through a long backoff of its own, so a coordinator restart costs the
fleet seconds. A refused identity (revoked, unknown) stops the agent, since retrying cannot help.
"""

import importlib.util
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from fedge import __version__
from fedge.edge.identity import DeviceIdentity
from fedge.edge.personalize import load_report
from fedge.errors import DataError, FedgeError
from fedge.log import logger
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.protocol.serde import data_summary_to_proto, device_state_to_proto
from fedge.protocol.transport import TransportOptions, create_channel
from fedge.protocol.wire import use_zero_copy_streams
from fedge.v1 import fleet_pb2 as pb
from fedge.v1 import fleet_pb2_grpc

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

    from fedge.data.device import DataSummary
    from fedge.edge.trainer import TaskRunner

__all__ = ["AgentSettings", "EdgeAgent", "RefusedError", "training_available"]

_FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_TRAINING_PACKAGES = ("torch", "flwr", "opacus")


class RefusedError(FedgeError):
    """The coordinator refused this device's identity (unknown, revoked or expired)."""


def training_available() -> bool:
    """Whether this install can train (``fedge[train]``: torch, Flower, Opacus)."""
    return all(importlib.util.find_spec(name) is not None for name in _TRAINING_PACKAGES)


@dataclass(frozen=True)
class AgentSettings:
    """How the agent polls and reconnects."""

    wait_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    # Jitter before a retry, so a fleet does not come back in lockstep.
    retry_jitter: float = 0.5
    # Longest wait for the link to come back before trying a call again anyway.
    reconnect_wait: float = 30.0
    rpc_timeout: float = 600.0
    max_tasks: int | None = None  # stop after this many tasks (tests)
    # Seconds added to each training step, to emulate a slower device (tests, benchmarks).
    step_delay: float = 0.0


class EdgeAgent:
    """Runs one device's session until :meth:`stop` or a refused identity."""

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        data_dir: Path | None,
        settings: AgentSettings | None = None,
        client_app: "ClientApp | None" = None,
        options: TransportOptions | None = None,
        profile: str = "",
        serving: Callable[[], tuple[int, str]] | None = None,
        train: bool = True,
        task: str | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings or AgentSettings()
        self.profile = profile
        self._options = options or TransportOptions()
        self._serving = serving or (lambda: (0, ""))
        self._release_news: Callable[[str], None] = lambda release_state: None
        self._stop = threading.Event()
        self._interval = self.settings.heartbeat_seconds
        self.tasks_done = 0
        self.trainer: TaskRunner | None = None
        self.data: DataSummary | None = None
        if train and data_dir is not None and training_available():
            from fedge.data.device import summarize  # the data modules only on a trainer

            try:
                self.data = summarize(data_dir)
            except DataError as err:  # the ClientApp reports it per task; the run check skips
                logger.warning("cannot summarize %s for the coordinator: %s", data_dir, err)
            from fedge.edge import trainer

            self.trainer = trainer.TaskRunner(
                identity,
                data_dir=data_dir,
                client_app=client_app,
                options=self._options,
                task=task,
                step_delay=self.settings.step_delay,
            )

    def set_serving(self, serving: Callable[[], tuple[int, str]]) -> None:
        """Where heartbeats read the release this device serves and its slot."""
        self._serving = serving

    def set_release_news(self, release_news: Callable[[str], None]) -> None:
        """Who hears the coordinator's release state from each heartbeat (the updater)."""
        self._release_news = release_news

    @property
    def can_train(self) -> bool:
        """Whether this agent takes training tasks."""
        return self.trainer is not None

    def stop(self) -> None:
        """Ask the loop to finish after the current call."""
        self._stop.set()

    def run(self) -> None:
        """Serve until stopped; raises :class:`RefusedError` if the identity is refused."""
        channel = create_channel(
            self.identity.coordinator, tls=self.identity.tls(), options=self._options
        )
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        use_zero_copy_streams(stub, channel, pb.DESCRIPTOR.services_by_name["FleetService"])
        try:
            while not self._stop.is_set() and not self._done():
                try:
                    self._session(stub)
                except grpc.RpcError as err:
                    code = err.code()
                    if code in _FATAL:
                        raise RefusedError(f"{code.name}: {err.details()}") from err
                    logger.warning("connection lost (%s: %s)", code.name, err.details())
                    self._wait_for_link(channel)
        finally:
            channel.close()

    def _wait_for_link(self, channel: grpc.Channel) -> None:
        # The channel reconnects by itself (with a short capped backoff); wait until it has,
        # then a random moment more, so devices do not all call in the same instant.
        ready = grpc.channel_ready_future(channel)
        deadline = threading.Event()
        timer = threading.Timer(self.settings.reconnect_wait, deadline.set)
        timer.start()
        try:
            while not self._stop.is_set() and not deadline.is_set():
                try:
                    ready.result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    continue
        finally:
            timer.cancel()
            ready.cancel()
        self._stop.wait(random.uniform(0, self.settings.retry_jitter))

    def _done(self) -> bool:
        limit = self.settings.max_tasks
        return limit is not None and self.tasks_done >= limit

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((DEVICE_ID_METADATA, self.identity.device_id),) if self.identity.insecure else ()

    def _session(self, stub: fleet_pb2_grpc.FleetServiceStub) -> None:
        fatal: list[grpc.RpcError] = []
        session_over = threading.Event()
        self._heartbeat(stub)  # fails fast if the coordinator is down or refuses us
        logger.info("%s: connected to %s", self.identity.device_id, self.identity.coordinator)
        beat = threading.Thread(
            target=self._heartbeats, args=(stub, session_over, fatal), daemon=True
        )
        beat.start()
        try:
            while not self._stop.is_set() and not fatal and not self._done():
                if self.trainer is None:
                    self._stop.wait(self.settings.wait_seconds)
                    continue
                served = self.trainer.serve_one(
                    stub,
                    wait_seconds=self.settings.wait_seconds,
                    rpc_timeout=self.settings.rpc_timeout,
                    metadata=self._metadata(),
                )
                self.tasks_done += served
            if fatal:
                raise fatal[0]
        finally:
            session_over.set()

    def _heartbeat(self, stub: fleet_pb2_grpc.FleetServiceStub) -> None:
        busy = self.trainer is not None and self.trainer.busy
        version, slot = self._serving()
        response = stub.Heartbeat(
            pb.HeartbeatRequest(
                version=__version__,
                state=device_state_to_proto("training" if busy else "idle"),
                can_train=self.can_train,
                profile=self.profile,
                release_version=version,
                release_slot=slot,
                data=data_summary_to_proto(self.data),
                personalization=self._personalization(),
            ),
            timeout=30,
            metadata=self._metadata(),
        )
        if response.interval_seconds > 0:  # the coordinator sets the pace
            self._interval = min(response.interval_seconds, self.settings.heartbeat_seconds)
        self._release_news(response.release_state)

    def _personalization(self) -> pb.PersonalizationReport | None:
        """The noised report of the device's last personalisation (written when it ran)."""
        report = load_report(Path(self.identity.state_dir))
        if report is None:
            return None
        return pb.PersonalizationReport(
            version=report.version, gain=report.gain, reason=report.reason, epsilon=report.epsilon
        )

    def _heartbeats(
        self, stub: fleet_pb2_grpc.FleetServiceStub, over: threading.Event, fatal: list[Any]
    ) -> None:
        while not over.wait(self._interval):
            try:
                self._heartbeat(stub)
            except ValueError:
                if over.is_set():  # the session ended and closed its channel under this beat
                    return
                raise
            except grpc.RpcError as err:
                if err.code() in _FATAL:
                    fatal.append(err)
                    self._stop.set()
                    return
                logger.info("heartbeat failed: %s", err.code().name)
