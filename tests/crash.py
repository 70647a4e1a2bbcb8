"""Chats that can be killed and started again: the harness of tests/test_crash.py.

A `Person` is one user of udpchat: a folder of their own (instance id, data, history
file), a fixed port and fixed arguments, so that a chat started again is the same user
at the same address. Each start is a `Run`: a `udpchat --jsonl` process whose stdout and
stderr are read by threads and kept, so that what a run printed can still be checked
after it was killed.

A run is a process group of its own, and `kill` sends SIGKILL to the whole group: in the
process model the receiving and sending processes die at the same instant as the parent,
as in a crash, instead of finishing their work and saying BYE as they do when only the
parent dies. `kill` returns once the port can be bound again (every process of the run
has closed the socket), so that the next run gets the same address. (Polling the port:
a killed child is not ours to wait for, and PID 1 may never reap it.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

Address = tuple[str, int]
Record = dict[str, Any]
"""One JSON line of `--jsonl`."""
T = TypeVar("T")

STARTUP = 20.0
"""Seconds a chat may take to print its `ready` line (the process model starts three
processes, on a loaded CI machine)."""


def free_udp_ports(count: int) -> list[int]:
    """`count` distinct UDP ports on 127.0.0.1 that were free a moment ago."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def wait_until_port_is_free(port: int, timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:`port` (UDP) can be bound; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"UDP port {port} still taken {timeout} s after its chat was killed")
        time.sleep(0.01)  # polling a port: the dying processes are not ours to wait for


class Run:
    """One start of a person's chat: a `udpchat --jsonl` process in a group of its own."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], number: int) -> None:
        self.number = number
        """1 for the first run of a person, 2 for the one after a restart, ..."""
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.killed = False
        self._records: list[Record] = []
        self._counts: Counter[str] = Counter()
        self._other_lines: list[str] = []
        """Lines that are not JSON: the last one, cut short by SIGKILL, or a traceback."""
        self._stderr: list[str] = []
        self._ended = False
        self._changed = threading.Condition()  # an RLock: `wait_for`'s test may read
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            with self._changed:
                if isinstance(record, dict):
                    self._records.append(record)
                    self._counts[str(record.get("event"))] += 1
                else:
                    self._other_lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._changed:
                self._stderr.append(raw.decode("utf-8", errors="replace"))

    # --- what it printed -----------------------------------------------------------

    def records(self, event: str | None = None) -> list[Record]:
        """Its JSON lines so far (those of one `event`, if named)."""
        with self._changed:
            return [r for r in self._records if event is None or r.get("event") == event]

    def count(self, event: str) -> int:
        """How many lines of `event` it printed so far (cheap: kept as they come)."""
        with self._changed:
            return self._counts[event]

    def describe(self) -> str:
        """The run's output, shortened, for a failure message."""
        with self._changed:
            events = [r.get("event") for r in self._records]
            other, stderr = list(self._other_lines), "".join(self._stderr)
        status = self.process.poll()
        return (
            f"run {self.number} (exit status {status}, killed: {self.killed}): "
            f"{len(events)} JSON lines, the last {events[-12:]!r}; "
            f"other lines {other[-5:]!r}; stderr {stderr[-2000:]!r}"
        )

    def wait_for(self, found: Callable[[list[Record]], T | None], timeout: float) -> T | None:
        """The first non-None `found(records)`, tried at each new line; None if there is
        none within `timeout` seconds or the output ends without one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = found(self._records)
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    return None
                self._changed.wait(left)

    def expect(
        self,
        event: str,
        timeout: float = 15.0,
        *,
        refusals: Sequence[str] = ("message_refused", "delivery_failed"),
        **fields: Any,
    ) -> Record:
        """The first line of `event` whose fields include `fields`. Fails the test after
        `timeout` seconds, at once if the output ends, or if a line of one of `refusals`
        comes first (there is no point waiting for a message_sent after its refusal)."""

        def found(records: list[Record]) -> Record | None:
            for record in records:
                if record.get("event") in refusals and record.get("event") != event:
                    return record
                if record.get("event") == event and all(
                    record.get(name) == value for name, value in fields.items()
                ):
                    return record
            return None

        record = self.wait_for(found, timeout)
        if record is None or record.get("event") != event:
            if record is not None:
                why = f"first came {record!r}"
            else:
                why = "its output ended" if self._ended else "timed out"
            pytest.fail(
                f"no {event} line with {fields!r} within {timeout} s ({why}); {self.describe()}"
            )
        return record

    # --- driving it ----------------------------------------------------------------

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def feed(self, lines: Sequence[str]) -> threading.Thread:
        """Write `lines` to the chat's stdin from a thread, as fast as the chat reads
        them; the thread stops quietly when the chat is killed under it."""

        def write() -> None:
            with contextlib.suppress(OSError, ValueError):  # broken pipe, closed file
                for line in lines:
                    self.say(line)

        feeder = threading.Thread(target=write, name=f"feed-run-{self.number}", daemon=True)
        feeder.start()
        return feeder

    def close_input(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def wait(self, timeout: float) -> int | None:
        """Its exit status; None if it is still running after `timeout` seconds."""
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._join_readers()
        return status

    def kill(self) -> None:
        """SIGKILL to the whole process group (nothing of the run may go on), then wait
        for the parent and for the output readers to see the end."""
        if self.process.poll() is None:
            self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._join_readers()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)


class HistoryRow(NamedTuple):
    id: int
    conversation: str
    direction: str
    nick: str
    text: str


class Person:
    """One user: their own folder, port and arguments, kept from run to run."""

    def __init__(self, name: str, folder: Path, *, model: str, port: int, peer: Address) -> None:
        self.name = name
        self.port = port
        folder.mkdir(parents=True, exist_ok=True)
        self.history_path = folder / "history.sqlite3"
        # The instance id lives under XDG_STATE_HOME: two people sharing one would be
        # one user, twice.
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "XDG_STATE_HOME": str(folder / "state"),
            "XDG_DATA_HOME": str(folder / "data"),
            "XDG_CONFIG_HOME": str(folder / "config"),
        }
        self.argv = [
            sys.executable, "-m", "udpchat", "--jsonl", "--no-discovery",
            "--bind", "127.0.0.1", "--port", str(port), "--name", name, "--model", model,
            "--peer", f"{peer[0]}:{peer[1]}", "--history", str(self.history_path),
        ]  # fmt: skip
        self.runs: list[Run] = []

    @property
    def current(self) -> Run:
        return self.runs[-1]

    def start(self) -> Run:
        """Start a run (the first, or the next after `kill`) and wait for its ready line."""
        run = Run(self.argv, self.env, len(self.runs) + 1)
        self.runs.append(run)
        run.expect("ready", STARTUP)
        return run

    def kill(self) -> None:
        """SIGKILL the current run; return once its port is free for the next."""
        self.current.kill()
        wait_until_port_is_free(self.port)

    def close(self) -> None:
        """Kill whatever is left of every run (the end of a test, passed or failed)."""
        for run in self.runs:
            run.kill()

    def records(self, event: str) -> list[tuple[Run, Record]]:
        """The lines of `event` over every run, with the run that printed each."""
        return [(run, record) for run in self.runs for record in run.records(event)]

    def history(self) -> list[HistoryRow]:
        """The messages of this person's history file, read-only, in the order stored;
        [] while there is no file or no table yet."""
        if not self.history_path.exists():
            return []
        uri = f"file:{urllib.parse.quote(str(self.history_path))}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            rows = connection.execute(
                "SELECT id, conversation, direction, nick, text FROM messages ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
        finally:
            connection.close()
        return [HistoryRow(*row) for row in rows]

    def texts(self, direction: str) -> list[str]:
        """The texts of the history's `direction` ("in" or "out") rows, in order."""
        return [row.text for row in self.history() if row.direction == direction]

    def describe(self) -> str:
        return f"{self.name}: " + "; ".join(run.describe() for run in self.runs)


def texts_by_id(run: Run) -> dict[int, str]:
    """What each message id of `run` stands for: ids are per run, given by its
    `message_sent` lines and by the `message_queued` lines of messages it restored."""
    return {
        record["message_id"]: record["text"]
        for record in run.records()
        if record.get("event") in ("message_sent", "message_queued")
    }


def reported(person: Person, event: str) -> list[str]:
    """The texts of the messages `person` reported with `event` (message_delivered,
    delivery_failed, message_queued) over all its runs; an id the run never named is
    listed as "<id N of run R>"."""
    texts: list[str] = []
    for run in person.runs:
        names = texts_by_id(run)
        for record in run.records(event):
            message_id = record.get("message_id")
            if isinstance(record.get("text"), str):
                texts.append(record["text"])
            elif isinstance(message_id, int) and message_id in names:
                texts.append(names[message_id])
            else:
                texts.append(f"<id {message_id} of run {run.number}>")
    return texts
