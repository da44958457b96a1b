"""The one named logger of fedge; library code logs here and never prints.

Flower logs to its own ``flwr`` logger through a coloured console handler of its own. In a fedge
process (:func:`route_flower_logs`) none of that reaches the console as Flower's: its INFO lines
are dropped (fedge logs its own rounds), and each of its warnings and errors that matters to a
fedge user comes out once, as a fedge line.
"""

import logging
import threading

__all__ = ["FLOWER_LOGGER_NAME", "logger", "route_flower_logs"]

logger = logging.getLogger("fedge")
logger.addHandler(logging.NullHandler())

FLOWER_LOGGER_NAME = "flwr"

# Flower warnings that say nothing to a fedge user. fedge evaluates the global model centrally,
# so its strategies turn federated evaluation off on purpose, and Flower warns on every run.
_MEANINGLESS_FLOWER_WARNINGS = ("fraction_evaluate is set to 0.0",)
# A long-running coordinator must not remember every distinct message it has ever passed on.
_MAX_REMEMBERED = 1000


class _FlowerToFedge(logging.Filter):
    """Stops every record of Flower's logger; passes its warnings on to fedge's, each once."""

    def __init__(self) -> None:
        super().__init__()
        self._passed_on: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            message = record.getMessage().strip()
            if not message.startswith(_MEANINGLESS_FLOWER_WARNINGS) and self._first(message):
                logger.log(record.levelno, "Flower: %s", message)
        return False

    def _first(self, message: str) -> bool:
        with self._lock:
            if message in self._passed_on:
                return False
            if len(self._passed_on) >= _MAX_REMEMBERED:
                self._passed_on.clear()
            self._passed_on.add(message)
            return True


def route_flower_logs() -> None:
    """Let fedge's log speak for fedge: Flower's records go through :data:`logger` (once each,
    warnings and errors only) instead of Flower's console handler. Idempotent."""
    flower = logging.getLogger(FLOWER_LOGGER_NAME)
    if not any(isinstance(f, _FlowerToFedge) for f in flower.filters):
        flower.addFilter(_FlowerToFedge())
    flower.propagate = False
