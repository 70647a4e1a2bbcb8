"""Micro-benchmarks of common claims about threads, processes and coroutines.

The chat scenarios show what the claims mean for udpchat; these isolate each claim with
nothing else around it, so docs/models.md can give a verdict on each. Run by the
benchmark as `python -m udpchat.bench.claims [--scale F]` in a process of its own; it
prints one JSON object. Each timing is the median of a few repetitions, interleaved.

- gil: the same Python-bytecode work (a SHA-256 chain that holds the GIL) done by one
  thread, by two threads, by two asyncio tasks and by two processes (on two cores, and
  pinned to one); and work in C that releases the GIL (SHA-256 of 1 MiB) by one thread
  and by two.
- switch: the cost of handing control back and forth: between generators, between
  asyncio tasks, between threads and between processes (a Pipe and an mp.Queue), on
  one core and across two; and the cost per message of a one-way stream to another
  process (Pipe or mp.Queue), the hop the process model makes for each send.
- io: twenty blocking waits of 20 ms, one after the other, in twenty threads, and as
  twenty asyncio tasks.
- memory: what one more idle thread, asyncio task or process costs.
- race: lost updates when two threads increment a global without a lock, and what the
  lock that prevents them costs.
- pool_queue: whether an mp.Queue handed to a Pool task raises, as it is said to.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from .measure import sample_pids
from .work import hash_chain

_ROUNDS = 2000
"""SHA-256 calls per unit of GIL-holding work (about half a millisecond)."""
_BIG = b"\0" * (1 << 20)
"""1 MiB: hashlib releases the GIL for buffers of 2 KiB and more."""
_REPEATS = 3


def _units(count: int) -> None:
    for seq in range(count):
        hash_chain(str(seq), _ROUNDS)


def _big_units(count: int) -> None:
    for _ in range(count):
        hashlib.sha256(_BIG).digest()


def _in_threads(function: Callable[[int], None], count: int, threads: int) -> float:
    workers = [threading.Thread(target=function, args=(count // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60.0)
    return time.perf_counter() - started


async def _task_units(count: int) -> None:
    for seq in range(count):
        hash_chain(str(seq), _ROUNDS)
        await asyncio.sleep(0)  # a coroutine gives way only where it says so


def _in_tasks(count: int) -> float:
    async def both() -> None:
        await asyncio.gather(_task_units(count // 2), _task_units(count // 2))

    started = time.perf_counter()
    asyncio.run(both())
    return time.perf_counter() - started


def _unit_worker(go: Connection, done: Connection, count: int, cpus: list[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    go.recv()
    _units(count)
    done.send(True)


def _in_processes(count: int, cpus: list[list[int]] | None) -> float:
    """Two processes, timed from the go signal (their start-up is not counted)."""
    context = multiprocessing.get_context()
    pipes = [context.Pipe() for _ in range(2)]
    dones = [context.Pipe(duplex=False) for _ in range(2)]
    workers = [
        context.Process(
            target=_unit_worker,
            args=(pipes[i][1], dones[i][1], count // 2, cpus[i] if cpus else None),
        )
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.05)  # let both reach recv(), so that start-up is not measured
    started = time.perf_counter()
    for go, _ in pipes:
        go.send(True)
    for receiving, _ in dones:
        if not receiving.poll(60.0):
            raise TimeoutError("a worker process did not finish")
        receiving.recv()
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join(5.0)
    return elapsed


def gil(units: int) -> dict[str, Any]:
    """Speed-ups over one thread for the same total work (higher is more parallel)."""
    cpus = sorted(os.sched_getaffinity(0))
    one_core = [[cpus[0]], [cpus[0]]]
    trials: dict[str, list[float]] = {}
    big = 2 * max(2, units // 4)  # even: split exactly in two; ~25 ms at the default
    variants: list[tuple[str, Callable[[], float]]] = [
        ("one_thread", lambda: _in_threads(_units, units, 1)),
        ("two_threads", lambda: _in_threads(_units, units, 2)),
        ("two_tasks", lambda: _in_tasks(units)),
        ("two_processes", lambda: _in_processes(units, None)),
        ("two_processes_one_core", lambda: _in_processes(units, one_core)),
        ("c_one_thread", lambda: _in_threads(_big_units, big, 1)),
        ("c_two_threads", lambda: _in_threads(_big_units, big, 2)),
    ]
    for _ in range(_REPEATS):
        for name, run in variants:
            trials.setdefault(name, []).append(run())
    seconds = {name: statistics.median(values) for name, values in trials.items()}
    return {
        "cpus": len(cpus),
        "seconds": seconds,
        "speedup_two_threads": seconds["one_thread"] / seconds["two_threads"],
        "speedup_two_tasks": seconds["one_thread"] / seconds["two_tasks"],
        "speedup_two_processes": seconds["one_thread"] / seconds["two_processes"],
        "speedup_two_processes_one_core": (
            seconds["one_thread"] / seconds["two_processes_one_core"]
        ),
        "speedup_c_two_threads": seconds["c_one_thread"] / seconds["c_two_threads"],
    }


# -- switches ---------------------------------------------------------------------


def _generator_round_trip_ns(count: int) -> float:
    def echo() -> Any:
        value = None
        while True:
            value = yield value

    generator = echo()
    next(generator)
    started = time.perf_counter_ns()
    for seq in range(count):
        generator.send(seq)
    return (time.perf_counter_ns() - started) / count


def _task_round_trip_ns(count: int) -> float:
    """Two tasks taking turns through the event loop: one round trip is two switches."""

    async def turns() -> float:
        async def spin() -> None:
            for _ in range(count):
                await asyncio.sleep(0)

        started = time.perf_counter_ns()
        await asyncio.gather(spin(), spin())
        return (time.perf_counter_ns() - started) / count

    return asyncio.run(turns())


def _thread_round_trip_ns(count: int, cpus: tuple[int, int]) -> float:
    there: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        os.sched_setaffinity(0, {cpus[1]})  # this thread only
        for _ in range(count):
            back.put(there.get(timeout=10.0))

    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    worker = threading.Thread(target=echo)
    worker.start()
    try:
        started = time.perf_counter_ns()
        for seq in range(count):
            there.put(seq)
            back.get(timeout=10.0)
        return (time.perf_counter_ns() - started) / count
    finally:
        worker.join(10.0)
        os.sched_setaffinity(0, saved)


def _pipe_echo(conn: Connection, count: int, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    for _ in range(count):
        conn.send_bytes(conn.recv_bytes())


def _queue_echo(there: Any, back: Any, count: int, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    for _ in range(count):
        back.put(there.get(timeout=10.0))


def _process_round_trip_ns(count: int, cpus: tuple[int, int], kind: str) -> float:
    context = multiprocessing.get_context()
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    try:
        if kind == "pipe":
            ours, theirs = context.Pipe()
            worker = context.Process(target=_pipe_echo, args=(theirs, count + 1, cpus[1]))
            worker.start()
            ours.send_bytes(b"x")
            ours.recv_bytes()  # the echo process is up
            started = time.perf_counter_ns()
            for _ in range(count):
                ours.send_bytes(b"x")
                ours.recv_bytes()
        else:
            there, back = context.Queue(), context.Queue()
            worker = context.Process(target=_queue_echo, args=(there, back, count + 1, cpus[1]))
            worker.start()
            there.put(0)
            back.get(timeout=10.0)
            started = time.perf_counter_ns()
            for seq in range(count):
                there.put(seq)
                back.get(timeout=10.0)
        elapsed = (time.perf_counter_ns() - started) / count
        worker.join(10.0)
        return elapsed
    finally:
        os.sched_setaffinity(0, saved)


def _drain_pipe(conn: Connection, count: int, done: Connection) -> None:
    for _ in range(count):
        conn.recv()
    done.send(True)


def _drain_queue(there: Any, count: int, done: Connection) -> None:
    for _ in range(count):
        there.get(timeout=10.0)
    done.send(True)


def _one_way_ns(count: int, kind: str) -> float:
    """Per message, a stream of small objects to another process that only reads them:
    the hop the process model makes for each `send()` (no one waits for an answer)."""
    context = multiprocessing.get_context()
    done_r, done_w = context.Pipe(duplex=False)
    if kind == "pipe":
        reading, writing = context.Pipe(duplex=False)
        worker = context.Process(target=_drain_pipe, args=(reading, count, done_w))
        put: Callable[[Any], None] = writing.send
    else:
        there = context.Queue()
        worker = context.Process(target=_drain_queue, args=(there, count, done_w))
        put = there.put
    worker.start()
    message = ("send", 1, "x" * 100, 0)
    started = time.perf_counter_ns()
    for _ in range(count):
        put(message)
    if not done_r.poll(30.0):
        raise TimeoutError("the reading process did not finish")
    elapsed = (time.perf_counter_ns() - started) / count
    worker.join(10.0)
    return elapsed


def switch(count: int) -> dict[str, Any]:
    """Round trips in microseconds (a hand-over there and one back)."""
    cpus = sorted(os.sched_getaffinity(0))
    placements = {"same": (cpus[0], cpus[0])}
    if len(cpus) > 1:
        placements["split"] = (cpus[0], cpus[1])
    trials: dict[str, list[float]] = {}
    for _ in range(_REPEATS):
        trials.setdefault("generator", []).append(_generator_round_trip_ns(count * 20))
        trials.setdefault("asyncio_tasks", []).append(_task_round_trip_ns(count * 4))
        for placement, pinned in placements.items():
            trials.setdefault(f"threads_{placement}", []).append(
                _thread_round_trip_ns(count, pinned)
            )
            for kind in ("pipe", "mp_queue"):
                trials.setdefault(f"processes_{kind}_{placement}", []).append(
                    _process_round_trip_ns(count, pinned, kind)
                )
        for kind in ("pipe", "mp_queue"):
            trials.setdefault(f"one_way_{kind}", []).append(_one_way_ns(count * 4, kind))

    return {f"{name}_us": statistics.median(values) / 1000 for name, values in trials.items()}


# -- waiting, memory, races ---------------------------------------------------------


def io_wait(waits: int = 20, seconds: float = 0.02) -> dict[str, Any]:
    """Wall time of `waits` blocking waits (time.sleep releases the GIL like recv does)."""
    started = time.perf_counter()
    for _ in range(waits):
        time.sleep(seconds)
    sequential = time.perf_counter() - started
    threads = [threading.Thread(target=time.sleep, args=(seconds,)) for _ in range(waits)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10.0)
    threaded = time.perf_counter() - started

    async def gathered() -> None:
        await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(waits)))

    started = time.perf_counter()
    asyncio.run(gathered())
    tasks = time.perf_counter() - started
    return {
        "waits": waits,
        "wait_ms": seconds * 1000,
        "sequential_ms": sequential * 1000,
        "threads_ms": threaded * 1000,
        "asyncio_ms": tasks * 1000,
    }


def _idle_child(ready: Connection, stop: Connection) -> None:
    ready.send(True)
    stop.recv()


def memory(threads: int = 50, tasks: int = 2000, processes: int = 8) -> dict[str, Any]:
    """KiB per extra idle thread, task or process (RSS for threads and tasks, whose pages
    this process owns alone; for processes RSS and PSS, which shares pages fairly)."""
    me = os.getpid()
    base = sample_pids([me])
    stop = threading.Event()
    workers = [threading.Thread(target=stop.wait, args=(30.0,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    with_threads = sample_pids([me])
    stop.set()
    for worker in workers:
        worker.join(10.0)

    async def hold() -> int:
        never = asyncio.get_running_loop().create_future()
        waiting = [asyncio.ensure_future(asyncio.wait_for(never, 30.0)) for _ in range(tasks)]
        await asyncio.sleep(0.01)
        before = sample_pids([me]).rss_kib
        more = [asyncio.ensure_future(asyncio.wait_for(never, 30.0)) for _ in range(tasks)]
        await asyncio.sleep(0.01)
        after = sample_pids([me]).rss_kib
        for task in waiting + more:
            task.cancel()
        await asyncio.gather(*waiting, *more, return_exceptions=True)
        return after - before

    task_kib = asyncio.run(hold())
    context = multiprocessing.get_context()
    children = []
    stops = []
    before = sample_pids([me])
    for _ in range(processes):
        ready_r, ready_w = context.Pipe(duplex=False)
        stop_r, stop_w = context.Pipe(duplex=False)
        child = context.Process(target=_idle_child, args=(ready_w, stop_r))
        child.start()
        ready_r.poll(30.0)
        children.append(child)
        stops.append(stop_w)
    family = sample_pids([me] + [child.pid for child in children if child.pid])
    for stop_w in stops:
        stop_w.send(True)
    for child in children:
        child.join(10.0)
    return {
        "start_method": context.get_start_method(),
        "thread_rss_kib": (with_threads.rss_kib - base.rss_kib) / threads,
        "task_rss_kib": task_kib / tasks,
        "process_rss_kib": (family.rss_kib - before.rss_kib) / processes,
        "process_pss_kib": (family.pss_kib - before.pss_kib) / processes,
    }


counter = 0


def _one() -> int:
    return 1


def race(increments: int = 300_000, trials: int = 5) -> dict[str, Any]:
    """Lost updates of two threads adding to one global without a lock, per trial (a race
    is a matter of chance: whether the GIL changes hands between a read and its write);
    then the time the same work takes with a lock, which loses none."""
    global counter

    def plain() -> None:
        global counter
        for _ in range(increments):
            counter += 1

    def through_a_call() -> None:
        global counter
        for _ in range(increments):
            counter = counter + _one()  # the call is a point where the GIL may change hands

    lock = threading.Lock()

    def locked() -> None:
        global counter
        for _ in range(increments):
            with lock:
                counter = counter + _one()

    lost: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    for name, body, runs in (
        ("plain_increment", plain, trials),
        ("increment_with_call", through_a_call, trials),
        ("increment_with_call_locked", locked, 1),
    ):
        for _ in range(runs):
            counter = 0
            seconds[name] = _in_threads(lambda _count, body=body: body(), 2, 2)  # type: ignore[misc]
            lost.setdefault(name, []).append(2 * increments - counter)
    return {"increments": 2 * increments, "lost": lost, "seconds": seconds}


def _takes_queue(item: Any) -> None:
    pass


def pool_queue() -> dict[str, Any]:
    """Hand an mp.Queue to a Pool task: it is said to raise RuntimeError."""
    context = multiprocessing.get_context()
    with context.Pool(1) as pool:
        try:
            pool.apply(_takes_queue, (context.Queue(),))
        except RuntimeError as error:
            return {"raises": True, "error": str(error)}
    return {"raises": False, "error": ""}


def run(scale: float) -> dict[str, Any]:
    """Every micro-benchmark; `scale` multiplies the amounts of work (quick runs: < 1)."""
    units = 2 * max(4, int(100 * scale))  # even: split exactly in two
    return {
        "gil": gil(units),
        "switch": switch(max(200, int(5000 * scale))),
        "io_wait": io_wait(),
        "memory": memory(),
        "race": race(),
        "pool_queue": pool_queue(),
        "switch_interval_ms": sys.getswitchinterval() * 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udpchat.bench.claims")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.scale)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
