"""The web console of an in-process coordinator: a non-loopback console refuses every page and
API call without a login, `fedge console` mints a one-time URL through the control service, and
its session opens the pages in a real (headless) Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fedge.cli.console import reachable_url
from fedge.cli.main import app
from fedge.coordinator.console.app import ACTION_HEADER, SESSION_COOKIE
from fedge.edge.hub_client import GrpcHubClient
from fedge.release.rollout import RolloutPolicy
from fedge.release.testing import publish_linear
from fedge.v1 import control_pb2, control_pb2_grpc, fleet_pb2

from .conftest import Fleet, start_fleet

runner = CliRunner()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator whose console listens on every interface: TLS and a login required."""
    with closing(start_fleet(tmp_path, console_address="0.0.0.0:0")) as f:
        yield f


def _base(fleet: Fleet) -> str:
    return f"https://127.0.0.1:{fleet.coordinator.ports['console']}"


def _client(fleet: Fleet) -> httpx.Client:
    # The coordinator's CA verifies the console's certificate (the server certificate).
    ca = str(fleet.root / "certs" / "operator" / "ca.pem")
    return httpx.Client(verify=ca, timeout=10, follow_redirects=False)


def _login_url(fleet: Fleet) -> str:
    result = runner.invoke(app, ["console", *fleet.operator_args])
    assert result.exit_code == 0, result.output
    url = result.output.strip()
    assert url.startswith("https://127.0.0.1:") and "/login?token=" in url, url
    return url


def test_a_non_loopback_console_refuses_everything_without_a_login(remote: Fleet) -> None:
    base = _base(remote)
    with _client(remote) as client:
        for path in ("/fleet", "/runs/1", "/releases", "/static/console.js"):
            assert client.get(base + path).status_code == 401, path
        api = client.get(base + "/api/fleet")
        assert api.status_code == 401 and "fedge console" in api.json()["error"]
        stop = client.post(base + "/api/runs/1/stop", headers={ACTION_HEADER: "1"})
        assert stop.status_code == 401
        # A guessed cookie is no session.
        client.cookies.set(SESSION_COOKIE, "guessed")
        assert client.get(base + "/api/runs").status_code == 401
    # Plain HTTP on the TLS port gets no answer at all.
    with pytest.raises(httpx.HTTPError):
        httpx.get(base.replace("https", "http") + "/api/fleet", timeout=5)


def test_fedge_console_mints_a_one_time_login(remote: Fleet) -> None:
    remote.enroll("camera-1")
    url = _login_url(remote)
    base = _base(remote)
    with _client(remote) as client:
        opened = client.get(url)
        assert opened.status_code == 303 and opened.headers["location"] == "/fleet"
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        fleet = client.get(base + "/api/fleet")
        assert fleet.status_code == 200
        assert [d["name"] for d in fleet.json()["devices"]] == ["camera-1"]
        assert client.get(base + "/api/session").json()["operator"] == "operator"
        # An action needs the console's header (a cross-site form cannot send it).
        assert client.post(base + "/api/runs/1/stop").status_code == 403
        missing = client.post(base + "/api/runs/7/stop", headers={ACTION_HEADER: "1"})
        assert missing.status_code == 404 and missing.json()["error"] == "no run 7"
    with _client(remote) as other:
        assert other.get(url).status_code == 401  # the link works once
        assert other.get(base + "/api/fleet").status_code == 401
    events = [e.message for e in remote.coordinator.state.events()]
    assert "operator asked for a console login URL" in events
    assert "operator opened a console session" in events


def test_console_login_needs_the_operator_certificate(remote: Fleet) -> None:
    device = remote.enroll("dev")
    stub = control_pb2_grpc.ControlServiceStub(remote.channel(device.tls()))
    with pytest.raises(Exception, match="PERMISSION_DENIED"):
        stub.CreateConsoleLogin(control_pb2.CreateConsoleLoginRequest(), timeout=10)


def test_fedge_console_without_a_console_says_how_to_add_one(fleet: Fleet) -> None:
    result = runner.invoke(app, ["console", *fleet.operator_args])
    assert result.exit_code == 2
    assert "serves no console" in result.output and "Traceback" not in result.output


def test_wildcard_hosts_become_the_coordinators_host() -> None:
    assert reachable_url("https://0.0.0.0:7480/login?token=t", "10.0.0.5:7443") == (
        "https://10.0.0.5:7480/login?token=t"
    )
    assert (
        reachable_url("https://[::]:7480/x", "edge.example:7443") == "https://edge.example:7480/x"
    )
    assert reachable_url("https://console.example/x", "10.0.0.5:7443") == (
        "https://console.example/x"
    )


def test_pages_render_the_fleet_and_a_release_in_chromium(
    remote: Fleet, chromium: Any, tmp_path: Path
) -> None:
    identity = remote.enroll("camera-7")
    remote.fleet_stub(identity).Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
    signed = publish_linear(remote.coordinator.releases, tmp_path, seed=2, percent=40)
    version = signed.manifest.version
    context = chromium.new_context(ignore_https_errors=True)  # the coordinator's own CA
    page = context.new_page()
    try:
        page.goto(_base(remote) + "/fleet")
        assert "needs an operator login" in page.content()
        page.goto(_login_url(remote))
        page.wait_for_selector("#fleet tbody tr[data-device]")
        row = page.inner_text(f'tr[data-device="{identity.device_id}"]')
        assert "camera-7" in row and "none" in row
        page.screenshot(path=str(tmp_path / "console-fleet-login.png"), full_page=True)
        page.goto(_base(remote) + f"/releases/{version}")
        page.wait_for_selector("#percent")
        assert page.inner_text("#percent") == "40%"
        # Promote from the console: the release store (the CLI's very code path) changes.
        page.fill("#promote-percent", "100")
        page.click("#promote")
        page.wait_for_function("document.querySelector('#percent').innerText === '100%'")
        assert remote.coordinator.releases.get(version).percent == 100
        page.screenshot(path=str(tmp_path / "console-release.png"), full_page=True)
    finally:
        context.close()
    events = [e.message for e in remote.coordinator.state.events()]
    assert f"operator: promote release {version} to 100%" in events


def test_a_gated_rollout_is_paused_and_aborted_from_the_console(
    remote: Fleet, chromium: Any, tmp_path: Path
) -> None:
    store = remote.coordinator.releases
    good = publish_linear(store, tmp_path, seed=1, percent=100)
    candidate = publish_linear(store, tmp_path, seed=2, percent=25)
    version = candidate.manifest.version
    store.rollouts.create(version, RolloutPolicy(stages=(25, 100), stage_wait=0))
    for name in ("a", "b", "c", "d"):  # each asks the hub once, then goes quiet: the canary
        identity = remote.enroll(name)  # is offered the candidate and never reports, so the
        hub = GrpcHubClient(remote.channel(identity.tls()))  # first stage never completes
        hub.get_manifest(device_id=identity.device_id, profile="cpu-small", installed_version=0)
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(_login_url(remote))
        page.goto(_base(remote) + f"/releases/{version}")
        page.wait_for_selector("#pause:not([disabled])")
        assert "Stage 1 of 2" in page.inner_text("main")
        page.click("#pause")
        page.wait_for_selector("#resume:not([disabled])")
        assert store.rollouts.require(version).state == "paused"
        page.click("#abort")
        page.wait_for_selector("#rollout-reason")
        reason = page.inner_text("#rollout-reason")
        assert "aborted by the operator" in reason
        assert f"rolled back with release {version + 1}" in reason
        page.screenshot(path=str(tmp_path / "console-rollout-aborted.png"), full_page=True)
    finally:
        context.close()
    assert store.rollouts.require(version).state == "aborted"
    assert store.get(version).withdrawn
    rollback = store.get(version + 1)
    assert rollback.rollback_of == version and rollback.sha256 == good.manifest.sha256


def test_a_loopback_console_answers_loopback_names_only(tmp_path: Path) -> None:
    local = start_fleet(tmp_path, console_address="127.0.0.1:0")
    try:
        base = f"http://127.0.0.1:{local.coordinator.ports['console']}"
        assert httpx.get(base + "/api/fleet", timeout=10).status_code == 200
        rebound = httpx.get(base + "/api/fleet", headers={"host": "evil.example"}, timeout=10)
        assert rebound.status_code == 403 and "loopback" in rebound.json()["error"]
    finally:
        local.close()
