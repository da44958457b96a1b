"""``fedge edge``: enrol a device, run its agent, and write a device data directory."""

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from fedge.cli._options import option_flags
from fedge.cli.common import (
    PROFILE_HELP,
    CoordinatorOption,
    EnrollAddressOption,
    EnrollNameOption,
    command_group,
    console,
    err_console,
    fail,
    log_fedge_info,
    require_extra,
    resolve_device_profile,
    stop_on_signals,
)
from fedge.errors import FedgeError
from fedge.inference.profiles import DEFAULT_DEVICE_DATASET, DeviceDataSpec
from fedge.options import config_key

if TYPE_CHECKING:
    from fedge.edge.identity import DeviceIdentity

__all__ = ["app"]

app = command_group("The device agent.")


StateOption = Annotated[
    Path,
    typer.Option(
        help="The device's state directory (identity, keys, model slots).",
        envvar="FEDGE_DEVICE_STATE",
    ),
]
DEFAULT_STATE = Path("device-state")
ProfileOption = Annotated[
    str | None,
    typer.Option(
        help=f"The device profile releases must fit: {PROFILE_HELP} (default: the enrolled one)."
    ),
]
DEFAULT_PROFILE = "cpu-small"
PersonalEpsilonOption = Annotated[
    float,
    typer.Option(
        help="Local DP budget (epsilon) of this device's personal fits, across releases.",
        min=0.01,
    ),
]


@app.command("enroll")
def enroll_command(
    coordinator: Annotated[str, typer.Option(help="HOST:PORT of the coordinator's fleet port.")],
    token: Annotated[str, typer.Option(help="One-time token from `fedge fleet token create`.")],
    state: StateOption = DEFAULT_STATE,
    name: Annotated[str, typer.Option(help="A human-readable device name.")] = "",
    profile: ProfileOption = None,
    enroll_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of the enrolment port (default: PORT+1).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS (only with an --insecure coordinator).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Re-enrol an enrolled --state (replaces its key).")
    ] = False,
) -> None:
    """Enrol this device: create its key, get its certificate, save its identity."""
    if insecure:
        err_console.print("[bold yellow]WARNING:[/] --insecure: enrolling without TLS")
    try:
        identity = _identity(
            state,
            coordinator=coordinator,
            token=token,
            enroll_address=enroll_address,
            name=name,
            profile=profile,
            insecure=insecure,
            force=force,
        )
    except FedgeError as err:
        fail(str(err))
    console.print(f"pinned release key {identity.release_key_id[:16]}")


def _installed_task(reference: str) -> str:
    """``reference`` loaded (one line naming what is wrong otherwise), a file made absolute."""
    from fedge.tasks import load_task

    where, _, attribute = reference.rpartition(":")
    if where.endswith(".py"):
        reference = f"{Path(where).expanduser().resolve()}:{attribute}"
    load_task(reference)
    return reference


@app.command("start")
def start_command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="The device's labelled data: trains on it (with fedge\\[train]), scores models."
        ),
    ] = None,
    state: StateOption = DEFAULT_STATE,
    coordinator: CoordinatorOption = None,
    token: Annotated[
        str | None,
        typer.Option(help="Enrol first with this one-time token when --state is not enrolled."),
    ] = None,
    enroll_address: EnrollAddressOption = None,
    name: EnrollNameOption = "",
    profile: ProfileOption = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="With --token: enrol without TLS (test networks).")
    ] = False,
    wait: Annotated[float, typer.Option(help="Seconds each task poll waits.")] = 10.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 5.0,
    release_interval: Annotated[
        float, typer.Option(help="Seconds between checks for a new model release.")
    ] = 30.0,
    inference: Annotated[
        str,
        typer.Option(help="HOST:PORT of the local gRPC inference server ('' = none)."),
    ] = "127.0.0.1:0",
    accuracy_floor: Annotated[
        float | None,
        typer.Option(
            help="Roll back a new model whose accuracy on the --data labels is below this (0-1)."
        ),
    ] = None,
    metrics: Annotated[
        str,
        typer.Option(help="HOST:PORT of a Prometheus /metrics endpoint ('' = none, the default)."),
    ] = "",
    drift_window: Annotated[
        int,
        typer.Option(
            help="Predictions per drift window: noisy class and input histograms sent with the "
            "telemetry (0 = none)."
        ),
    ] = 200,
    drift_epsilon: Annotated[
        float,
        typer.Option(help="Differential privacy spent on each drift window's counts."),
    ] = 1.0,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Take training tasks (needs --data).")
    ] = True,
    task: Annotated[
        str | None,
        typer.Option(
            help="The task installed on this device (FILE.py:NAME or package.module:NAME): the "
            "only task code it trains; a run of another task's code is refused."
        ),
    ] = None,
    personalize: Annotated[
        bool,
        typer.Option(
            "--personalize/--no-personalize",
            help="After each install, fit a personal last layer on --data and serve it if it "
            "beats the release on a held-out split.",
        ),
    ] = False,
    personal_epsilon: PersonalEpsilonOption = 8.0,
    step_delay: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds added to each training step, to emulate a slower device (tests).",
        ),
    ] = 0.0,
) -> None:
    """Run this device: model releases and local inference, and training when it can.

    With --token, an unenrolled --state is enrolled first, so one command brings a device up.
    Without fedge\\[train] (or without --data) the device serves predictions and installs
    releases only, and tells the coordinator so: it is never sent a training task.
    """
    from fedge.edge.agent import AgentSettings, RefusedError, training_available
    from fedge.edge.delivery import DeliverySettings
    from fedge.edge.device import DeviceSettings, hold_state, start_device
    from fedge.edge.drift import DriftSettings
    from fedge.edge.health import HealthConfig
    from fedge.edge.identity import is_enrolled, load_identity
    from fedge.protocol.transport import parse_address

    try:
        health = HealthConfig(accuracy_floor=accuracy_floor, labelled=data)
        drift = DriftSettings(window=drift_window, epsilon=drift_epsilon) if drift_window else None
        if coordinator is not None:
            parse_address(coordinator, option="--coordinator")
        if inference:
            parse_address(inference, option="--inference")
        if metrics:
            parse_address(metrics, option="--metrics")
        enrol = token is not None and not is_enrolled(state)
        if not enrol:  # fails early, naming the missing identity, when there is no token
            load_identity(state)
            if token is not None:
                err_console.print(f"note: {state} is already enrolled; --token is not used")
        if task is not None:  # fail early, naming the bad task, and before a token is spent
            task = _installed_task(task)
        summary = None
        if data is not None:  # fail early, naming the bad file, and before a token is spent
            from fedge.data.device import summarize

            summary = summarize(data)
        identity = _identity(
            state,
            coordinator=coordinator,
            token=token if enrol else None,
            enroll_address=enroll_address,
            name=name,
            profile=profile,
            insecure=insecure,
        )
        # Held while this command runs: its context closes the file, or the process's exit.
        click.get_current_context().call_on_close(hold_state(Path(identity.state_dir)).close)
        device_profile = resolve_device_profile(profile or identity.profile or DEFAULT_PROFILE)
        device = start_device(
            identity,
            DeviceSettings(
                data_dir=data,
                train=train,
                task=task,
                agent=AgentSettings(
                    wait_seconds=wait, heartbeat_seconds=heartbeat, step_delay=step_delay
                ),
                delivery=DeliverySettings(
                    interval=release_interval,
                    inference_address=inference or None,
                    health=health,
                    profile=device_profile,
                    metrics_address=metrics or None,
                    drift=drift,
                    personalize=_personal_settings(data, personal_epsilon) if personalize else None,
                ),
            ),
        )
    except FedgeError as err:
        fail(str(err))
    agent, delivery = device.agent, device.delivery
    assert delivery is not None
    log_fedge_info()
    if identity.insecure:
        err_console.print("[bold yellow]WARNING:[/] this device was enrolled --insecure (no TLS)")
    stop_on_signals(device.stop)
    if agent.can_train and summary is not None:
        role = "trains on " + summary.describe()
    else:
        role = _why_no_training(data, train, training_available())
    # emoji=False: ids and HOST:PORT print as they are, and rich never loads its emoji table.
    console.print(
        f"{identity.device_id}: connecting to {identity.coordinator}; profile "
        f"{device_profile.name}; {role}",
        soft_wrap=True,
        markup=False,
        emoji=False,
    )
    if delivery.inference_port is not None:
        console.print(
            f"{identity.device_id}: gRPC inference (fedge.v1.InferenceService) on port "
            f"{delivery.inference_port}",
            emoji=False,
        )
    if delivery.metrics_port is not None:
        console.print(
            f"{identity.device_id}: Prometheus /metrics on port {delivery.metrics_port}",
            emoji=False,
        )
    try:
        device.run()
    except RefusedError as err:
        fail(f"the coordinator refused this device: {err}")
    console.print(f"{identity.device_id}: stopped after {agent.tasks_done} tasks", emoji=False)


def _why_no_training(data: Path | None, train: bool, available: bool) -> str:
    if not train:
        return "inference + OTA only (--no-train)"
    if data is None:
        return "inference + OTA only (no --data to train on)"
    if not available:
        return "inference + OTA only: training needs fedge[train] (pip install 'fedge[train]')"
    return "inference + OTA only"


def _identity(
    state: Path,
    *,
    coordinator: str | None,
    token: str | None,
    enroll_address: str | None,
    name: str,
    profile: str | None,
    insecure: bool,
    force: bool = False,
) -> "DeviceIdentity":
    """The identity to run as: enrolled now when ``token`` is given (``force``: replacing an
    enrolled ``state``), else the saved one; ``coordinator`` overrides the enrolled address
    for this run."""
    from fedge import __version__
    from fedge.edge.identity import EnrollError, enroll_device, load_identity

    if token is None:
        identity = load_identity(state)
        if coordinator is not None and coordinator != identity.coordinator:
            identity = replace(identity, coordinator=coordinator)  # this run only
        return identity
    if coordinator is None:
        raise EnrollError("--coordinator HOST:PORT is needed to enrol with --token")
    identity = enroll_device(
        coordinator=coordinator,
        token=token,
        state_dir=state,
        name=name,
        enroll_address=enroll_address,
        insecure=insecure,
        version=__version__,
        profile=profile or DEFAULT_PROFILE,
        force=force,
    )
    console.print(f"enrolled as {identity.device_id} (node {identity.node_id}); state in {state}")
    return identity


@app.command("personalize")
def personalize_command(
    data: Annotated[Path, typer.Option(help="The device's labelled data (as `edge start`).")],
    state: StateOption = DEFAULT_STATE,
    personal_epsilon: PersonalEpsilonOption = 8.0,
    accuracy_floor: Annotated[
        float | None,
        typer.Option(help="The personal model's health check: accuracy floor on --data (0-1)."),
    ] = None,
) -> None:
    """Fit a personal last layer on --data now; serve it only if it beats the installed release.

    Uses the device's local DP ledger (with fedge\\[train]; a slim device fits with numpy). A
    running device serves the result after its next restart.
    """
    from fedge.edge.health import HealthConfig
    from fedge.edge.identity import load_pinned_key
    from fedge.edge.personalize import personalize_serving

    try:
        health = HealthConfig(accuracy_floor=accuracy_floor, labelled=data)
        outcome = personalize_serving(
            state,
            _personal_settings(data, personal_epsilon),
            public_key=load_pinned_key(state),
            health=health,
        )
    except FedgeError as err:
        fail(str(err))
    what = "serves its personal layer" if outcome.served else "keeps the global model"
    epsilon = f", device epsilon {outcome.epsilon:.2f}" if outcome.epsilon is not None else ""
    console.print(
        f"release {outcome.version}: {what} ({outcome.reason}); validation accuracy "
        f"{outcome.global_accuracy:.3f} -> {outcome.personal_accuracy:.3f} "
        f"({outcome.method or 'no fit'}{epsilon})",
        soft_wrap=True,
    )


def _personal_settings(data: Path | None, epsilon: float) -> Any:
    from fedge.edge.personalize import PersonalizeSettings

    return PersonalizeSettings(data=data, epsilon=epsilon)


@app.command("make-data")
@option_flags(DeviceDataSpec)
def make_data_command(
    *,
    options: dict[str, Any],
    out: Annotated[Path, typer.Option(help="Device data directory to write.")],
    profile: Annotated[
        str | None,
        typer.Option(
            help=f"The device profile whose data to write: {PROFILE_HELP}; flags win over it."
        ),
    ] = None,
) -> None:
    """Write a device data dir from an embedded dataset (the same partition `local` uses)."""
    require_extra("server", "fedge edge make-data (the embedded datasets)")
    from fedge.data.device import write_device_data

    try:
        spec = resolve_device_profile(profile).data if profile is not None else DeviceDataSpec()
        given = {f.name: options[k] for f in fields(spec) if (k := config_key(f.name)) in options}
        spec = replace(spec, **given)
        write_device_data(out, spec)
    except (FedgeError, ValueError) as err:
        fail(str(err))
    console.print(
        f"wrote {spec.dataset or DEFAULT_DEVICE_DATASET} partition {spec.partition_id}/"
        f"{spec.num_partitions} as {spec.format} to {out}"
    )


# `fedge edge predict` (on-device inference) lives in its own module.
from fedge.cli.edge_predict import predict_command  # noqa: E402

app.command("predict")(predict_command)
