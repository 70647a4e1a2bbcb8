"""`udpchat bench`: the three models compared on the same task, with the raw limit beside.

Parses the command line, runs the rounds with a progress bar on stderr, prints the
table on stdout, and writes the JSON and the chart when asked. Exit status: 0 when every
step ran, 1 when some failed (the table and the JSON say which), 2 for a usage error
(including `--plot` without matplotlib).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from ..runtimes import MODELS
from . import runner
from .aggregate import aggregate, targets
from .table import render

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake on the command line; shown as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    defaults, quick = runner.DEFAULT, runner.QUICK
    parser = _Parser(
        prog="udpchat bench",
        description=(
            "Compare udpchat's concurrency models on the same tasks: each model runs two "
            "real peers on 127.0.0.1 in separate processes, beside a raw blocking-socket "
            "baseline. Scenarios: throughput (acked, exactly once, in order), latency "
            "(chat round trip), CPU-bound (per-message work on both paths), and "
            "resources (start to ready, idle CPU and memory of a real chat). Every pair "
            "runs on one core and on two; models and baseline alternate in rounds."
        ),
        epilog=(
            f"--quick is {quick.repeat} round of {quick.messages} messages and "
            f"{quick.pings} pings (under a minute). 'udpchat bench presence' measures "
            "discovery and membership instead (--help there). Exit status: 0, 1 if a step "
            "failed, 2 for a usage error."
        ),
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        metavar="LIST",
        help=f"comma-separated models to compare (default: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--messages",
        type=int,
        metavar="N",
        help=f"throughput messages per round (default: {defaults.messages}; the baseline "
        f"sends {defaults.baseline_factor} times as many)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="BYTES",
        help=f"bytes of text per message (default: {defaults.size})",
    )
    parser.add_argument(
        "--repeat", type=int, metavar="R", help=f"rounds (default: {defaults.repeat})"
    )
    parser.add_argument(
        "--pings",
        type=int,
        metavar="N",
        help=f"timed round trips per round (default: {defaults.pings})",
    )
    parser.add_argument(
        "--work",
        type=int,
        metavar="ROUNDS",
        help=f"CPU-bound: SHA-256 calls per message and path (default: {defaults.work})",
    )
    parser.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help=f"how long the chats idle (default: {defaults.idle_seconds:g})",
    )
    parser.add_argument(
        "--no-claims",
        action="store_true",
        help="skip the micro-benchmarks of common claims about threads, processes and coroutines",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run for smoke tests (under a minute)"
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="draw a chart (needs matplotlib)")
    return parser


def settings_from(args: argparse.Namespace) -> runner.Settings:
    """The preset (`--quick` or not) with the options given on the command line."""
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    unknown = [name for name in models if name not in MODELS]
    if unknown or not models:
        raise UsageError(f"--models takes a list of {', '.join(MODELS)}, not {args.models!r}")
    for name, value, low in (
        ("--messages", args.messages, 1),
        ("--size", args.size, 16),
        ("--repeat", args.repeat, 1),
        ("--pings", args.pings, 1),
        ("--work", args.work, 1),
    ):
        if value is not None and value < low:
            raise UsageError(f"{name} must be at least {low}, not {value}")
    if args.size is not None and args.size > 60_000:
        raise UsageError("--size must be at most 60000 bytes (a chat message's limit is 65536)")
    if args.idle is not None and not 0.5 <= args.idle <= 600:
        raise UsageError("--idle must be 0.5 to 600 seconds")
    base = runner.QUICK if args.quick else runner.DEFAULT
    return runner.with_overrides(
        base,
        models=models,
        messages=args.messages,
        size=args.size,
        repeat=args.repeat,
        pings=args.pings,
        work=args.work,
        idle_seconds=args.idle,
        claims_scale=0.0 if args.no_claims else None,
    )


class ProgressBar:
    """Progress on stderr, in every run (--quick too): on a terminal one line redrawn in
    place, `[#####-----] 12/40 0:31 round 2/5: thread, same core`; elsewhere (a log, a
    pipe) one line per step, `udpchat bench: 12/40 0:31 round 2/5: thread, same core`.
    The table goes to stdout, so redirecting it keeps it clean."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()
        self.in_place = stream.isatty()

    def __call__(self, label: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        step = f"{self.done}/{self.total} {elapsed // 60}:{elapsed % 60:02d} {label}"
        if self.in_place:
            filled = round(20 * self.done / max(1, self.total))
            line = f"[{'#' * filled}{'-' * (20 - filled)}] {step}"
            self.stream.write("\r" + line[:100].ljust(100))
        else:
            self.stream.write(f"udpchat bench: {step}\n")
        self.stream.flush()
        self.done += 1

    def finish(self) -> None:
        if self.in_place:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def environment() -> dict[str, Any]:
    """Where the figures come from: interpreter, machine, load, and what the models offer."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus": len(os.sched_getaffinity(0)),
        "start_method": multiprocessing.get_start_method(),
        "load_average_before": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def build_document(
    run: dict[str, Any], env: dict[str, Any], argv: Sequence[str], seconds: float
) -> dict[str, Any]:
    """The complete JSON document: settings, environment, results, targets, raw rounds."""
    results = aggregate(run)
    errors = [
        f"{r['scenario']} {r['placement']} {r['subject']} round {r['round'] + 1}: {r['error']}"
        for r in run["records"]
        if "error" in r
    ]
    if run["claims_error"]:
        errors.append(f"claims: {run['claims_error']}")
    env = {**env, "load_average_after": list(os.getloadavg()), "seconds": seconds}
    return {
        "version": 1,
        "command": "udpchat bench " + " ".join(argv),
        "settings": run["settings"],
        "environment": env,
        "placements": run["placements"],
        "results": results,
        "targets": targets(results, list(run["settings"]["models"])),
        "claims": run["claims"],
        "errors": errors,
        "rounds": run["records"],
    }


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    if args.plot:
        from .plot import check_available

        check_available()  # before minutes of measuring, not after
    env = environment()
    progress = ProgressBar(runner.count_steps(settings), sys.stderr)
    started = time.monotonic()
    try:
        measured = runner.run(settings, progress)
    finally:
        progress.finish()
    document = build_document(measured, env, argv, time.monotonic() - started)
    print(render(document))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
    if args.plot:
        from .plot import draw

        draw(document, args.plot)
    return EXIT_FAILED if document["errors"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `udpchat bench ...` and `python -m udpchat.bench ...`; `argv` is
    what follows the word "bench" (default: `sys.argv[1:]`)."""
    from .plot import PlotUnavailable

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["presence"]:
        from .presence import main as presence_main

        return presence_main(arguments[1:])
    try:
        return run(arguments)
    except (UsageError, PlotUnavailable) as error:
        print(f"udpchat bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
