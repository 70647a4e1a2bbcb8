"""One peer of a benchmark: a worker process the coordinator drives over stdin/stdout.

Run as `python -m udpchat.bench.peer --model MODEL [--cpus 0] [--work ROUNDS]`. It pins
itself first (every thread and child it starts inherits the placement), opens a chat
through `create_runtime(model, ...)` on 127.0.0.1 port 0, exactly as the CLI does, and
prints one JSON line `{"ready": ..., "port": ...}`. Then each JSON line on stdin is a
command; each answer is one JSON line on stdout: `{"reply": {...}}` or `{"error": "..."}`,
preceded by `{"armed": true}` for the commands the coordinator must see waiting before
it starts the other side. `--model baseline` is the raw socket of `baseline.py`.

Every wait in here has a deadline, taken from the command's `timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..protocol import (
    Address,
    Config,
    DeliveryFailed,
    Event,
    MessageDelivered,
    MessageReceived,
    OutboxFull,
    PeerJoined,
)
from ..runtimes import ChatRuntime, create_runtime
from .baseline import RawEndpoint, payload, sequence_of
from .measure import pin
from .work import HashWork

_RETRY = 0.001
"""Pause before sending again after OutboxFull (the outbox holds 10,000 messages)."""


class Tally:
    """Counts of the delivery events seen while waiting for something else."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0

    def note(self, event: Event | None) -> None:
        if isinstance(event, MessageDelivered):
            self.delivered += 1
        elif isinstance(event, DeliveryFailed):
            self.failed += 1


class ChatEndpoint:
    """A peer that is a real chat: every message goes through `ChatRuntime`."""

    def __init__(self, model: str, work: HashWork | None, history: Path | None = None) -> None:
        self.model = model
        # The work goes into the core (Config.transform), so each model runs it in its
        # own workers: the threads, the two processes, or the loop and the caller.
        self._works = work is not None
        # The runtime pushes its events from its own thread; the commands below take them
        # from this queue in the order they came.
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._runtime: ChatRuntime = create_runtime(
            model,
            f"bench-{model}",
            bind="127.0.0.1",
            port=0,
            config=Config(transform=work),
            on_event=self._events.put,
            history=history,
        )

    @property
    def work_runs_in(self) -> str:
        return "runtime" if self._works else "nowhere"

    @property
    def port(self) -> int:
        return self._runtime.local_address[1]

    def open(self) -> None:
        self._runtime.open()

    def close(self) -> None:
        self._runtime.close()

    def connect(self, peer: Address) -> dict[str, Any]:
        """Add the other peer and wait until it has answered our HELLO."""
        self._runtime.add_peer(peer)
        self._next(lambda event: isinstance(event, PeerJoined), 10.0)
        return {}

    def expect(self, count: int, timeout: float, armed: Callable[[], None]) -> dict[str, Any]:
        """Receive `count` throughput messages; check each arrived once and in order."""
        deadline = time.monotonic() + timeout
        seqs: list[int] = []
        first = last = 0.0
        armed()
        while len(seqs) < count:
            event = self._get(deadline)
            if isinstance(event, MessageReceived) and event.text.startswith("T|"):
                last = time.monotonic()
                if not seqs:
                    first = last
                seqs.append(sequence_of(event.text))
        return {
            "received": len(seqs),
            "in_order": seqs == list(range(count)),
            "duplicates": len(seqs) - len(set(seqs)),
            # DATA that arrived again (and was acknowledged, not shown): with no loss on
            # loopback, these are the sender's spurious retransmissions.
            "duplicates_dropped": self._runtime.stats().duplicates_dropped,
            "first": first,
            "last": last,
        }

    def blast(self, count: int, size: int, timeout: float) -> dict[str, Any]:
        """Send `count` messages as fast as the runtime takes them; wait for every ack."""
        texts = [payload("T", seq, size) for seq in range(count)]
        deadline = time.monotonic() + timeout
        tally = Tally()
        start = time.monotonic()
        for text in texts:
            while True:
                try:
                    self._runtime.send(text)
                    break
                except OutboxFull:
                    tally.note(self._get(deadline))
        while tally.delivered + tally.failed < count:
            tally.note(self._get(deadline))
        end = time.monotonic()
        stats = self._runtime.stats()
        return {
            "start": start,
            "end": end,
            "delivered": tally.delivered,
            "failed": tally.failed,
            "retransmissions": stats.retransmissions,
        }

    def ping(self, count: int, warmup: int, size: int, timeout: float) -> dict[str, Any]:
        """Chat round trips: our message to the echoing peer and its answer back to us."""
        deadline = time.monotonic() + timeout
        rtts: list[int] = []
        for seq in range(warmup + count):
            answer = payload("Q", seq, size)
            started = time.perf_counter_ns()
            self._runtime.send(payload("P", seq, size))
            while True:
                event = self._get(deadline)
                if isinstance(event, MessageReceived) and event.text == answer:
                    break
            if seq >= warmup:
                rtts.append(time.perf_counter_ns() - started)
        return {"rtt_ns": rtts, "lost": 0}

    def echo(self, count: int, timeout: float, armed: Callable[[], None]) -> dict[str, Any]:
        """Answer each of the next `count` pings with its pong."""
        deadline = time.monotonic() + timeout
        echoed = 0
        armed()
        while echoed < count:
            event = self._get(deadline)
            if isinstance(event, MessageReceived) and event.text.startswith("P|"):
                self._runtime.send("Q" + event.text[1:])
                echoed += 1
        return {"echoed": echoed}

    def exchange(self, count: int, size: int, timeout: float) -> dict[str, Any]:
        """Send `count` messages while receiving `count` from the other peer.

        As in line mode, one application thread sends while another takes the events;
        any per-message work runs inside the runtime (Config.transform).
        """
        deadline = time.monotonic() + timeout
        sender = threading.Thread(
            target=self._send_all, args=(count, size, deadline), name="bench-send"
        )
        tally = Tally()
        seqs: list[int] = []
        start = time.monotonic()
        sender.start()
        try:
            while len(seqs) < count or tally.delivered + tally.failed < count:
                event = self._get(deadline)
                tally.note(event)
                if isinstance(event, MessageReceived) and event.text.startswith("C|"):
                    seqs.append(sequence_of(event.text))
        finally:
            sender.join(max(0.0, deadline - time.monotonic()))
        return {
            "start": start,
            "end": time.monotonic(),
            "received": len(seqs),
            "in_order": seqs == list(range(count)),
            "delivered": tally.delivered,
            "failed": tally.failed,
            "work_runs_in": self.work_runs_in,
        }

    def _send_all(self, count: int, size: int, deadline: float) -> None:
        for seq in range(count):
            text = payload("C", seq, size)
            while time.monotonic() < deadline:
                try:
                    self._runtime.send(text)
                    break
                except OutboxFull:
                    time.sleep(_RETRY)

    def _get(self, deadline: float) -> Event | None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the peer's deadline passed")
        try:
            return self._events.get(timeout=left)
        except queue.Empty:
            return None

    def _next(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self._get(deadline)
            if event is not None and predicate(event):
                return event


def _run_command(endpoint: Any, request: dict[str, Any], armed: Callable[[], None]) -> Any:
    """Call the endpoint method a command names, with the command's arguments."""
    command = request["cmd"]
    timeout = float(request.get("timeout", 60.0))
    if command == "connect":
        return endpoint.connect(tuple(request["peer"]))
    if command == "expect":
        return endpoint.expect(request["count"], timeout, armed)
    if command == "blast":
        return endpoint.blast(request["count"], request["size"], timeout)
    if command == "ping":
        return endpoint.ping(request["count"], request["warmup"], request["size"], timeout)
    if command == "echo":
        return endpoint.echo(request["count"], timeout, armed)
    if command == "exchange":
        return endpoint.exchange(request["count"], request["size"], timeout)
    if command == "work":
        return endpoint.work(request["count"], request["size"], request["rounds"])
    if command == "usage":
        # CLOCK_PROCESS_CPUTIME_ID counts threads that have ended too, which summing
        # /proc/PID/task/*/schedstat would miss (the exchange's sending thread).
        return {"cpu_ns": time.process_time_ns()}
    if command == "quit":
        return {}
    raise ValueError(f"unknown command {command!r}")


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Open one peer and serve the coordinator's commands until `quit` or end of input."""
    parser = argparse.ArgumentParser(prog="python -m udpchat.bench.peer")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cpus", default="", help="comma-separated cores to run on")
    parser.add_argument("--work", type=int, default=0, help="SHA-256 rounds per message")
    parser.add_argument(
        "--history", default=None, help="keep a history in this file, as a user's chat does"
    )
    args = parser.parse_args(argv)
    if args.cpus:
        pin(int(cpu) for cpu in args.cpus.split(","))
    work = HashWork(args.work) if args.work > 0 else None
    history = Path(args.history) if args.history else None
    endpoint: Any = (
        RawEndpoint() if args.model == "baseline" else ChatEndpoint(args.model, work, history)
    )
    started = time.monotonic()
    endpoint.open()
    opened = time.monotonic() - started
    _say({"ready": True, "port": endpoint.port, "pid": os.getpid(), "open_s": opened})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                result = _run_command(endpoint, request, lambda: _say({"armed": True}))
            except Exception as error:  # reported to the coordinator, which records it
                _say({"error": f"{type(error).__name__}: {error}"})
                continue
            _say({"reply": result})
            if request["cmd"] == "quit":
                break
    finally:
        endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
