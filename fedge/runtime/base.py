"""What every fedge ``Grid`` shares: the run it serves and how it creates messages."""

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

__all__ = ["RunGrid"]


class RunGrid(Grid):
    """A ``Grid`` bound to one run; subclasses move the messages."""

    def __init__(self, run_id: int) -> None:
        self._run = Run.create_empty(run_id)

    def set_run(self, run: Run) -> None:
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid operates in."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message to ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)
