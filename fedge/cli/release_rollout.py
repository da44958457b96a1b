"""Rollout commands of ``fedge release``: publish, promote, rollback, ls, status, key.

They operate on the coordinator's state directory (its SQLite database and release store), so
they work on the coordinator host whether or not the coordinator is running (SQLite WAL lets
both write). :func:`register` adds them to the ``release`` Typer group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedge.cli.common import command_group, console, fail
from fedge.errors import FedgeError

__all__ = [
    "DEFAULT_STATE",
    "StateOption",
    "app",
    "key_command",
    "ls_command",
    "promote_command",
    "publish_command",
    "register",
    "rollback_command",
    "status_command",
]

StateOption = Annotated[
    Path,
    typer.Option("--state", help="Coordinator state directory.", envvar="FEDGE_COORDINATOR_STATE"),
]
DEFAULT_STATE = Path("coordinator-state")


def publish_command(
    model: Annotated[Path, typer.Argument(help="model.onnx, or the directory `build` wrote.")],
    percent: Annotated[int, typer.Option("--percent", help="Share of devices (0-100).")] = 10,
    name: Annotated[str, typer.Option("--name", help="Release name.")] = "",
    profile: Annotated[str, typer.Option("--profile", help="Device profile.")] = "cpu-small",
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated class names.")] = "",
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Sign MODEL as the next release and roll it out to PERCENT of the devices."""
    from fedge.release.publish import publish_build

    try:
        signed = publish_build(
            model,
            state_dir=state,
            percent=percent,
            name=name,
            profile=profile,
            labels=tuple(x for x in labels.split(",") if x),
        )
    except FedgeError as err:
        fail(str(err))
    m = signed.manifest
    console.print(
        f"published release {m.version} ({m.name}, {m.length} bytes, sha256 {m.sha256[:12]}) "
        f"to {percent}% of {m.profile!r} devices; expires {m.expires}",
        soft_wrap=True,
    )


def promote_command(
    version: Annotated[int, typer.Argument(help="Release version.")],
    percent: Annotated[int, typer.Option("--percent", help="New share of devices.")] = 100,
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Widen the rollout of VERSION to PERCENT of the devices."""
    from fedge.release import open_release_store

    try:
        store = open_release_store(state_dir=state)
        try:
            info = store.promote(version, percent=percent)
        finally:
            store.close()
    except FedgeError as err:
        fail(str(err))
    console.print(f"release {info.version} now targets {info.percent}% of devices")


def rollback_command(
    version: Annotated[
        int | None, typer.Argument(help="Release to withdraw (default: the newest).")
    ] = None,
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Withdraw a release; re-release the last good model as a NEW, higher version."""
    from fedge.release import open_release_store

    try:
        store = open_release_store(state_dir=state, with_key=True)
        try:
            signed = store.rollback(version=version)
        finally:
            store.close()
    except FedgeError as err:
        fail(str(err))
    m = signed.manifest
    console.print(
        f"rolled back release {m.rollback_of}: release {m.version} re-ships sha256 "
        f"{m.sha256[:12]} ({m.name}) to 100% of devices",
        soft_wrap=True,
    )


def ls_command(state: StateOption = DEFAULT_STATE) -> None:
    """List releases, newest first."""
    from fedge.release import open_release_store

    try:
        store = open_release_store(state_dir=state)
        try:
            rows = store.list_releases()
            counts = {r.version: store.status(r.version) for r in rows}
        finally:
            store.close()
    except FedgeError as err:
        fail(str(err))
    if not rows:
        console.print("no releases yet")
    for r in rows:  # plain lines: nothing truncated on a narrow terminal
        status = "withdrawn" if r.withdrawn else "live"
        if r.rollback_of:
            status += f" (rollback of {r.rollback_of})"
        console.print(
            f"release {r.version}: {r.name} [{r.profile}] {r.percent}% {status}, "
            f"installed on {counts[r.version]['installed']}, sha256 {r.sha256[:12]}, "
            f"created {r.created}, expires {r.expires}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def status_command(
    version: Annotated[int, typer.Argument(help="Release version.")],
    devices: Annotated[bool, typer.Option("--devices", help="One line per device.")] = False,
    state: StateOption = DEFAULT_STATE,
) -> None:
    """Devices per install state for VERSION (and why, with --devices)."""
    from fedge.release import open_release_store

    try:
        store = open_release_store(state_dir=state)
        try:
            info = store.get(version)
            counts = store.status(version)
            reports = store.device_reports(version) if devices else []
            telemetry = store.telemetry(version=version)
        finally:
            store.close()
    except FedgeError as err:
        fail(str(err))
    states = ", ".join(f"{k} {v}" for k, v in counts.items())
    flag = " withdrawn" if info.withdrawn else ""
    console.print(f"release {version} ({info.percent}%{flag}): {states}", soft_wrap=True)
    for device, dev_state, reason in reports:
        console.print(f"  {device}: {dev_state} {reason}".rstrip(), soft_wrap=True)
    if telemetry:
        requests = sum(t.requests for t in telemetry)
        errors = sum(t.errors for t in telemetry)
        p99 = max(t.latency_p99_ms for t in telemetry)
        console.print(
            f"inference on {len(telemetry)} devices: {requests} requests, {errors} errors, "
            f"worst p99 {p99:.2f} ms",
            soft_wrap=True,
        )


def key_command(state: StateOption = DEFAULT_STATE) -> None:
    """Print the release public key (PEM) that devices pin at enrolment."""
    from fedge.release import RELEASE_KEY_FILE, load_or_create_release_key, public_key_pem

    try:
        key = load_or_create_release_key(path=state / RELEASE_KEY_FILE)
    except FedgeError as err:
        fail(str(err))
    typer.echo(public_key_pem(key.public_key()).decode(), nl=False)


def register(group: typer.Typer) -> None:
    """Add the rollout commands to the ``release`` group."""
    group.command("publish")(publish_command)
    group.command("promote")(promote_command)
    group.command("rollback")(rollback_command)
    group.command("ls")(ls_command)
    group.command("status")(status_command)
    group.command("key")(key_command)


# Stand-alone group (tests; and the `release` group until `fedge/cli/release.py` registers us).
app = command_group("Signed model releases and staged rollout.")
register(app)
