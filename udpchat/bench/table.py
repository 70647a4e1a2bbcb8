"""The report on the terminal: one table per scenario, then the targets.

A figure measured over several rounds reads `median [min-max]`; a ratio to the raw
baseline of the same round reads `0.28x`. Each figure that has a target carries its
verdict (met / missed) in the last column.
"""

from __future__ import annotations

from typing import Any

from .stats import Summary


def number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; "-" when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def spread(summary: Summary | None, digits: int = 0, rounds: bool = True) -> str:
    """`median [min-max]`, or just the median when there was one round."""
    if summary is None:
        return "-"
    median = number(summary["median"], digits)
    if not rounds or len(summary["samples"]) < 2:
        return median
    return f"{median} [{number(summary['min'], digits)}-{number(summary['max'], digits)}]"


def times(summary: Summary | None) -> str:
    return "-" if summary is None else f"{summary['median']:.2f}x"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return lines


def _verdicts(targets: list[dict[str, Any]], model: str, prefix: str) -> str:
    found = [t for t in targets if t["model"] == model and t["target"].startswith(prefix)]
    return ", ".join(
        f"{'>=' if t['at_least'] else '<='}{t['limit']:g}{t['unit']} {t['status']}" for t in found
    )


def render(document: dict[str, Any]) -> str:
    """The whole report as text."""
    settings, results = document["settings"], document["results"]
    targets: list[dict[str, Any]] = document["targets"]
    subjects = ["baseline", *settings["models"]]
    out = [
        f"udpchat bench: Python {document['environment']['python']}, "
        f"{document['environment']['cpus']} CPUs, {settings['repeat']} round(s); "
        "figures are medians [min-max] over rounds",
        "",
        f"Throughput: {settings['messages']:,} messages of {settings['size']} bytes A->B, "
        f"each acknowledged, checked once and in order (baseline: "
        f"{settings['messages'] * settings['baseline_factor']:,} datagrams, no acks)",
    ]
    rows = []
    for placement, cells in results.get("throughput", {}).items():
        for subject in subjects:
            cell = cells.get(subject)
            if cell is None:
                continue
            checked = cell.get("exactly_once_in_order")
            rows.append(
                [
                    f"{placement} core{'s' * (placement != 'same')}",
                    subject,
                    spread(cell["messages_per_s"]),
                    spread(cell["mb_per_s"], 2, rounds=False),
                    times(cell["ratio"]),
                    spread(cell["cpu_s_per_1000"], 3, rounds=False),
                    spread(cell["retransmissions"], 0, rounds=False),
                    "raw" if subject == "baseline" else ("yes" if checked else "NO"),
                    _verdicts(targets, subject, f"throughput, {placement}"),
                ]
            )
    out += _rows(
        [
            "placement",
            "model",
            "messages/s",
            "MB/s",
            "x raw",
            "CPU s/1k",
            "retx",
            "exact",
            "target",
        ],
        rows,
    )
    out += [
        "",
        "Throughput with B's history on (each message stored before its acknowledgement):"
        " messages/s, and the share of the same round without history",
    ]
    rows = []
    for placement, cells in results.get("throughput_history", {}).items():
        where = "same core" if placement == "same" else "split cores"
        for subject in settings["models"]:
            cell = cells.get(subject)
            if cell is None:
                continue
            rows.append(
                [
                    f"{placement} core{'s' * (placement != 'same')}",
                    subject,
                    spread(cell["messages_per_s"]),
                    times(cell.get("over_no_history")),
                    spread(cell["cpu_s_per_1000"], 3, rounds=False),
                    "yes" if cell.get("exactly_once_in_order") else "NO",
                    _verdicts(targets, subject, f"history on, {where}"),
                ]
            )
    out += _rows(["placement", "model", "messages/s", "x off", "CPU s/1k", "exact", "target"], rows)
    out += [
        "",
        f"Latency: chat round trip (A's message to B, B's answer back), "
        f"{settings['pings']:,} per round, in microseconds",
    ]
    rows = []
    for placement, cells in results.get("latency", {}).items():
        for subject in subjects:
            cell = cells.get(subject)
            if cell is None:
                continue
            rows.append(
                [
                    f"{placement} core{'s' * (placement != 'same')}",
                    subject,
                    spread(cell["p50_us"], 1),
                    spread(cell["p90_us"], 1, rounds=False),
                    spread(cell["p99_us"], 1, rounds=False),
                    times(cell["ratio"]),
                    _verdicts(targets, subject, f"RTT p50, {placement}"),
                ]
            )
    out += _rows(["placement", "model", "p50", "p90", "p99", "p50 x raw", "target"], rows)
    cpu = results.get("cpu_bound", {}).get("any", {})
    runs_in = next((c.get("work_runs_in") for s, c in cpu.items() if s != "baseline"), None)
    out += [
        "",
        f"CPU-bound: {settings['cpu_messages']:,} messages each way, {settings['work']:,} "
        f"SHA-256 per message on each path of A (work runs in: {runs_in}); "
        "baseline: the same work alone, one thread",
    ]
    rows = []
    for subject in subjects:
        cell = cpu.get(subject)
        if cell is None:
            continue
        over = cell.get("over_thread")
        rows.append(
            [
                subject,
                spread(cell["messages_per_s"]),
                times(cell["ratio"]),
                spread(cell["cores_used_by_a"], 2, rounds=False),
                "" if over is None else f"{times(over)} thread",
                _verdicts(targets, subject, "CPU-bound"),
            ]
        )
    out += _rows(["model", "messages/s", "x alone", "cores used", "vs thread", "target"], rows)
    out += [
        "",
        f"Resources of a real chat (udpchat --plain, with a peer), idle for "
        f"{settings['idle_seconds']:g} s; bench peer memory after the throughput run",
    ]
    rows = []
    for model in settings["models"]:
        for mode in ("line_mode", "terminal_ui"):
            start = results.get(f"start_{mode}", {}).get("any", {}).get(model, {})
            idle = results.get(f"idle_{mode}", {}).get("any", {}).get(model, {})
            if start.get("not_measured"):
                rows.append([model, mode.replace("_", " "), start["not_measured"]])
                continue
            peak = results.get("throughput", {}).get("same", {}).get(model, {})
            rows.append(
                [
                    model,
                    mode.replace("_", " "),
                    spread(start.get("start_to_ready_ms"), 0),
                    number(_median(idle, "idle_cpu_percent"), 3),
                    number(_median(idle, "idle_wakeups_per_s"), 1),
                    number(_median(idle, "idle_rss_mib"), 1),
                    number(_median(idle, "idle_pss_mib"), 1),
                    number(_median(idle, "processes")),
                    number(_kib_to_mib(_median(peak, "peak_rss_kib_a")), 1),
                    number(_kib_to_mib(_median(peak, "pss_kib_a")), 1),
                ]
            )
    out += _rows(
        [
            "model",
            "UI",
            "start->ready ms",
            "idle CPU %",
            "wake-ups/s",
            "RSS MiB",
            "PSS MiB",
            "procs",
            "peer peak RSS",
            "peer PSS",
        ],
        rows,
    )
    out += ["", "Targets, as ratios to the raw baseline of the same run:"]
    out += _rows(
        ["model", "target", "measured", "limit", "verdict"],
        [
            [
                t["model"],
                t["target"],
                number(t["value"], 3 if t["unit"] in ("x", "%") else 1) + t["unit"],
                f"{'>=' if t['at_least'] else '<='} {t['limit']:g}{t['unit']}",
                t["status"] + (f" ({t['note']})" if t["note"] else ""),
            ]
            for t in targets
        ],
    )
    if document.get("claims"):
        out += ["", *claims_lines(document["claims"])]
    errors = document.get("errors", [])
    if errors:
        out += ["", f"{len(errors)} step(s) failed:"] + [f"  {error}" for error in errors]
    return "\n".join(out)


def _median(cell: dict[str, Any] | None, field: str) -> float | None:
    summary = None if cell is None else cell.get(field)
    return None if summary is None else float(summary["median"])


def _kib_to_mib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def claims_lines(claims: dict[str, Any]) -> list[str]:
    """The micro-benchmarks of common claims, one line each under a short title."""
    gil, switch, io, memory, race = (
        claims["gil"],
        claims["switch"],
        claims["io_wait"],
        claims["memory"],
        claims["race"],
    )
    lost = race["lost"]
    return [
        "Claims about threads, processes and coroutines (micro-benchmarks, medians of 3):",
        f"  only processes run Python code in parallel (the GIL): speed-up over one thread "
        f"for the same Python work: two threads "
        f"{gil['speedup_two_threads']:.2f}x, two asyncio tasks {gil['speedup_two_tasks']:.2f}x, "
        f"two processes {gil['speedup_two_processes']:.2f}x (pinned to one core "
        f"{gil['speedup_two_processes_one_core']:.2f}x); C code that releases the GIL, "
        f"two threads {gil['speedup_c_two_threads']:.2f}x",
        f"  switching costs processes > threads > coroutines: hand-over round trip: "
        f"generator {switch['generator_us']:.3f} us, asyncio tasks "
        f"{switch['asyncio_tasks_us']:.1f} us, threads {switch['threads_same_us']:.1f} us "
        f"(split {switch.get('threads_split_us', 0):.1f}), processes over a Pipe "
        f"{switch['processes_pipe_same_us']:.1f} us (split "
        f"{switch.get('processes_pipe_split_us', 0):.1f}), over an mp.Queue "
        f"{switch['processes_mp_queue_same_us']:.1f} us",
        f"  a Pipe is cheaper than an mp.Queue: one-way stream to another process, per "
        f"message: Pipe "
        f"{switch['one_way_pipe_us']:.1f} us, mp.Queue {switch['one_way_mp_queue_us']:.1f} us",
        f"  blocking I/O releases the GIL: {io['waits']} blocking waits of "
        f"{io['wait_ms']:g} ms: one after another "
        f"{io['sequential_ms']:.0f} ms, in threads {io['threads_ms']:.0f} ms, as asyncio "
        f"tasks {io['asyncio_ms']:.0f} ms",
        f"  processes cost more memory than threads, tasks less: per extra idle unit: "
        f"thread {memory['thread_rss_kib']:.1f} KiB RSS, asyncio "
        f"task {memory['task_rss_kib']:.1f} KiB, process ({memory['start_method']}) "
        f"{memory['process_rss_kib'] / 1024:.1f} MiB RSS but {memory['process_pss_kib'] / 1024:.1f}"
        " MiB PSS",
        f"  threads race on a shared global without a lock: two threads, "
        f"{race['increments']:,} increments of a global: lost "
        f"{max(lost['plain_increment']):,} at most with `+= 1`, "
        f"{max(lost['increment_with_call']):,} at most with a call in between; with a lock "
        f"none, in {race['seconds']['increment_with_call_locked'] * 1000:.0f} ms instead of "
        f"{race['seconds']['increment_with_call'] * 1000:.0f} ms",
        f"  a Pool task cannot take an mp.Queue: handing one over raises RuntimeError: "
        f"{'yes' if claims['pool_queue']['raises'] else 'no'}",
    ]
