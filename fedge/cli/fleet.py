"""``fedge fleet``: enrolment tokens, the device list, revocation (operator commands).

A deployment with site gateways lists each gateway with the devices behind it (``site``); the
devices of the cloud itself come first.
"""

import datetime as dt
import json
from typing import Annotated, Any

import typer

from fedge.cli._control import Control, operator_command
from fedge.cli.common import JsonOption, command_group, console, fail, print_plain
from fedge.v1 import control_pb2 as pb

__all__ = ["app"]

app = command_group("The fleet of devices.")
token_app = command_group("One-time enrolment tokens.")
app.add_typer(token_app, name="token")


def _ago(unix: float) -> str:
    if unix <= 0:
        return "never"
    seconds = max(0.0, dt.datetime.now(dt.UTC).timestamp() - unix)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@token_app.command("create")
@operator_command
def token_create(
    ttl: Annotated[float, typer.Option(help="Seconds the token stays valid.")] = 3600.0,
    site: Annotated[
        str,
        typer.Option(
            help="A token for a device of this site: it enrols at the site's gateway "
            "(`fedge edge start --coordinator GATEWAY:PORT --token ...`)."
        ),
    ] = "",
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway", help="A token for the gateway of --site (`fedge gateway start --token`)."
        ),
    ] = False,
    control: Control = Control(),
) -> None:
    """Print a one-time token for `fedge edge enroll` (or `fedge gateway start`)."""
    if gateway and not site:
        fail("--gateway needs --site NAME: the site the gateway serves")
    response = control.call(
        lambda stub: stub.CreateEnrollToken(
            pb.CreateEnrollTokenRequest(ttl_seconds=ttl, site=site, gateway=gateway), timeout=30
        ),
    )
    console.print(response.token, soft_wrap=True, highlight=False)


def _device_json(d: pb.Device) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "name": d.name,
        "kind": d.kind or "device",
        "site": d.site,
        "node_id": d.node_id,
        "state": d.state,
        "last_seen_unix": d.last_seen_unix,
        "software": d.version,
        "profile": d.profile,
        "can_train": d.can_train,
        "release_version": d.release_version,
        "release_slot": d.release_slot,
        "data": d.data,
        "privacy_spent": d.privacy_spent if d.HasField("privacy_spent") else None,
        "inference": {
            "requests": d.inference_requests,
            "errors": d.inference_errors,
            "latency_p50_ms": d.latency_p50_ms,
            "latency_p99_ms": d.latency_p99_ms,
        },
        "drifted": d.drifted,
        "drift_psi": d.drift_psi,
        # Noised on the device: one device's figure says little, the fleet's mean does.
        "personalization": (
            {"version": d.personal_version, "gain": d.personal_gain, "reason": d.personal_reason}
            if d.personal_version
            else None
        ),
    }


@app.command("ls")
@operator_command
def ls_command(
    as_json: JsonOption = False,
    control: Control = Control(),
) -> None:
    """List devices (and site gateways with the devices behind each): state, last seen,
    installed release and slot, training, privacy spent."""
    response = control.call(lambda stub: stub.ListDevices(pb.ListDevicesRequest(), timeout=30))
    if as_json:
        console.print_json(json.dumps([_device_json(d) for d in response.devices]))
        return
    if not response.devices:
        console.print(
            "no devices enrolled yet (`fedge fleet token create`, then `fedge edge start`)"
        )
    gateways = [d for d in response.devices if d.kind == "gateway"]
    devices = [d for d in response.devices if d.kind != "gateway"]
    for d in devices:  # the cloud's own devices first
        if not d.site:
            _print_device(d, "")
    for g in gateways:
        behind = [d for d in devices if d.site == g.site]
        up = sum(d.state not in ("offline", "revoked") for d in behind)
        name = f" {g.name}" if g.name and g.name != g.device_id else ""
        print_plain(
            f"site {g.site}: gateway {g.device_id}{name}: {g.state}, seen "
            f"{_ago(g.last_seen_unix)}, {len(behind)} devices ({up} connected), "
            f"fedge {g.version or '?'}"
        )
        for d in behind:
            _print_device(d, "  ")
    known = {g.site for g in gateways}
    for d in devices:  # devices of a site whose gateway was revoked
        if d.site and d.site not in known:
            _print_device(d, f"site {d.site} (no gateway): ")


def _print_device(d: pb.Device, prefix: str) -> None:
    # One line each: no id is ever cut on a narrow terminal.
    release = (
        f"release {d.release_version} (slot {d.release_slot})"
        if d.release_version
        else "no release"
    )
    role = "trains" if d.can_train else "inference only"
    eps = f", ε {d.privacy_spent:.3f}" if d.HasField("privacy_spent") else ""
    profile = f" [{d.profile}]" if d.profile else ""
    print_plain(
        f"{prefix}{d.device_id} {d.name}{profile}: {d.state}, seen {_ago(d.last_seen_unix)}, "
        f"{release}, {role}{eps}, fedge {d.version or '?'}"
        + (f", data {d.data}" if d.data else "")
        + _personal_text(d)
    )


def _personal_text(d: pb.Device) -> str:
    """The device's noised personalisation report, e.g. ", personal (release 3): gain +0.12"."""
    if not d.personal_version:
        return ""
    what = "gain" if d.personal_reason == "gain" else f"kept the release ({d.personal_reason}),"
    return f", personal (release {d.personal_version}): {what} {d.personal_gain:+.2f} (noised)"


@app.command("revoke")
@operator_command
def revoke_command(
    device: Annotated[str, typer.Argument(help="Device id, unique id prefix, or name.")],
    control: Control = Control(),
) -> None:
    """Revoke a device: its next call is refused."""
    response = control.call(
        lambda stub: stub.RevokeDevice(pb.RevokeDeviceRequest(device_id=device), timeout=30)
    )
    console.print(f"revoked {response.device.device_id} ({response.device.name})")


@app.command("drift")
@operator_command
def drift_command(
    as_json: JsonOption = False,
    control: Control = Control(),
) -> None:
    """Each device's drift: DRIFTED or ok, its latest window of predictions against its
    release's reference (or that it has sent no window yet)."""
    fleet, drift = control.call(
        lambda stub: (
            stub.ListDevices(pb.ListDevicesRequest(), timeout=30),
            stub.ListDrift(pb.ListDriftRequest(), timeout=30),
        ),
    )
    windows = {d.device_id: d for d in drift.devices}
    rows = [_drift_row(d.device_id, d.name, windows.get(d.device_id)) for d in _predicting(fleet)]
    listed = {row["device_id"] for row in rows}
    rows += [_drift_row(w.device_id, w.name, w) for w in drift.devices if w.device_id not in listed]
    if as_json:
        console.print_json(json.dumps({"threshold": drift.threshold, "devices": rows}))
        return
    if not rows:
        console.print(
            "no devices enrolled yet (`fedge fleet token create`, then `fedge edge start`)"
        )
    for row in rows:
        print_plain(_drift_line(row, drift.threshold))


def _predicting(fleet: pb.ListDevicesResponse) -> list[pb.Device]:
    """The devices that can answer predictions: not the gateways, not the revoked."""
    return [d for d in fleet.devices if d.kind != "gateway" and d.state != "revoked"]


def _drift_row(device_id: str, name: str, window: pb.DeviceDrift | None) -> dict[str, Any]:
    if window is None:
        return {"device_id": device_id, "name": name, "drifted": None, "window": False}
    return {
        "device_id": device_id,
        "name": name,
        "drifted": window.drifted,
        "window": True,
        "release": window.version,
        "psi_classes": window.psi_classes,
        "psi_inputs": window.psi_inputs,
        "samples": window.samples,
        "updated_unix": window.updated_unix,
        "note": window.note,
        "psi_features": dict(window.psi_features),
    }


def _drift_line(row: dict[str, Any], threshold: float) -> str:
    who = f"{row['device_id']} {row['name']}:"
    if not row["window"]:
        return f"{who} no window yet (it sends one after each --drift-window predictions)"
    return (
        f"{who} {'DRIFTED' if row['drifted'] else 'ok'}, release {row['release']}, PSI classes "
        f"{row['psi_classes']:.3f}, inputs {row['psi_inputs']:.3f} (threshold {threshold:.2f}), "
        f"{row['samples']} predictions, {_ago(row['updated_unix'])}"
        + _top_features(row["psi_features"])
        + (f"; {row['note']}" if row["note"] else "")
    )


def _top_features(psi_features: dict[str, float], count: int = 3) -> str:
    """The features that moved most: ``; features age 0.41, chol 0.12, sex=F 0.05``."""
    top = sorted(psi_features.items(), key=lambda item: -item[1])[:count]
    return "; features " + ", ".join(f"{k} {v:.2f}" for k, v in top) if top else ""
