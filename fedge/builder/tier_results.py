"""What a per-profile build measured and chose: :class:`CandidateRow` and :class:`ProfileRelease`.

:mod:`fedge.builder.tiers` builds them; :mod:`fedge.builder.tiers_report` draws and tabulates
them; ``report.json`` is :meth:`ProfileRelease.to_dict`.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fedge.builder.artifact import PROFILES_DIR
from fedge.builder.targets import get_target
from fedge.inference.profiles import BudgetMiss, DeviceProfile

__all__ = [
    "FORMAT_VERSION",
    "TIER_REPORT_FORMAT",
    "CandidateRow",
    "ProfileRelease",
    "build_machine",
]

TIER_REPORT_FORMAT = "fedge-tier-report"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CandidateRow:
    """One (model, engine, precision) artifact and what it measured.

    ``status`` is ``measured``, ``skipped`` (cannot fit any profile asking for it: ``size_bytes``
    is then the lower bound from its weights) or ``failed`` (``note`` says why).
    """

    id: str
    model: str
    architecture: str
    source: str
    engine: str
    precision: str
    parameters: int
    status: str
    note: str = ""
    size_bytes: int = 0
    sha256: str = ""
    accuracy: float | None = None
    agreement: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    peak_memory_mb: float | None = None
    load_ms: float | None = None

    @property
    def label(self) -> str:
        """``student-tiny int8 on litert``."""
        return f"{self.model} {self.precision} on {self.engine}"

    def misses(self, profile: DeviceProfile, min_agreement: float) -> list[BudgetMiss]:
        """What keeps this candidate from ``profile`` (empty: it fits and may be released)."""
        if self.status == "skipped":
            return [BudgetMiss("max-model-bytes", self.size_bytes, profile.budget.max_model_bytes)]
        if self.status != "measured":
            return [BudgetMiss("failed", 1.0, 0.0)]
        assert self.accuracy is not None and self.agreement is not None
        found = profile.budget.misses(
            size_bytes=self.size_bytes,
            p99_ms=float(self.latency_p99_ms or 0.0),
            peak_memory_mb=float(self.peak_memory_mb or 0.0),
            accuracy=self.accuracy,
        )
        if self.agreement < min_agreement:
            found.append(BudgetMiss("agreement", self.agreement, min_agreement))
        return found


@dataclass(frozen=True)
class ProfileRelease:
    """What :func:`build_profile_release` built: the candidates and each profile's artifact."""

    out_dir: Path
    candidates: list[CandidateRow]
    chosen: dict[str, str]
    teacher: dict[str, Any]
    profiles: dict[str, DeviceProfile]
    dataset: str
    num_classes: int
    input_shape: list[int | str]
    settings: dict[str, Any]
    build_seconds: float
    created_at: str
    #: Each candidate model: architecture, source, parameters and how it was made.
    model_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The torch model each candidate came from, by model id (in memory only, not written).
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)
    #: How a device reads raw inputs and names classes (see ``raw_input_spec``), per artifact.
    raw_input: dict[str, Any] = field(default_factory=dict)

    def candidate(self, candidate_id: str) -> CandidateRow:
        """The candidate with ``candidate_id``."""
        for row in self.candidates:
            if row.id == candidate_id:
                return row
        raise KeyError(candidate_id)

    def chosen_row(self, profile: str) -> CandidateRow:
        """The candidate chosen for ``profile``."""
        return self.candidate(self.chosen[profile])

    def artifact_path(self, profile: str) -> Path:
        """Where ``profile``'s artifact is."""
        row = self.chosen_row(profile)
        return self.out_dir / PROFILES_DIR / profile / f"model{get_target(row.engine).extension}"

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` document."""
        return {
            "format": TIER_REPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "input_shape": self.input_shape,
            "teacher": self.teacher,
            "profiles": {
                name: {
                    **profile.to_dict(),
                    "chosen": self.chosen[name],
                    "file": str(self.artifact_path(name).relative_to(self.out_dir)),
                }
                for name, profile in self.profiles.items()
            },
            "models": self.model_details,
            "candidates": [_persisted(row) for row in self.candidates],
            "settings": self.settings,
            "measurement": {
                "machine": build_machine(),
                "latency": "batch 1, one thread, one fresh process per artifact",
                "peak_memory": "peak resident memory of the session above the process "
                "with its engine imported",
                "agreement": "top-1 agreement with the torch model on the test set",
            },
            "build_seconds": self.build_seconds,
        }

    def summary(self) -> str:
        """One line: each profile's choice."""
        parts = []
        for name in self.profiles:
            row = self.chosen_row(name)
            parts.append(
                f"{name}: {row.label}, {row.size_bytes / 1024:.1f} KiB, p99 "
                f"{float(row.latency_p99_ms or 0):.3f} ms, {100 * float(row.accuracy or 0):.2f}%"
            )
        teacher = 100 * float(self.teacher["accuracy"])
        return f"{'; '.join(parts)} (teacher {teacher:.2f}%)"


def _persisted(row: CandidateRow) -> dict[str, Any]:
    """A candidate row as ``report.json`` stores it: the engine under its persisted key
    ``runtime``, as in ``artifact.json`` and the signed manifest."""
    return {("runtime" if key == "engine" else key): value for key, value in asdict(row).items()}


def build_machine() -> str:
    """The build machine, as the figures' provenance (a device measures itself again)."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPUs"
