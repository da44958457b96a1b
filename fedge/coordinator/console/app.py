"""The console's HTTP app: pages (static files), a JSON API, login, all behind one gate.

Every read and every action calls the typed control service that the gRPC control servicer
delegates to (:class:`~fedge.coordinator.control.ControlService`), so a stop, promote, rollback
or rollout pause from the console is the very code ``fedge run stop`` / ``fedge release ...``
run, and its errors keep their meaning: a :class:`~fedge.errors.FedgeError` becomes the HTTP
status of its gRPC status. Actions are ``POST`` with a custom header (a cross-site form cannot
send one), and are recorded as events naming the operator of the session.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fedge.coordinator.console.sessions import ConsoleSessions
from fedge.coordinator.control import ControlService
from fedge.coordinator.state import State
from fedge.errors import ConfigError, FedgeError
from fedge.log import logger
from fedge.protocol.serde import message_to_json

__all__ = ["ACTION_HEADER", "SESSION_COOKIE", "create_app"]

SESSION_COOKIE = "fedge_console"
ACTION_HEADER = "x-fedge-action"
LOOPBACK_OPERATOR = "console (loopback)"
_PAGES = ("/fleet", "/runs", "/releases", "/drift")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}
_LOGIN_NEEDED = """<!doctype html><html><head><meta charset="utf-8"><title>fedge console</title>
<link rel="stylesheet" href="/static/console.css"></head><body><main class="login">
<h1>fedge console</h1><p>This console needs an operator login. On a machine with the operator
credential, run <code>fedge console</code> and open the one-time URL it prints.</p>
</main></body></html>"""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Gate(BaseHTTPMiddleware):
    """No page, file or API without a session, unless the console is loopback-only."""

    def __init__(self, app: Any, *, sessions: ConsoleSessions, login_required: bool) -> None:
        super().__init__(app)
        self._sessions = sessions
        self._login_required = login_required

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path == "/login":
            return await call_next(request)
        operator = LOOPBACK_OPERATOR
        if not self._login_required and request.url.hostname not in _LOOPBACK_HOSTS:
            # A loopback console answers loopback names only: a web page that rebinds its own
            # name to 127.0.0.1 must not read the fleet through the operator's browser.
            return _error(403, "a loopback console answers at 127.0.0.1 or localhost only")
        if self._login_required:
            session = self._sessions.session(request.cookies.get(SESSION_COOKIE, ""))
            if session is None:
                if path.startswith("/api/"):
                    return _error(401, "no console session: open the URL `fedge console` prints")
                if path == "/static/console.css":
                    return await call_next(request)  # the login page's own style
                return HTMLResponse(_LOGIN_NEEDED, status_code=401)
            operator = session.operator
        if request.method == "POST" and request.headers.get(ACTION_HEADER) != "1":
            return _error(403, f"console actions need the {ACTION_HEADER} header")
        request.state.operator = operator
        return await call_next(request)


def create_app(
    *,
    control: ControlService,
    state: State,
    sessions: ConsoleSessions,
    login_required: bool,
    secure_cookie: bool,
) -> Starlette:
    """The console app over ``control`` (the coordinator's control service)."""
    static = resources.files("fedge.coordinator.console") / "static"
    index = str(static / "index.html")

    def api(handler: Callable[[Request], Message | dict[str, Any]]) -> Callable[..., Response]:
        def endpoint(request: Request) -> Response:
            try:
                result = handler(request)
            except FedgeError as err:
                return _error(_HTTP_STATUS.get(err.status, 500), str(err))
            except (ValueError, KeyError) as err:
                return _error(400, f"bad request: {err}")
            body = message_to_json(result) if isinstance(result, Message) else result
            return JSONResponse(body, headers={"cache-control": "no-store"})

        return endpoint

    def action(
        path: str, what: Callable[[Request], str], handler: Callable[[Request], Message]
    ) -> Route:
        """A POST route that does ``handler`` and records, as an event, who did ``what``."""

        def run(request: Request) -> Message:
            result = handler(request)
            state.add_event("console", f"{request.state.operator}: {what(request)}")
            return result

        return Route(path, api(run), methods=["POST"])

    def number(request: Request, name: str) -> int:
        text = request.path_params[name]
        if not str(text).isdigit():
            raise ConfigError(name, text, "must be a whole number")
        return int(text)

    def body(request: Request) -> dict[str, Any]:
        raw = request.state.body
        if not raw:
            return {}
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("the body must be a JSON object")
        return value

    def percent_of(request: Request) -> int:
        value = body(request).get("percent")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("percent", value, "must be an integer between 0 and 100")
        return value

    def page(request: Request) -> Response:
        return FileResponse(index, headers={"cache-control": "no-store"})

    def login(request: Request) -> Response:
        opened = sessions.redeem(request.query_params.get("token", ""))
        if opened is None:
            logger.warning("console login refused: an unknown, used or expired token")
            return HTMLResponse(
                _LOGIN_NEEDED.replace("needs an operator login", "login link is used or expired"),
                status_code=401,
            )
        session_id, session = opened
        response = RedirectResponse("/fleet", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(sessions.session_ttl),
            httponly=True,
            secure=secure_cookie,
            samesite="strict",
        )
        state.add_event("console", f"{session.operator} opened a console session")
        return response

    def rollout_route(verb: str, method: Callable[[int], Message]) -> Route:
        def describe(r: Request) -> str:
            return f"{verb} the rollout of release {r.path_params['version']}"

        def run(r: Request) -> Message:
            return method(number(r, "version"))

        return action(f"/api/releases/{{version}}/{verb}", describe, run)

    def who(request: Request) -> dict[str, Any]:
        return {"operator": request.state.operator, "login_required": login_required}

    routes = [
        Route("/", lambda request: RedirectResponse("/fleet")),
        Route("/login", login),
        *[Route(p, page) for p in _PAGES],
        Route("/runs/{run_id}", page),
        Route("/releases/{version}", page),
        Route("/api/session", api(who)),
        Route("/api/fleet", api(lambda r: control.list_devices())),
        Route("/api/runs", api(lambda r: control.list_runs())),
        Route("/api/runs/{run_id}", api(lambda r: control.get_run(number(r, "run_id")))),
        action(
            "/api/runs/{run_id}/stop",
            lambda r: f"stop run {r.path_params['run_id']}",
            lambda r: control.stop_run(number(r, "run_id")),
        ),
        Route("/api/releases", api(lambda r: control.list_releases())),
        Route(
            "/api/releases/{version}",
            api(lambda r: control.release_status(number(r, "version"))),
        ),
        action(
            "/api/releases/{version}/promote",
            lambda r: f"promote release {r.path_params['version']} to {percent_of(r)}%",
            lambda r: control.promote_release(number(r, "version"), percent=percent_of(r)),
        ),
        action(
            "/api/releases/{version}/rollback",
            lambda r: f"roll back release {r.path_params['version']}",
            lambda r: control.rollback_release(number(r, "version")),
        ),
        *[
            rollout_route(verb, method)
            for verb, method in (
                ("pause", control.pause_rollout),
                ("resume", control.resume_rollout),
                ("abort", control.abort_rollout),
            )
        ],
        Route("/api/drift", api(lambda r: control.list_drift())),
        Route("/healthz", lambda request: PlainTextResponse("ok")),
        Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_BodyReader),
            Middleware(_Gate, sessions=sessions, login_required=login_required),
        ],
    )
    return app


class _BodyReader(BaseHTTPMiddleware):
    """Read a POST body up front (endpoints are synchronous and run in a thread)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request.state.body = await request.body() if request.method == "POST" else b""
        return await call_next(request)
