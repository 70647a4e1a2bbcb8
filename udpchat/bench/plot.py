"""The chart of `udpchat bench --plot FILE.png` (needs matplotlib: `INSTALL_COMMAND`).

Four panels from the JSON document: throughput and round trip as ratios to the raw
baseline (both placements, with the targets as marks), the CPU-bound rates, and the
idle memory of a real chat. matplotlib is imported only here and only when a chart is
asked for, so the benchmark itself needs nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util
from typing import Any

INSTALL_COMMAND = ".venv/bin/pip install matplotlib"
"""How to get matplotlib into the .venv that ./scripts/chat and ./scripts/test make; the
README names the same command."""


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def check_available() -> None:
    """PlotUnavailable with the one line that says how to get matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(f"--plot needs matplotlib; install it with: {INSTALL_COMMAND}")


def _median(cell: dict[str, Any] | None, field: str) -> float:
    summary = None if cell is None else cell.get(field)
    return 0.0 if summary is None else float(summary["median"])


def _spread(cell: dict[str, Any] | None, field: str) -> tuple[float, float]:
    summary = None if cell is None else cell.get(field)
    if summary is None:
        return 0.0, 0.0
    return summary["median"] - summary["min"], summary["max"] - summary["median"]


def draw(document: dict[str, Any], path: str) -> None:
    """Write the chart of `document` to `path` (PNG)."""
    check_available()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    results = document["results"]
    models: list[str] = list(document["settings"]["models"])
    placements: list[str] = list(document["placements"])
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    width = 0.8 / max(1, len(placements))
    limits = {t["target"] + t["model"]: t["limit"] for t in document["targets"]}
    for ax, scenario, title in (
        (axes[0][0], "throughput", "Throughput, x raw (higher is better)"),
        (axes[0][1], "latency", "Round trip p50, x raw (lower is better)"),
    ):
        for index, placement in enumerate(placements):
            cells = results.get(scenario, {}).get(placement, {})
            positions = [
                m + (index - (len(placements) - 1) / 2) * width for m in range(len(models))
            ]
            values = [_median(cells.get(model), "ratio") for model in models]
            errors = list(
                zip(*(_spread(cells.get(model), "ratio") for model in models), strict=True)
            )
            ax.bar(positions, values, width, yerr=errors, capsize=3, label=f"{placement} core(s)")
            prefix = "throughput" if scenario == "throughput" else "RTT p50"
            where = "same core" if placement == "same" else "split cores"
            for position, model in zip(positions, models, strict=True):
                limit = limits.get(f"{prefix}, {where}, x raw{model}")
                if limit is not None:
                    ax.plot([position - width / 2, position + width / 2], [limit] * 2, "k--")
        ax.set_xticks(range(len(models)), models)
        ax.set_title(title + "; dashes: targets")
        ax.legend()
    cpu = results.get("cpu_bound", {}).get("any", {})
    subjects = ["baseline", *models]
    axes[1][0].bar(
        subjects,
        [_median(cpu.get(s), "messages_per_s") for s in subjects],
        yerr=list(zip(*(_spread(cpu.get(s), "messages_per_s") for s in subjects), strict=True)),
        capsize=3,
        color="tab:green",
    )
    axes[1][0].set_title("CPU-bound messages/s (baseline: the work alone, one thread)")
    idle = results.get("idle_line_mode", {}).get("any", {})
    positions = list(range(len(models)))
    axes[1][1].bar(
        [p - 0.2 for p in positions],
        [_median(idle.get(m), "idle_rss_mib") for m in models],
        0.4,
        label="RSS (summed)",
    )
    axes[1][1].bar(
        [p + 0.2 for p in positions],
        [_median(idle.get(m), "idle_pss_mib") for m in models],
        0.4,
        label="PSS (summed)",
    )
    axes[1][1].set_xticks(positions, models)
    axes[1][1].set_title("Idle chat memory, MiB (line mode, all processes)")
    axes[1][1].legend()
    environment = document["environment"]
    figure.suptitle(
        f"udpchat bench: Python {environment['python']}, {environment['cpus']} CPUs, "
        f"{document['settings']['repeat']} rounds; bars are medians, whiskers min-max"
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)
