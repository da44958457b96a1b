"""The one named logger of fedge; library code logs here and never prints."""

import logging

__all__ = ["logger"]

logger = logging.getLogger("fedge")
logger.addHandler(logging.NullHandler())
