"""From one record per scenario and round to the figures the report shows.

Each figure is summarized over rounds (median, min, max). Ratios to the baseline are
taken round by round, against the baseline of the same round and placement, then
summarized. The targets (docs/models.md) are checked against the medians.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .stats import Summary, meets, ratio, summarize

FIELDS: dict[str, tuple[str, ...]] = {
    "throughput": (
        "messages_per_s",
        "mb_per_s",
        "cpu_s_per_1000",
        "retransmissions",
        "duplicates_dropped_by_b",
        "lost",
        "peak_rss_kib_a",
        "peak_rss_kib_b",
        "pss_kib_a",
        "pss_kib_b",
        "start_to_ready_ms",
        "open_ms",
    ),
    "throughput_history": ("messages_per_s", "cpu_s_per_1000"),
    "latency": ("p50_us", "p90_us", "p99_us"),
    "cpu_bound": ("messages_per_s", "cores_used_by_a"),
    "start_line_mode": ("start_to_ready_ms", "counterpart_start_to_ready_ms"),
    "start_terminal_ui": ("start_to_ready_ms", "counterpart_start_to_ready_ms"),
    "idle_line_mode": (
        "idle_cpu_percent",
        "idle_wakeups_per_s",
        "idle_rss_mib",
        "idle_pss_mib",
        "processes",
        "threads",
    ),
    "idle_terminal_ui": (
        "idle_cpu_percent",
        "idle_wakeups_per_s",
        "idle_rss_mib",
        "idle_pss_mib",
        "processes",
        "threads",
    ),
}
"""The figures of each scenario; every one is in the JSON, as a summary or null."""

RATIO_OF = {"throughput": "messages_per_s", "latency": "p50_us", "cpu_bound": "messages_per_s"}
"""The figure each scenario compares with the baseline."""

_UI_NOT_BUILT = "not measured: udpchat/ui/tui.py does not exist yet"
_UI_NOT_SELECTED = "not measured: the CLI does not start the terminal UI on a terminal yet"


def _cells(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        cells[(record["scenario"], record["placement"], record["subject"])].append(record)
    return cells


def _summary_or_none(values: list[float]) -> Summary | None:
    return summarize(values) if values else None


def _by_round(records: list[dict[str, Any]], field: str) -> dict[int, float]:
    return {
        record["round"]: float(record["figures"][field])
        for record in records
        if "figures" in record and field in record["figures"]
    }


def _ratios(
    mine: list[dict[str, Any]], baseline: list[dict[str, Any]], field: str
) -> Summary | None:
    ours, theirs = _by_round(mine, field), _by_round(baseline, field)
    values = [ratio(ours[r], theirs[r]) for r in sorted(ours) if theirs.get(r, 0) > 0]
    return _summary_or_none(values)


def aggregate(run: dict[str, Any]) -> dict[str, Any]:
    """results[scenario][placement][subject] -> figures, ratio, checks and errors."""
    cells = _cells(run["records"])
    results: dict[str, Any] = {}
    for (scenario, placement, subject), records in sorted(cells.items()):
        fine = [record for record in records if "figures" in record]
        cell: dict[str, Any] = {
            field: _summary_or_none(
                [float(r["figures"][field]) for r in fine if field in r["figures"]]
            )
            for field in FIELDS[scenario]
        }
        cell["rounds"] = len(fine)
        cell["errors"] = [record["error"] for record in records if "error" in record]
        if scenario in RATIO_OF:
            baseline = cells.get((scenario, placement, "baseline"), [])
            cell["ratio"] = _ratios(records, baseline, RATIO_OF[scenario])
        if scenario == "throughput_history":
            # What keeping history leaves of the throughput without it, round by round.
            without = cells.get(("throughput", placement, subject), [])
            cell["over_no_history"] = _ratios(records, without, "messages_per_s")
        if scenario in ("throughput", "throughput_history", "cpu_bound"):
            cell["exactly_once_in_order"] = bool(fine) and all(
                bool(r["figures"]["exactly_once_in_order"]) for r in fine
            )
        if scenario == "cpu_bound":
            cell["work_runs_in"] = fine[0]["figures"]["work_runs_in"] if fine else None
        on_terminal = scenario.endswith("terminal_ui")
        if on_terminal and fine and not all(r["figures"]["full_screen"] for r in fine):
            cell = {field: None for field in FIELDS[scenario]}
            cell.update(rounds=0, errors=[], not_measured=_UI_NOT_SELECTED)
        results.setdefault(scenario, {}).setdefault(placement, {})[subject] = cell
    threads = cells.get(("cpu_bound", "any", "thread"), [])
    processes = cells.get(("cpu_bound", "any", "process"), [])
    if "cpu_bound" in results and "process" in results["cpu_bound"]["any"]:
        results["cpu_bound"]["any"]["process"]["over_thread"] = _ratios(
            processes, threads, "messages_per_s"
        )
    for model in run["settings"]["models"]:
        for scenario in ("start_terminal_ui", "idle_terminal_ui"):
            place = results.setdefault(scenario, {}).setdefault("any", {})
            if model not in place:
                place[model] = {field: None for field in FIELDS[scenario]}
                place[model].update(rounds=0, errors=[], not_measured=_UI_NOT_BUILT)
    return results


# -- targets ------------------------------------------------------------------------

# (what, scenario, placement, figure, limit per model, at least?, unit)
_THROUGHPUT = {"thread": 0.25, "asyncio": 0.25, "process": 0.12}
_RTT_SAME = {"thread": 2.5, "asyncio": 2.5, "process": 5.0}
_RTT_SPLIT = {"thread": 1.3, "asyncio": 1.3, "process": 1.6}
_IDLE_MEMORY = {"thread": ("idle_rss_mib", 30.0), "asyncio": ("idle_rss_mib", 30.0)}
_IDLE_MEMORY["process"] = ("idle_pss_mib", 35.0)


def _where(placement: str) -> str:
    return "same core" if placement == "same" else "split cores"


def _median(cell: dict[str, Any] | None, field: str) -> float | None:
    if cell is None:
        return None
    summary = cell.get(field)
    return None if summary is None else float(summary["median"])


def _target(
    name: str,
    model: str,
    value: float | None,
    limit: float,
    at_least: bool,
    unit: str,
    note: str = "",
) -> dict[str, Any]:
    status = (
        "not measured" if value is None else "met" if meets(value, limit, at_least) else "missed"
    )
    return {
        "target": name,
        "model": model,
        "value": value,
        "limit": limit,
        "at_least": at_least,
        "unit": unit,
        "status": status,
        "note": note,
    }


def targets(results: dict[str, Any], models: list[str]) -> list[dict[str, Any]]:
    """The targets set for each model (docs/models.md), one entry per target and model,
    each met, missed or not measured."""
    found: list[dict[str, Any]] = []

    def cell(scenario: str, placement: str, model: str) -> dict[str, Any] | None:
        cells: dict[str, Any] = results.get(scenario, {}).get(placement, {})
        return cells.get(model)

    for model in models:
        for placement in ("same", "split"):
            found.append(
                _target(
                    f"throughput, {_where(placement)}, x raw",
                    model,
                    _median(cell("throughput", placement, model), "ratio"),
                    _THROUGHPUT.get(model, 0.25),
                    True,
                    "x",
                )
            )
        for placement in ("same", "split"):
            found.append(
                _target(
                    f"history on, {_where(placement)}, x off",
                    model,
                    _median(cell("throughput_history", placement, model), "over_no_history"),
                    0.5,
                    True,
                    "x",
                )
            )
        for placement, limits in (("same", _RTT_SAME), ("split", _RTT_SPLIT)):
            found.append(
                _target(
                    f"RTT p50, {_where(placement)}, x raw",
                    model,
                    _median(cell("latency", placement, model), "ratio"),
                    limits.get(model, 2.5),
                    False,
                    "x",
                )
            )
        for mode in ("line_mode", "terminal_ui"):
            # These targets are for the terminal UI; line mode is shown against the
            # same limits for comparison (and as the figure while the UI cannot be run).
            note = "" if mode == "terminal_ui" else "line mode; the target is for the UI"
            idle = cell(f"idle_{mode}", "any", model)
            found.append(
                _target(
                    f"idle CPU ({mode.replace('_', ' ')})",
                    model,
                    _median(idle, "idle_cpu_percent"),
                    0.1,
                    False,
                    "%",
                )
            )
            field, limit = _IDLE_MEMORY.get(model, ("idle_rss_mib", 30.0))
            label = "PSS" if field == "idle_pss_mib" else "RSS"
            found.append(
                _target(
                    f"idle memory {label} ({mode.replace('_', ' ')})",
                    model,
                    _median(idle, field),
                    limit,
                    False,
                    "MiB",
                    note,
                )
            )
            found.append(
                _target(
                    f"start to ready ({mode.replace('_', ' ')})",
                    model,
                    _median(cell(f"start_{mode}", "any", model), "start_to_ready_ms"),
                    100.0,
                    False,
                    "ms",
                    note,
                )
            )
    if "process" in models and "thread" in models:
        found.append(
            _target(
                "CPU-bound, process / thread",
                "process",
                _median(cell("cpu_bound", "any", "process"), "over_thread"),
                1.7,
                True,
                "x",
            )
        )
    return found
