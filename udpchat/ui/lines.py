"""Line mode: for pipes, scripts and plain terminals.

Each input line is one message to every peer. Each event is one output line,
`HH:MM:SS bob: text` or `HH:MM:SS * system text` (or, with `--jsonl`, one JSON object).
At the end of input it waits until every message is delivered or has failed, says BYE
and returns. The first Ctrl-C does the same; a second one quits at once.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import TextIO

from ..protocol import DeliveryFailed, Event, LocalProtocolError
from ..runtimes import ChatRuntime
from .format import (
    clock,
    deliveries,
    describe,
    format_address,
    json_line,
    reach_text,
    reachable_at,
    ready_text,
    to_json,
)

EXIT_OK = 0
EXIT_UNDELIVERED = 1
EXIT_INTERRUPTED = 130
_TEXTS_REMEMBERED = 10_000


class LineMode:
    """Runs one chat in line mode over an open runtime."""

    def __init__(
        self,
        runtime: ChatRuntime,
        *,
        jsonl: bool = False,
        drain_timeout: float = 35.0,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        shared_key: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.shared_key = shared_key
        """Where the shared key came from ("--key-file"), for the ready line; None: no key."""
        self.jsonl = jsonl
        self.drain_timeout = drain_timeout
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.failures = 0
        self._texts: OrderedDict[int, str] = OrderedDict()
        self._write_lock = threading.Lock()

    def run(self) -> int:
        """Chat until end of input; return the exit status."""
        local, model = self.runtime.local_address, self.runtime.model
        if self.jsonl:
            self._emit(
                json_line(
                    "ready",
                    address=format_address(local),
                    model=model,
                    shared_key=self.shared_key,
                    reachable_at=reachable_at(local),
                )
            )
        else:
            ready = ready_text(local, self.runtime.nick, model, self.shared_key)
            self._emit(f"{clock()} * {ready}; end of input quits")
            reach = reach_text(local)
            if reach is not None:
                self._emit(f"{clock()} * {reach}")
        printer = threading.Thread(target=self._print_events, name="udpchat-print", daemon=True)
        printer.start()
        status = EXIT_OK
        try:
            self._read_input()
            self._finish()
        except KeyboardInterrupt:
            status = EXIT_INTERRUPTED
            self._note("interrupted: waiting for delivery (Ctrl-C again to quit now)")
            try:
                self._finish()
            except KeyboardInterrupt:
                pass
        finally:
            self.runtime.close()
            printer.join(timeout=2.0)
        if status == EXIT_OK and self.failures:
            status = EXIT_UNDELIVERED
        return status

    def _read_input(self) -> None:
        for line in self.stdin:
            text = line.rstrip("\r\n")
            if not text:
                continue
            if "\ufffd" in text and not self.jsonl:
                self._note("input was not valid UTF-8; the bad bytes were replaced")
            try:
                message_id = self.runtime.send(text)
            except LocalProtocolError as error:
                self.failures += 1
                self._note(f"not sent: {error}")
                continue
            self._texts[message_id] = text
            if len(self._texts) > _TEXTS_REMEMBERED:
                self._texts.popitem(last=False)
            if self.jsonl:
                self._emit(json_line("message_sent", message_id=message_id, text=text))

    def _finish(self) -> None:
        pending = self.runtime.pending()
        if pending:
            if not self.jsonl:
                self._emit(f"{clock()} * waiting for {deliveries(pending)}...")
            if not self.runtime.wait_delivered(self.drain_timeout):
                self._note(f"gave up waiting for {deliveries(self.runtime.pending())}")

    def _print_events(self) -> None:
        while True:
            event = self.runtime.get_event()
            if event is None:
                return
            self._show(event)

    def _show(self, event: Event) -> None:
        if isinstance(event, DeliveryFailed):
            self.failures += 1
        if self.jsonl:
            self._emit(to_json(event))
            return
        text = describe(event, self._texts)
        if text is not None:
            self._emit(f"{clock()} {text}")

    def _note(self, text: str) -> None:
        """A message about our own state: stderr, so stdout stays the conversation."""
        with self._write_lock:
            print(f"udpchat: {text}", file=self.stderr, flush=True)

    def _emit(self, line: str) -> None:
        with self._write_lock:
            try:
                print(line, file=self.stdout, flush=True)
            except BrokenPipeError:
                pass  # nobody reads our output any more; the chat itself goes on
