"""The privacy report of a finished run: per-round ε next to accuracy, and ``privacy.png``."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.charts import pyplot, save_figure
from fedge.errors import FedgeError

__all__ = ["PrivacyReport", "RoundPrivacy", "privacy_report", "write_privacy_plot"]


@dataclass(frozen=True)
class RoundPrivacy:
    """One round: accuracy, central ε so far, the largest device ε, refusals."""

    round: int
    accuracy: float
    epsilon: float | None
    device_epsilon_max: float | None
    sampled: int
    refused: int


@dataclass(frozen=True)
class PrivacyReport:
    """The run-level privacy notes and the rounds."""

    notes: dict[str, Any]
    rounds: list[RoundPrivacy]
    final_accuracy: float
    stopped_reason: str | None

    def summary_lines(self) -> list[str]:
        """Human-readable lines: what was promised, what was spent, how it ended."""
        lines = [f"delta {self.notes.get('delta')}, accountant {self.notes.get('accountant')}"]
        lines.append(f"noise: {self.notes.get('noise_source')}")
        central = self.notes.get("central")
        if central:
            lines.append(
                f"central (client-level): z {central['noise_multiplier']:.4g}, clip "
                f"{central['clip']:g}{' adaptive' if central['adaptive_clip'] else ''}, Poisson "
                f"q {central['sample_rate']:g} of {central['population']} clients, "
                f"{central['rounds_accounted']} rounds accounted -> epsilon "
                f"{central['epsilon']:.4f}"
            )
        local = self.notes.get("local")
        if local:
            spent = [r.device_epsilon_max for r in self.rounds if r.device_epsilon_max is not None]
            lines.append(
                f"local (record-level DP-SGD): budget {local['device_budget']} per device, clip "
                f"{local['clip']:g}; largest device epsilon "
                f"{max(spent) if spent else 0.0:.4f}; ledgers in {local['state_root']}"
            )
        lines.append(f"final accuracy {self.final_accuracy:.4f}")
        if self.stopped_reason:
            lines.append(f"stopped early: {self.stopped_reason}")
        return lines


def privacy_report(results: dict[str, Any]) -> PrivacyReport:
    """The privacy report of a ``results.json`` document."""
    notes = results.get("privacy")
    if not notes:
        raise FedgeError("this run used no differential privacy (no 'privacy' in results.json)")
    rounds = [
        RoundPrivacy(
            round=int(r["round"]),
            accuracy=float(r["accuracy"]),
            epsilon=_float(r.get("epsilon")),
            device_epsilon_max=_float(r.get("device_epsilon_max")),
            sampled=int(r.get("sampled", 0)),
            refused=sum("privacy budget" in str(d.get("reason", "")) for d in r.get("dropped", [])),
        )
        for r in results.get("rounds", [])
    ]
    final = results.get("final", {})
    return PrivacyReport(
        notes, rounds, float(final.get("accuracy") or 0.0), final.get("stopped_reason")
    )


def write_privacy_plot(out_dir: Path, rounds: list[dict[str, Any]]) -> Path | None:
    """``privacy.png``: test accuracy against ε spent (central, else the largest device ε)."""
    points = []
    for r in rounds:
        eps = _float(r.get("epsilon"))
        if eps is None:
            eps = _float(r.get("device_epsilon_max"))
        if eps is not None:
            points.append((eps, float(r["accuracy"])))
    if not points:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("epsilon spent")
    ax.set_ylabel("test accuracy")
    ax.set_title("privacy-utility: accuracy vs epsilon")
    ax.grid(alpha=0.3)
    path = save_figure(fig, Path(out_dir) / "privacy.png")
    return path


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
