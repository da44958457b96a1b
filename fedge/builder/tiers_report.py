"""The per-profile release report for people: ``report.md`` and ``report.png``.

The chart has one row per profile: test accuracy against file size and against batch-1 p99,
every candidate the profile could run (colour: engine; circle fp32, square int8; hollow: below
the agreement bar), the profile's limits as dashed lines, the teacher's accuracy as a dotted
line, and the chosen artifact as a red star.
"""

from pathlib import Path

from fedge.builder.tier_results import CandidateRow, ProfileRelease
from fedge.charts import pyplot, save_figure, write_markdown_report
from fedge.inference.profiles import DeviceProfile

__all__ = ["write_tier_chart", "write_tier_markdown"]

_COLORS = {"onnxruntime": "#1f77b4", "openvino": "#2ca02c", "litert": "#ff7f0e"}
_MARKERS = {"fp32": "o", "int8": "s"}


def _rows_for(release: ProfileRelease, profile: DeviceProfile) -> list[CandidateRow]:
    return [
        r
        for r in release.candidates
        if r.engine in profile.engines and r.precision in profile.precisions
    ]


def write_tier_markdown(path: Path, release: ProfileRelease, *, chart: str | None) -> Path:
    """Write ``report.md``: per profile its budget, its choice and every candidate's figures."""
    min_agreement = float(release.settings["min_agreement"])
    teacher = release.teacher
    lines = [
        f"# fedge per-profile release: {len(release.profiles)} profile(s) from "
        f"{teacher['architecture']}",
        "",
        f"Teacher `{teacher['architecture']}` ({teacher['parameters']:,} parameters), test "
        f"accuracy {100 * teacher['accuracy']:.2f}% on {release.settings['test_samples']} "
        f"samples of `{release.dataset}`. Every artifact was measured in its own process at "
        f"batch 1 on one thread ({release.settings['latency_runs']} timed runs); agreement is "
        f"top-1 agreement with its torch model on the test set (bar "
        f"{100 * min_agreement:.1f}%).",
        "",
        f"**{release.summary()}.**",
    ]
    for name, profile in release.profiles.items():
        chosen = release.chosen_row(name)
        lines += [
            "",
            f"## {name} ({profile.tier}; engines {', '.join(profile.engines)})",
            "",
            f"Budget: {profile.budget.describe()}. Chosen: **{chosen.label}** "
            f"(`{release.artifact_path(name).relative_to(release.out_dir)}`, sha256 "
            f"`{chosen.sha256[:16]}…`).",
            "",
            "| candidate | params | size | p50 ms | p99 ms | memory MB | accuracy | agreement "
            "| fits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in _rows_for(release, profile):
            misses = row.misses(profile, min_agreement)
            verdict = "**chosen**" if row.id == chosen.id else ("yes" if not misses else "")
            if misses:
                verdict = "; ".join(m.field for m in misses)
            lines.append(
                f"| {row.label} | {row.parameters:,} | {_size(row)} | {_num(row.latency_p50_ms)} "
                f"| {_num(row.latency_p99_ms)} | {_num(row.peak_memory_mb, 1)} "
                f"| {_pct(row.accuracy)} | {_pct(row.agreement)} | {verdict} |"
            )
    others = [r for r in release.candidates if r.status != "measured"]
    if others:
        lines += ["", "## Not measured", ""]
        lines += [f"- {r.label}: {r.status}, {r.note}" for r in others]
    caption = "accuracy against size and latency, per profile"
    return write_markdown_report(path, lines, chart=chart, caption=caption)


def write_tier_chart(path: Path, release: ProfileRelease) -> Path:
    """Write ``report.png`` (see the module docstring)."""
    plt = pyplot()

    min_agreement = float(release.settings["min_agreement"])
    names = list(release.profiles)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.8 * len(names)), squeeze=False)
    teacher_accuracy = 100 * float(release.teacher["accuracy"])
    for (size_ax, p99_ax), name in zip(axes, names, strict=True):
        profile = release.profiles[name]
        rows = [r for r in _rows_for(release, profile) if r.status == "measured"]
        chosen = release.chosen_row(name)
        for ax, key, limit, unit in (
            (size_ax, "size", profile.budget.max_model_bytes / 1024, "file size (KiB, log)"),
            (p99_ax, "p99", profile.budget.p99_ms, "p99 latency (ms, batch 1, 1 thread, log)"),
        ):
            for row in rows:
                x = row.size_bytes / 1024 if key == "size" else float(row.latency_p99_ms or 0)
                y = 100 * float(row.accuracy or 0)
                agrees = float(row.agreement or 0) >= min_agreement
                color = _COLORS.get(row.engine, "#7f7f7f")
                ax.scatter(
                    [x],
                    [y],
                    marker=_MARKERS.get(row.precision, "o"),
                    s=36,
                    facecolors=color if agrees else "none",
                    edgecolors=color,
                    zorder=3,
                )
                if row.id == chosen.id:
                    ax.scatter([x], [y], marker="*", s=260, c="#d62728", zorder=4)
                    ax.annotate(
                        row.label, (x, y), xytext=(6, -12), textcoords="offset points", fontsize=7
                    )
            ax.axvline(limit, color="#d62728", linestyle="--", linewidth=1)
            ax.axhline(teacher_accuracy, color="#7f7f7f", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            ax.set_xlabel(unit, fontsize=8)
            ax.set_ylabel("test accuracy (%)", fontsize=8)
            ax.tick_params(labelsize=7)
            accuracies = [100 * float(r.accuracy or 0) for r in rows] or [teacher_accuracy]
            low = min(min(accuracies), teacher_accuracy)
            ax.set_ylim(max(0.0, low - 2.0), min(100.5, max(*accuracies, teacher_accuracy) + 1))
        size_ax.set_title(
            f"{name}: {profile.budget.describe()}; chosen {chosen.label}", fontsize=9, loc="left"
        )
    handles = [
        plt.Line2D([], [], linestyle="", marker="o", color=c, label=engine)
        for engine, c in _COLORS.items()
    ]
    handles += [
        plt.Line2D([], [], linestyle="", marker=m, color="#333333", label=p)
        for p, m in _MARKERS.items()
    ]
    handles.append(plt.Line2D([], [], linestyle="", marker="*", color="#d62728", label="chosen"))
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles))
    return save_figure(fig, path, rect=(0, 0, 1, 0.97))


def _size(row: CandidateRow) -> str:
    return f"{row.size_bytes / 1024:,.1f} KiB"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"
