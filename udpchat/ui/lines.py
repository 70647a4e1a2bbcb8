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
    CANCELLED,
    Address,
    DeliveryFailed,
    Event,
    HistoryFailed,
    LocalProtocolError,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    PeerStatus,
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
from .outbox import Outbox, Queue

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
        instance: bytes = bytes(8),
        keep: float = 0.0,
    ) -> None:
        """`instance` and `keep`: this installation's id and how long a direct message
        waits for a peer that is away (`Config.instance`, `Config.keep`)."""
        self.shared_key = shared_key
        """Where the shared key came from ("--key-file"), for the ready line; None: no key."""
        self.ipmsg = ipmsg
        """IP Messenger is on (`--ipmsg`): the ready lines say so."""
        self.journal = journal
        """Where our messages and their outcomes are stored, and `/search` looks; None
        without history."""
        self._outbox = Outbox(journal, instance, keep)
        self._queue = Queue()
        """What waits for peers that are away (`/queue`, `/cancel N`)."""
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
        self._resend_outbox()

    def _resend_outbox(self) -> None:
        """What the outbox kept from earlier runs goes to the runtime again (each is
        held until its peer is here: a `message_queued` line)."""
        with self._handing_over():
            try:
                for message_id, queued in self._outbox.resend(self.runtime):
                    if self.jsonl:
                        line = json_line(
                            "message_sent",
                            message_id=message_id,
                            text=queued.text,
                            direct=True,
                            to=queued.peer_nick,
                            from_outbox=True,
                        )
                    else:
                        line = (
                            f"{clock()} * sending again to {escape(queued.peer_nick)}, from"
                            f' an earlier run: "{escape(queued.text)}"'
                        )
                    self._emit(line)
                    self._remember(message_id, queued.text)
            except LocalProtocolError as error:
                self._note(f"the outbox could not be sent again: {error}")

    @contextlib.contextmanager
    def _handing_over(self) -> Iterator[None]:
        """While a message is handed to the runtime: its outcome, which can come before
        `send` returns (a LAN answers in well under a millisecond), waits until its
        `message_sent` line is out (print that line, then `_remember` the message)."""
        with self._sending_lock:
            self._sending = True
        try:
            yield
        finally:
            with self._sending_lock:
                self._sending = False
                held, self._held = self._held, []
            for event in held:
                self._show(event)

    def _remember(self, message_id: int, text: str) -> None:
        self._texts[message_id] = text
        if len(self._texts) > _TEXTS_REMEMBERED:
            self._texts.popitem(last=False)

    def _list_queue(self) -> None:
        """/queue: what waits for peers that are away."""
        if self.jsonl:
            self._emit(json_line("queue", messages=self._queue.records()))
            return
        for line in self._queue.lines():
            self._emit(f"{clock()} * {line}")

    def _cancel(self, argument: str) -> None:
        """/cancel N: take the Nth queued message back (it fails, "cancelled")."""
        found = self._queue.message_id(argument)
        if isinstance(found, str):
            self._command_refused(f"/cancel{argument}", found)
            return
        if not self.runtime.cancel(found):
            reason = "it is on its way already: too late to cancel"
            self._command_refused(f"/cancel{argument}", reason)
            return
        if not self.jsonl:
            self._emit(f"{clock()} * cancelled: it will not be sent")

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
            elif text == "/queue":
                self._list_queue()
                continue
            elif text.startswith("/cancel ") or text == "/cancel":
                self._cancel(text[len("/cancel") :])
                continue
            elif text.startswith("/msg ") or text == "/msg":
                parsed = split_msg(text[4:])
                if parsed is None:
                    self._refuse(text, "usage: /msg NICK text")
                    continue
                rows = self.runtime.peers()
                found = find_peer(parsed[0], rows, self._names)
                if isinstance(found, str):
                    if not self._send_to_history_peer(parsed[0], parsed[1]):
                        self._refuse(text, found)
                    continue
                to, text = found, parsed[1]
                recipient: PeerStatus | None = None
                for row in rows:
                    if row.peer == found:
                        nick, dialect = ("" if row.dialect == "raw" else row.nick), row.dialect
                        recipient = row
                self._strangers.answered(found)
            with self._handing_over():
                try:
                    handed = self._outbox.send(
                        self.runtime,
                        text,
                        to=to,
                        room=None,
                        conversation=conversation_of("", to, nick) if to else f"#{room}",
                        nick=self.runtime.nick,
                        dialect=dialect,
                        recipient=recipient if to else None,
                    )
                except LocalProtocolError as error:
                    self._refuse(text, str(error))
                    continue
                if handed.history_failed is not None:
                    self._history_off(handed.history_failed)
                if self.jsonl:
                    where = {"room": room} if to is None else {"direct": format_address(to)}
                    sent = json_line(
                        "message_sent", message_id=handed.message_id, text=text, **where
                    )
                    self._emit(sent)
                self._remember(handed.message_id, text)

    def _send_to_history_peer(self, name: str, text: str) -> bool:
        """`/msg NAME text` to a udpchat peer not here in this run but known to the
        history: it waits in the outbox for that installation. False when the history
        knows no one of that name."""
        with self._handing_over():
            try:
                handed = self._outbox.send_to_known(
                    self.runtime, text, nick=self.runtime.nick, peer_nick=name
                )
            except LocalProtocolError as error:
                self._refuse(text, str(error))
                return True
            if handed is None:
                return False
            if isinstance(handed, str):
                self._refuse(text, handed)
                return True
            if handed.history_failed is not None:
                self._history_off(handed.history_failed)
            if self.jsonl:
                sent = json_line(
                    "message_sent", message_id=handed.message_id, text=text, direct=True, to=name
                )
                self._emit(sent)
            self._remember(handed.message_id, text)
        return True

    def _command_refused(self, command: str, reason: str) -> None:
        """A command that could not be done (nothing was sent, so no failure)."""
        self._note(f"{command.split()[0]}: {reason}")
        if self.jsonl:
            self._emit(json_line("command_refused", command=command, reason=reason))

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
        waiting = self._queue.farewell(self._outbox.keeps)
        if waiting is not None:
            self._note(waiting)
            if not self._outbox.keeps:
                # Nothing keeps them past this run: not delivered, so not a success.
                self.failures += len(self._queue)

    def _show(self, event: Event) -> None:
        if isinstance(event, MessageDelivered | DeliveryFailed | RawMessageSent | MessageHeld):
            with self._sending_lock:
                if self._sending and event.message_id not in self._texts:
                    self._held.append(event)  # after its message_sent line
                    return
                if self.journal is not None:
                    failed = self.journal.outcome(event)
                    if failed is not None:
                        self._history_off(failed)
                self._queue.see(event, self._texts.get(event.message_id, ""))
        if isinstance(event, DeliveryFailed) and event.reason != CANCELLED:
            self.failures += 1  # a message the user cancelled did not fail them
        if not self._track(event):
            return
        if self.jsonl and isinstance(event, MessageHeld):
            # With the text and the nickname: a script can tell which of its messages
            # waits, also for those sent again from the outbox at start.
            fields = {"text": self._texts.get(event.message_id, ""), "to": event.nick}
            self._emit(to_json(event, extra=fields))
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
