"""Charts written to files: matplotlib drawing without a display, imported only when drawn.

fedge draws its charts (a run's accuracy, a release's sizes and latencies, privacy against
accuracy) into PNG files beside its reports, on machines that may have no display: pyplot is
taken with the ``Agg`` backend, and a figure is closed once saved so a long process does not
keep every figure it drew.
"""

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["pyplot", "save_figure", "write_markdown_report"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, drawing to files only (the ``Agg`` backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def write_markdown_report(path: Path, lines: list[str], *, chart: str | None, caption: str) -> Path:
    """Write the Markdown ``lines`` to ``path``, ending with the image ``chart`` (a path
    relative to ``path``) under ``caption`` when there is one."""
    if chart:
        lines = [*lines, "", f"![{caption}]({chart})"]
    path.write_text("\n".join(lines) + "\n")
    return path


def save_figure(
    fig: "Figure", path: Path, *, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay out ``fig`` (within ``rect`` of the figure, when given), write it to ``path`` as a
    100-dpi PNG and close it."""
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path
