"""The coordinator's web console: fleet, runs and releases in a browser, served from the package.

A Starlette app (:mod:`.app`) on its own port (``[console]`` in ``coordinator.toml``), run by
uvicorn in a thread of the coordinator (:mod:`.server`). Its pages are static files shipped as
package data (no CDN); they poll a JSON API whose every read and action goes through the
control service's own handlers, so the console and the CLI share one implementation. A
loopback console needs no login; any other address serves TLS with the coordinator's server
certificate and opens a session only from a one-time login URL (:mod:`.sessions`) that
``fedge console`` asks the control service for with the operator credential.
"""

from fedge.coordinator.console.server import ConsoleServer
from fedge.coordinator.console.sessions import ConsoleSessions

__all__ = ["ConsoleServer", "ConsoleSessions"]
