"""The benchmark's plan: which scenario runs when, in rounds, and what each round found.

Rules of measurement on a small shared machine:
- every model and the baseline run once per round, in an order rotated each round, so
  a disturbance (another program, a frequency change) spreads over all of them instead
  of landing on one; figures are medians over rounds, with min and max;
- each pair is pinned (both peers on one core, then one core each), since a round trip
  on loopback depends mostly on whether the two processes share a core;
- each peer is a fresh `sys.executable` process, so nothing carries over between runs.

A step that fails is recorded with its error and the run goes on; the report shows which
figures are missing and the command exits with status 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import resources, scenarios
from .measure import PLACEMENTS, available_cpus, placement_cpus
from .workers import PeerError, PeerProcess


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How much each scenario does; `DEFAULT` and `QUICK` are the two presets."""

    models: tuple[str, ...] = ("thread", "process", "asyncio")
    messages: int = 5000
    """Throughput: messages per round from A to B."""
    size: int = 100
    """Bytes of text per message (and per datagram of the baseline)."""
    repeat: int = 5
    """Rounds."""
    baseline_factor: int = 10
    """The baseline sends this many times `messages`, as it is that much faster: its
    burst then lasts long enough to time."""
    pings: int = 1000
    """Latency: timed round trips per round (after `warmup` untimed ones)."""
    warmup: int = 50
    cpu_messages: int = 200
    """CPU-bound: messages each way per round."""
    work: int = 2000
    """CPU-bound: SHA-256 calls per message on each path (about 0.5 ms here)."""
    idle_seconds: float = 3.0
    """Resources: how long the chats are left idle."""
    claims_scale: float = 0.5
    """Micro-benchmarks of common claims about threads, processes and coroutines: amount
    of work (0 skips them)."""
    timeout: float = 60.0
    """Longest any one step may take before it is recorded as failed."""


DEFAULT = Settings()
QUICK = Settings(
    messages=300,
    repeat=1,
    pings=100,
    warmup=10,
    cpu_messages=40,
    work=500,
    idle_seconds=1.0,
    claims_scale=0.1,
    timeout=20.0,
)

Progress = Callable[[str], None]
"""Called before each step with a short description of it."""


def _rotated(items: Sequence[str], shift: int) -> list[str]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def count_steps(settings: Settings) -> int:
    """How many times `run` calls `progress` (for the progress bar)."""
    subjects = len(settings.models) + 1
    placements = len(usable_placements())
    per_round = placements * subjects + subjects + len(settings.models)
    return settings.repeat * per_round + 1 + (1 if settings.claims_scale > 0 else 0)


def usable_placements() -> list[str]:
    cpus = available_cpus()
    return [name for name in PLACEMENTS if placement_cpus(name, cpus) is not None]


class Recorder:
    """Collects one record per scenario and round, or the error that stopped it."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def attempt(
        self,
        scenario: str,
        placement: str,
        subject: str,
        round_index: int,
        measure: Callable[[], dict[str, Any]],
    ) -> None:
        """Run `measure` and record its figures, or the error it raised."""
        record: dict[str, Any] = {
            "scenario": scenario,
            "placement": placement,
            "subject": subject,
            "round": round_index,
        }
        try:
            record["figures"] = measure()
        except (PeerError, RuntimeError, TimeoutError, OSError, KeyError) as error:
            record["error"] = f"{type(error).__name__}: {error}"
        self.records.append(record)


def _pair_round(
    recorder: Recorder, settings: Settings, subject: str, placement: str, round_index: int
) -> None:
    """Throughput then latency over one freshly started, pinned pair."""
    cpus = placement_cpus(placement, available_cpus())
    assert cpus is not None
    baseline = subject == "baseline"
    count = settings.messages * (settings.baseline_factor if baseline else 1)
    figures: dict[str, Any] = {}

    def throughput() -> dict[str, Any]:
        return (
            scenarios.throughput(a, b, count=count, size=settings.size, timeout=settings.timeout)
            | figures
        )

    def latency() -> dict[str, Any]:
        return scenarios.latency(
            a,
            b,
            count=settings.pings,
            warmup=settings.warmup,
            size=settings.size,
            timeout=settings.timeout,
        )

    done: list[str] = []
    try:
        with scenarios.pair(subject, cpus[0], cpus[1]) as (a, b):
            figures.update(start_to_ready_ms=a.start_to_ready_s * 1000, open_ms=a.open_s * 1000)
            recorder.attempt("throughput", placement, subject, round_index, throughput)
            done.append("throughput")
            if "error" in recorder.records[-1]:
                # A peer that failed mid-scenario may still answer the old command; a
                # fresh pair comes with the next round.
                raise PeerError("skipped: the pair failed in the throughput scenario")
            recorder.attempt("latency", placement, subject, round_index, latency)
            done.append("latency")
        if not baseline:
            # The same throughput with B keeping a history, as a user's chat does: B
            # stores each message before its acknowledgement leaves.
            with scenarios.pair(subject, cpus[0], cpus[1], history_b=True) as (a, b):
                recorder.attempt("throughput_history", placement, subject, round_index, throughput)
            done.append("throughput_history")
    except (PeerError, OSError) as error:
        for scenario in ("throughput", "latency", "throughput_history")[: 2 + (not baseline)]:
            if scenario not in done:
                recorder.records.append(
                    {
                        "scenario": scenario,
                        "placement": placement,
                        "subject": subject,
                        "round": round_index,
                        "error": f"{type(error).__name__}: {error}",
                    }
                )


def _cpu_round(recorder: Recorder, settings: Settings, subject: str, round_index: int) -> None:
    """The CPU-bound exchange on all cores (no pinning: the point is to use them)."""

    def measure() -> dict[str, Any]:
        if subject == "baseline":
            with PeerProcess("baseline") as peer:
                return scenarios.work_alone(
                    peer, count=2 * settings.cpu_messages, size=settings.size, rounds=settings.work
                )
        with scenarios.pair(subject, None, None, work_a=settings.work) as (a, b):
            return scenarios.cpu_bound(
                a, b, count=settings.cpu_messages, size=settings.size, timeout=settings.timeout
            )

    recorder.attempt("cpu_bound", "any", subject, round_index, measure)


def _idle(
    recorder: Recorder,
    settings: Settings,
    open_chats: dict[tuple[str, str], list[resources.ChatProcess]],
    round_index: int,
) -> None:
    """Leave every open chat idle at once and read what each costs."""
    time.sleep(0.5)  # let the greetings and the first acknowledgements settle
    before = {key: chats[0].sample() for key, chats in open_chats.items()}
    time.sleep(settings.idle_seconds)
    after = {key: chats[0].sample() for key, chats in open_chats.items()}
    for (model, mode), chats in open_chats.items():
        figures = resources.idle_figures(
            before[(model, mode)], after[(model, mode)], settings.idle_seconds
        )
        figures["full_screen"] = chats[0].is_full_screen
        recorder.records.append(
            {
                "scenario": f"idle_{mode}",
                "placement": "any",
                "subject": model,
                "round": round_index,
                "figures": figures,
            }
        )


def _chat_round(
    recorder: Recorder,
    subject: str,
    mode: str,
    round_index: int,
    keep: dict[tuple[str, str], list[resources.ChatProcess]] | None,
) -> None:
    """Start a real chat pair, record how long A took to be ready; keep it or close it."""

    def measure() -> dict[str, Any]:
        chats = resources.start_chat_pair(
            subject, terminal=mode == "terminal_ui", round_index=round_index
        )
        a, b = chats
        if keep is not None:
            keep[(subject, mode)] = chats
        else:
            resources.close_all(chats)
        return {
            "start_to_ready_ms": a.start_to_ready_s * 1000,
            "counterpart_start_to_ready_ms": b.start_to_ready_s * 1000,
            "full_screen": a.is_full_screen,
        }

    recorder.attempt(f"start_{mode}", "any", subject, round_index, measure)


def run_claims(scale: float, timeout: float = 120.0) -> dict[str, Any]:
    """The claims' micro-benchmarks, in a process of their own."""
    done = subprocess.run(
        [sys.executable, "-m", "udpchat.bench.claims", "--scale", str(scale)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"claims micro-benchmarks failed: {done.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(settings: Settings, progress: Progress) -> dict[str, Any]:
    """Every scenario, in rounds; returns the settings, the records and the claims."""
    recorder = Recorder()
    placements = usable_placements()
    subjects = ["baseline", *settings.models]
    modes = ["line_mode"]
    if resources.terminal_ui_available():
        modes.append("terminal_ui")
    open_chats: dict[tuple[str, str], list[resources.ChatProcess]] = {}
    try:
        for round_index in range(settings.repeat):
            label = f"round {round_index + 1}/{settings.repeat}"
            for placement in placements:
                for subject in _rotated(subjects, round_index):
                    progress(f"{label}: {subject}, {placement} core{'s' * (placement != 'same')}")
                    _pair_round(recorder, settings, subject, placement, round_index)
            for subject in _rotated(subjects, round_index):
                progress(f"{label}: {subject}, CPU-bound")
                _cpu_round(recorder, settings, subject, round_index)
            last = round_index == settings.repeat - 1
            for subject in _rotated(list(settings.models), round_index):
                progress(f"{label}: {subject}, start to ready")
                for mode in modes:
                    _chat_round(recorder, subject, mode, round_index, open_chats if last else None)
        progress(f"idle for {settings.idle_seconds:g} s")
        _idle(recorder, settings, open_chats, settings.repeat - 1)
    finally:
        for chats in open_chats.values():
            resources.close_all(chats)
    claims: dict[str, Any] | None = None
    claims_error = None
    if settings.claims_scale > 0:
        progress("micro-benchmarks of the claims")
        try:
            claims = run_claims(settings.claims_scale)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            claims_error = str(error)
    return {
        "settings": asdict(settings),
        "placements": placements,
        "ui_modes": modes,
        "records": recorder.records,
        "claims": claims,
        "claims_error": claims_error,
    }


def with_overrides(base: Settings, **changes: Any) -> Settings:
    """`base` with the given fields replaced (None values are ignored)."""
    return replace(base, **{key: value for key, value in changes.items() if value is not None})
