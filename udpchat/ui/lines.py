"""Line mode: for pipes, scripts and plain terminals.

Each input line is one message said in the room the chat started in (`--room`, by default
`lobby`); `/msg NICK text` sends a direct message instead, and `//text` says `/text`.
Each event is one output line, `HH:MM:SS #lobby bob: text`, `HH:MM:SS @bob: text` for a
direct message, or `HH:MM:SS * system text` (or, with `--jsonl`, one JSON object).
At the end of input it waits (bounded) until every message is delivered or has failed,
says BYE and returns. SIGTERM ends the input the same way. The first Ctrl-C waits too
(and says so, if anything is pending); a second one quits at once.

Events are printed by `on_event`, the runtime's callback, on the runtime's own thread as
they come; those that come before `run` has printed the first line wait for it. Notes
about our own state (a refused message, input that was not UTF-8) go to stderr, and in
`--jsonl` a refused message is also an event on stdout.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TextIO

from ..archive import Journal, conversation_of
from ..protocol import (
    Address,
    DeliveryFailed,
    Event,
    HistoryFailed,
    LocalProtocolError,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageReceived,
    RawMessageSent,
)
from ..runtimes import ChatRuntime
from .conversations import Strangers, find_peer, split_msg, suppressed_text
from .format import (
    IPMSG_TEXT,
    Names,
    clock,
    deliveries,
    describe,
    discovery_text,
    escape,
    format_address,
    json_line,
    reach_text,
    reachable_at,
    ready_text,
    stored_line,
    stored_record,
    to_json,
)

EXIT_OK = 0
EXIT_UNDELIVERED = 1
EXIT_INTERRUPTED = 130
_TEXTS_REMEMBERED = 10_000


class _Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no handler of
    ordinary errors on the way takes it."""


class LineMode:
    """Runs one chat in line mode: make the runtime with `on_event`, open it, `run` it."""

    def __init__(
        self,
        *,
        jsonl: bool = False,
        drain_timeout: float = 35.0,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        shared_key: str | None = None,
        ipmsg: bool = False,
        journal: Journal | None = None,
    ) -> None:
        self.shared_key = shared_key
        """Where the shared key came from ("--key-file"), for the ready line; None: no key."""
        self.ipmsg = ipmsg
        """IP Messenger is on (`--ipmsg`): the ready lines say so."""
        self.journal = journal
        """Where our messages and their outcomes are stored, and `/search` looks; None
        without history."""
        self.jsonl = jsonl
        self.drain_timeout = drain_timeout
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.failures = 0
        self._texts: OrderedDict[int, str] = OrderedDict()
        self._names = Names()
        self._strangers = Strangers()
        self._write_lock = threading.Lock()
        self._early: list[Event] | None = []
        """Events that came before the first line was printed (None once it is)."""
        self._early_lock = threading.Lock()
        self._sending_lock = threading.Lock()
        self._sending = False
        """A message is being handed to the runtime: its outcome, which can come before
        `send` returns (a LAN answers in well under a millisecond), is held back until
        its `message_sent` line is out (guarded by `_sending_lock`)."""
        self._held: list[Event] = []

    def on_event(self, event: Event) -> None:
        """The runtime's callback: print the event (on the runtime's thread)."""
        with self._early_lock:
            if self._early is not None:
                self._early.append(event)
                return
        self._show(event)

    def run(self, runtime: ChatRuntime) -> int:
        """Chat over the open `runtime` until end of input; close it; return the exit
        status: 0, 1 when a message failed, was refused or was left unconfirmed, 130
        after Ctrl-C."""
        self.runtime = runtime
        interrupted = False
        with _sigterm_ends_input():
            try:
                self._start()
                try:
                    self._read_input()
                except _Terminated:
                    pass  # SIGTERM: quit as at the end of input
                self._finish()
            except KeyboardInterrupt:
                interrupted = True
                with contextlib.suppress(KeyboardInterrupt, _Terminated):
                    if runtime.pending():
                        self._note("interrupted: waiting for delivery (Ctrl-C again to quit now)")
                        self._finish()
            except _Terminated:
                pass  # asked again while waiting: quit now
        runtime.close()
        # Close settles nothing: what is still pending now was never confirmed. (Asked
        # after it, so that a runtime stalled by our own output cannot hold us here.)
        unconfirmed = runtime.pending()
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_UNDELIVERED if self.failures or unconfirmed else EXIT_OK

    def _start(self) -> None:
        """The first line, then the events that came before it."""
        runtime = self.runtime
        local, model = runtime.local_address, runtime.model
        with self._early_lock:
            if self.jsonl:
                self._emit(
                    json_line(
                        "ready",
                        address=format_address(local),
                        model=model,
                        shared_key=self.shared_key,
                        reachable_at=reachable_at(local),
                        discovery_port=runtime.discovery_port,
                        ipmsg=self.ipmsg,
                    )
                )
            else:
                ready = ready_text(local, runtime.nick, model, self.shared_key)
                self._emit(f"{clock()} * {ready}; end of input quits")
                reach = reach_text(local)
                if reach is not None:
                    self._emit(f"{clock()} * {reach}")
                self._emit(
                    f"{clock()} * {discovery_text(runtime.discovery_port, runtime.local_address)}"
                )
                if self.ipmsg:
                    self._emit(f"{clock()} * {IPMSG_TEXT}")
            for event in self._early or ():
                self._show(event)
            self._early = None

    def _read_input(self) -> None:
        rooms = self.runtime.rooms
        room = rooms[0] if rooms else None
        for line in self.stdin:
            text = line.rstrip("\r\n")
            if not text:
                continue
            if "\ufffd" in text:
                self._note("input was not valid UTF-8; the bad bytes were replaced")
            to: Address | None = None
            nick, dialect = "", "udpchat"
            if text.startswith("//"):
                text = text[1:]
            elif text.startswith("/search ") or text == "/search":
                self._search(text[len("/search") :].strip())
                continue
            elif text.startswith("/msg ") or text == "/msg":
                parsed = split_msg(text[4:])
                if parsed is None:
                    self._refuse(text, "usage: /msg NICK text")
                    continue
                rows = self.runtime.peers()
                found = find_peer(parsed[0], rows, self._names)
                if isinstance(found, str):
                    self._refuse(text, found)
                    continue
                to, text = found, parsed[1]
                for row in rows:
                    if row.peer == found:
                        nick, dialect = ("" if row.dialect == "raw" else row.nick), row.dialect
                self._strangers.answered(found)
            with self._sending_lock:
                self._sending = True
            try:
                if to is None:  # the default room: the runtimes' fast path
                    message_id: int | None = self.runtime.send(text)
                else:
                    message_id = self.runtime.send(text, to=[to])
            except LocalProtocolError as error:
                self._refuse(text, str(error))
                message_id = None
            with self._sending_lock:
                if message_id is not None and self.journal is not None:
                    where_to = conversation_of("", to, nick) if to else f"#{room}"
                    failed = self.journal.sent(
                        message_id, where_to, self.runtime.nick, text, dialect
                    )
                    if failed is not None:
                        self._history_off(failed)
                if message_id is not None:
                    self._texts[message_id] = text
                    if len(self._texts) > _TEXTS_REMEMBERED:
                        self._texts.popitem(last=False)
                    if self.jsonl:
                        where = {"room": room} if to is None else {"direct": format_address(to)}
                        sent = json_line("message_sent", message_id=message_id, text=text, **where)
                        self._emit(sent)
                self._sending = False
                held, self._held = self._held, []
            for event in held:
                self._show(event)

    def _refuse(self, text: str, reason: str) -> None:
        self.failures += 1
        self._note(f"not sent: {reason}")
        if self.jsonl:
            self._emit(json_line("message_refused", text=text, reason=reason))

    def _finish(self) -> None:
        pending = self.runtime.pending()
        if pending:
            if not self.jsonl:
                self._emit(f"{clock()} * waiting for {deliveries(pending)}...")
            if not self.runtime.wait_delivered(self.drain_timeout):
                self._note(f"gave up waiting for {deliveries(self.runtime.pending())}")

    def _show(self, event: Event) -> None:
        if isinstance(event, MessageDelivered | DeliveryFailed | RawMessageSent):
            with self._sending_lock:
                if self._sending and event.message_id not in self._texts:
                    self._held.append(event)  # after its message_sent line
                    return
                if self.journal is not None:
                    failed = self.journal.outcome(event)
                    if failed is not None:
                        self._history_off(failed)
        if isinstance(event, DeliveryFailed):
            self.failures += 1
        if not self._track(event):
            return
        if self.jsonl:
            self._emit(to_json(event))
            return
        if isinstance(event, MemberJoined | MemberLeft) and event.room not in self.runtime.rooms:
            return  # a room we are not in (JSONL still has it, for scripts)
        text = describe(event, self._texts, self._names)
        if text is not None:
            self._emit(f"{clock()} {text}")

    def _track(self, event: Event) -> bool:
        """Follow who is in which room; False for a stranger's direct message past the
        limit (`Strangers`), which is counted and reported instead of shown."""
        self._strangers.see(event)
        if isinstance(event, MessageReceived):
            shown, suppressed = self._strangers.screen(event, self.runtime.rooms, time.monotonic())
            if suppressed:
                name = self._names.of(event.peer, event.nick)
                if self.jsonl:
                    self._emit(
                        json_line(
                            "messages_suppressed",
                            peer=format_address(event.peer),
                            nick=event.nick,
                            count=suppressed,
                        )
                    )
                else:
                    self._emit(f"{clock()} {suppressed_text(event.peer, name, suppressed)}")
            return shown
        return True

    def _history_off(self, reason: str) -> None:
        self._show(HistoryFailed(reason=reason))

    def _search(self, text: str) -> None:
        """/search TEXT: the messages of the history that hold TEXT, newest first."""
        if not text:
            self._refuse("/search", "usage: /search TEXT")
            return
        if self.journal is None:
            self._refuse(f"/search {text}", "no history in this chat (--no-history)")
            return
        found = self.journal.search(text, limit=20)
        if self.jsonl:
            for stored in found:
                self._emit(stored_record(stored, "search_result"))
            return
        many = "1 message holds" if len(found) == 1 else f"{len(found)} messages hold"
        self._emit(f"{clock()} * {many} {escape(text)!r} (newest first, at most 20)")
        for stored in found:
            self._emit(f"  {stored_line(stored)}")

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


@contextlib.contextmanager
def _sigterm_ends_input() -> Iterator[None]:
    """While in effect, SIGTERM raises _Terminated in the main thread, even from a
    blocking read of stdin; one that comes as it ends is ignored. (Only the main thread
    can set a signal handler.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    in_effect = True

    def terminated(signum: int, frame: object) -> None:
        if in_effect:
            raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        in_effect = False
        signal.signal(signal.SIGTERM, previous)
