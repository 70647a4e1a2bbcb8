"""What a benchmark peer costs the machine, read from /proc (Linux).

A peer is a process tree: the process model's peer is a parent and its receiving and
sending children, so every figure here is summed over the tree. The counters:

- CPU time from `/proc/PID/task/TID/schedstat` (nanoseconds on the CPU, per thread).
  `/proc/PID/stat` counts clock ticks of 10 ms, far too coarse to tell 0.1 % of a few
  seconds of idling from nothing; schedstat is exact.
- Wake-ups: voluntary plus involuntary context switches of every thread. An idle peer
  that polls shows up here even when its CPU time is too small to see.
- Memory: VmRSS and VmHWM (peak RSS) from `/proc/PID/status`, and PSS from
  `/proc/PID/smaps_rollup`. RSS counts a page shared by the process model's three
  processes three times; PSS divides it among them, so the PSS sum is what the tree
  really costs.

Every reader tolerates a process that ends while it is being read: it counts as absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree's counters."""

    processes: int
    """Processes in the tree (1 for the thread and asyncio models, 3 for process)."""
    threads: int
    """Threads in all of them."""
    cpu_ns: int
    """CPU time used so far, all threads, nanoseconds."""
    switches: int
    """Context switches so far, all threads (voluntary + involuntary)."""
    rss_kib: int
    """Resident set size now, summed."""
    peak_rss_kib: int
    """Peak resident set size (VmHWM), summed: an upper bound for the tree's peak."""
    pss_kib: int
    """Proportional set size now, summed: shared pages divided among their sharers."""


def parse_kib_fields(text: str) -> dict[str, int]:
    """`Name:   1234 kB` lines of /proc/PID/status or smaps_rollup, as {Name: KiB}.

    Lines without a kB unit (e.g. `Threads:  3`) keep their bare number.
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        fields[name.strip()] = int(parts[0])
    return fields


def parse_pss_kib(smaps_rollup: str) -> int:
    """The `Pss:` figure of /proc/PID/smaps_rollup, in KiB (KeyError when missing)."""
    return parse_kib_fields(smaps_rollup)["Pss"]


def parse_parent_pid(stat: str) -> int:
    """The parent pid in /proc/PID/stat. The command name (field 2) may hold spaces and
    parentheses, so the fields are counted from its last closing parenthesis."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, found by scanning /proc (the `children` file needs a
    kernel option that not every kernel has)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parse_parent_pid((entry / "stat").read_text()) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked, or not a process
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a forkserver's grandchildren included)."""
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children_of(parent)]
        tree.extend(frontier)
    return tree


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _thread_counters(pid: int) -> tuple[int, int, int]:
    """(threads, CPU ns, context switches) of one process, summed over its threads."""
    threads = cpu_ns = switches = 0
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0, 0, 0
    for task in tasks:
        schedstat = _read(task / "schedstat")
        status = _read(task / "status")
        if schedstat is None or status is None:
            continue
        threads += 1
        cpu_ns += int(schedstat.split()[0])
        fields = parse_kib_fields(status)
        switches += fields.get("voluntary_ctxt_switches", 0)
        switches += fields.get("nonvoluntary_ctxt_switches", 0)
    return threads, cpu_ns, switches


def sample_pids(pids: Iterable[int]) -> TreeSample:
    """Read the counters of the given processes and add them up."""
    processes = threads = cpu_ns = switches = rss = peak = pss = 0
    for pid in pids:
        status = _read(PROC / str(pid) / "status")
        rollup = _read(PROC / str(pid) / "smaps_rollup")
        if status is None:
            continue
        fields = parse_kib_fields(status)
        processes += 1
        rss += fields.get("VmRSS", 0)
        peak += fields.get("VmHWM", 0)
        if rollup is not None:
            pss += parse_kib_fields(rollup).get("Pss", 0)
        counted = _thread_counters(pid)
        threads += counted[0]
        cpu_ns += counted[1]
        switches += counted[2]
    return TreeSample(processes, threads, cpu_ns, switches, rss, peak, pss)


def sample_tree(pid: int) -> TreeSample:
    """Counters of `pid` and its descendants."""
    return sample_pids(process_tree(pid))


def available_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def pin(cpus: Iterable[int]) -> None:
    """Run this process (and every thread and child it starts later) on `cpus` only."""
    os.sched_setaffinity(0, set(cpus))


PLACEMENTS = ("same", "split")
"""How the two peers of a pair are placed: both on one core, or one core each."""


def placement_cpus(placement: str, cpus: list[int]) -> tuple[list[int], list[int]] | None:
    """The cores of peer A and peer B for a placement; None when it needs more cores."""
    if placement == "same":
        return [cpus[0]], [cpus[0]]
    if placement == "split":
        return ([cpus[0]], [cpus[1]]) if len(cpus) >= 2 else None
    raise ValueError(f"unknown placement {placement!r}")
