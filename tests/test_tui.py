"""The terminal UI driven through prompt_toolkit's pipe input, against a fake runtime.

The real `TerminalUI` runs on the test's event loop with `DummyOutput` (or a VT100 output
into a string where the bytes matter: colours, escaping). The tests assert on what the UI
asked the runtime to do and on the plain text of the conversation pane. Every wait has a
deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import wcwidth
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.formatted_text.utils import fragment_list_to_text
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.layout.screen import Char
from prompt_toolkit.output import ColorDepth, DummyOutput, Output
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.utils import get_cwidth

from udpchat.archive import Journal
from udpchat.protocol import (
    CANCELLED,
    Address,
    DatagramRejected,
    DeliveryFailed,
    Event,
    FileOffered,
    LeaveReason,
    LocalProtocolError,
    MemberJoined,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    NoPeers,
    Outboxed,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    PeerStatus,
    RawMessageSent,
    RejectReason,
    SendFailed,
    Stats,
    validate_room,
)
from udpchat.protocol.plain import ENCODINGS
from udpchat.runtimes import ChatRuntime, EventCallback
from udpchat.store import History, Received
from udpchat.ui.commands import peers_lines
from udpchat.ui.pane import WRAP_INDENT, wrap
from udpchat.ui.tui import TerminalUI

LOBBY = ("lobby",)
BOB: Address = ("127.0.0.1", 9001)
CAROL: Address = ("127.0.0.1", 9002)
ENTER = "\r"
UP, DOWN = "\x1b[A", "\x1b[B"
PAGE_UP, PAGE_DOWN = "\x1b[5~", "\x1b[6~"
CTRL_C, CTRL_D, CTRL_U = "\x03", "\x04", "\x15"
TIMEOUT = 5.0


class FakeRuntime:
    """A `ChatRuntime` that records what the UI asks and plays the events a test pushes
    to its `on_event`, as a runtime calls the callback it was made with."""

    model = "thread"

    def __init__(self, nick: str = "alice", on_event: EventCallback | None = None) -> None:
        self.on_event = on_event
        self._nick = nick
        self.calls: list[str] = []
        self.sent: list[str] = []
        self.sent_to: list[list[Address] | None] = []
        self.sent_in: list[str | None] = []
        self._rooms = ["lobby"]
        self.keys: dict[str, bytes | None] = {}
        self.raw: dict[Address, str | None] = {}
        self.added: list[Address] = []
        self.removed: list[Address] = []
        self.rows: list[PeerStatus] = []
        self.refuse: LocalProtocolError | None = None
        self.pending_count = 0
        self.keys_sent: list[bytes | None] = []
        self.outboxed: list[Outboxed | None] = []
        self.cancelled: list[int] = []
        self.held_ids: set[int] = set()
        """Messages `cancel` takes back (the test says which are held)."""
        self.hold_delivery = False
        """When set, wait_delivered blocks until `release` is set (or its timeout)."""
        self.release = threading.Event()

    @property
    def local_address(self) -> Address:
        return ("127.0.0.1", 9000)

    @property
    def discovery_port(self) -> int | None:
        return None

    @property
    def nick(self) -> str:
        return self._nick

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.calls.append("close")
        self.release.set()

    def __enter__(self) -> ChatRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self,
        text: str,
        to: Sequence[Address] | None = None,
        *,
        room: str | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
        sent_at_ms: int | None = None,
    ) -> int:
        if self.refuse is not None:
            raise self.refuse
        self.keys_sent.append(key)
        self.outboxed.append(outboxed)
        self.sent.append(text)
        self.sent_to.append(None if to is None else list(to))
        self.sent_in.append(room)
        self.pending_count += 1
        return len(self.sent)

    def join(self, room: str, key: bytes | None = None) -> str:
        name = validate_room(room)
        self.keys[name] = key
        if name not in self._rooms:
            self._rooms.append(name)
        return name

    def leave(self, room: str) -> str:
        name = validate_room(room)
        if name not in self._rooms:
            raise LocalProtocolError(f"not in #{name}")
        self._rooms.remove(name)
        return name

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self._rooms)

    def add_peer(self, addr: Address) -> None:
        self.added.append(addr)

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError("encodings: ...")
        self.raw[addr] = encoding

    def remove_peer(self, addr: Address) -> None:
        self.removed.append(addr)

    def set_nick(self, nick: str) -> None:
        if nick == "refused":
            raise ValueError("the runtime says no")
        self._nick = nick

    def wait_delivered(self, timeout: float) -> bool:
        self.calls.append("wait_delivered")
        if self.hold_delivery:
            self.release.wait(timeout)
        return self.pending_count == 0

    def pending(self) -> int:
        return self.pending_count

    def cancel(self, message_id: int) -> bool:
        if message_id not in self.held_ids:
            return False
        self.held_ids.discard(message_id)
        self.cancelled.append(message_id)
        self.push(DeliveryFailed(message_id=message_id, peer=None, elapsed=1.0, reason=CANCELLED))
        return True

    def stats(self) -> Stats:
        return Stats(
            messages_sent=3,
            messages_delivered=2,
            messages_failed=1,
            messages_received=4,
            retransmissions=5,
            duplicates_dropped=6,
            malformed_dropped=7,
            foreign_dropped=8,
        )

    def peers(self) -> list[PeerStatus]:
        return list(self.rows)

    def push(self, event: Event) -> None:
        if isinstance(event, MessageDelivered | DeliveryFailed):
            self.pending_count -= 1
        assert self.on_event is not None
        self.on_event(event)


def test_the_fake_runtime_has_everything_a_chat_runtime_has() -> None:
    """The tests below stand for a real runtime only as long as this holds."""
    runtime: ChatRuntime = FakeRuntime()  # mypy checks this assignment
    members = set(ChatRuntime.__annotations__) | {
        name for name in vars(ChatRuntime) if not name.startswith("_")
    }
    members |= {"__enter__", "__exit__"}
    assert {"model", "nick", "local_address", "send", "wait_delivered", "peers"} <= members
    for name in sorted(members):
        assert hasattr(runtime, name), f"FakeRuntime has no {name}"
        expected = inspect.getattr_static(ChatRuntime, name, None)
        actual = inspect.getattr_static(FakeRuntime, name)
        if isinstance(expected, property):
            assert isinstance(actual, property), f"{name} is not a property"
        elif callable(expected):
            wanted = list(inspect.signature(expected).parameters)
            assert list(inspect.signature(actual).parameters) == wanted, name


class Driver:
    """One running TerminalUI: type into it, wait for what it shows."""

    def __init__(self, ui: TerminalUI, pipe: PipeInput, task: asyncio.Task[int]) -> None:
        self.ui = ui
        self.pipe = pipe
        self.task = task

    def type(self, keys: str) -> None:
        self.pipe.send_text(keys)

    def say(self, line: str) -> None:
        self.type(line + ENTER)

    @property
    def pane(self) -> str:
        return self.ui.transcript()

    async def until(self, condition: Callable[[], bool], what: str = "") -> None:
        """Wait (bounded) until `condition()` holds, letting the UI run in between."""
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what or condition}; pane:\n{self.pane}")
            await asyncio.sleep(0.005)

    async def shows(self, pattern: str) -> None:
        """Wait until the conversation pane matches the regular expression (per line)."""
        await self.until(lambda: re.search(pattern, self.pane, re.MULTILINE) is not None, pattern)

    async def exit_status(self) -> int:
        return await asyncio.wait_for(self.task, TIMEOUT)


@contextlib.asynccontextmanager
async def running(
    runtime: FakeRuntime,
    output: Output | None = None,
    *,
    handle_signals: bool = False,
    shared_key: str | None = None,
    journal: Journal | None = None,
    keep: float = 0.0,
) -> AsyncIterator[Driver]:
    with (
        create_pipe_input() as pipe,
        create_app_session(input=pipe, output=output or DummyOutput()),
    ):
        ui = TerminalUI(
            drain_timeout=TIMEOUT,
            shared_key=shared_key,
            journal=journal,
            instance=ALICE_INSTANCE,
            keep=keep,
        )
        runtime.on_event = ui.on_event
        task = asyncio.create_task(ui.run_async(runtime, handle_signals=handle_signals))
        driver = Driver(ui, pipe, task)
        try:
            await driver.until(lambda: ui.app.is_running, "the application to start")
            yield driver
        finally:
            if not task.done():
                ui.request_quit()
                ui.request_quit()
            await asyncio.wait_for(task, TIMEOUT)


def vt100() -> tuple[Vt100_Output, io.StringIO]:
    """An output that writes the real terminal bytes into a string."""
    screen = io.StringIO()
    output = Vt100_Output(
        screen,
        lambda: Size(rows=24, columns=80),
        term="xterm-256color",
        default_color_depth=ColorDepth.DEPTH_8_BIT,
    )
    return output, screen


def delivered(message_id: int, elapsed: float = 0.0012, peer: Address = BOB) -> MessageDelivered:
    return MessageDelivered(message_id=message_id, peer=peer, elapsed=elapsed)


def failed(message_id: int, peer: Address = BOB) -> DeliveryFailed:
    return DeliveryFailed(
        message_id=message_id, peer=peer, elapsed=30.0, reason="no acknowledgement within 30 s"
    )


# -- sending and delivery states ------------------------------------------------


@pytest.mark.asyncio
async def test_typed_line_is_sent_and_its_state_goes_from_pending_to_delivered() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        await chat.shows(r"listening on 127\.0\.0\.1:9000 as alice \(thread model\)")
        chat.say("hello 你好 🙂")
        await chat.shows(r"^\d\d:\d\d alice: hello 你好 🙂  …$")
        assert runtime.sent == ["hello 你好 🙂"]
        assert chat.ui.input.text == ""
        runtime.push(delivered(1, elapsed=0.0012))
        await chat.shows(r"^\d\d:\d\d alice: hello 你好 🙂  ✓ 1\.2 ms$")
        assert chat.pane.count("hello") == 1  # updated in place, not a new line
        chat.say("/quit")
        assert await chat.exit_status() == 0


@pytest.mark.asyncio
async def test_the_first_lines_say_who_can_reach_us_and_the_status_bar_shows_a_shared_key() -> None:
    async with running(FakeRuntime()) as chat:
        await chat.shows(r"\* only this machine can reach you: 127\.0\.0\.1:9000 is loopback$")
        assert "shared key" not in chat.ui.status_text()
    async with running(FakeRuntime(), shared_key="--key-file") as chat:
        await chat.shows(r"listening on 127\.0\.0\.1:9000 as alice \(thread model, shared key from")
        await chat.shows(r"\(thread model, shared key from --key-file\) — /help lists commands")
        await chat.until(lambda: "· 🔒 shared key ·" in chat.ui.status_text(), "the lock")


@pytest.mark.asyncio
async def test_message_to_two_peers_is_delivered_when_both_acknowledge() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        runtime.push(PeerJoined(peer=CAROL, nick="carol", rooms=LOBBY))
        await chat.until(lambda: "bob, carol" in chat.ui.status_text(), "both peers")
        chat.say("hi both")
        await chat.until(lambda: runtime.sent == ["hi both"])
        runtime.pending_count += 1  # one message, two deliveries
        runtime.push(delivered(1, elapsed=0.004))
        await chat.shows(r"alice: hi both  … ✓ 1 of 2$")
        runtime.push(delivered(1, elapsed=0.012, peer=CAROL))
        await chat.shows(r"alice: hi both  ✓ 2 peers · 12 ms$")


@pytest.mark.asyncio
async def test_failed_delivery_shows_a_hint_and_resend_sends_the_text_again() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("are you there?")
        await chat.until(lambda: runtime.sent == ["are you there?"])
        runtime.push(failed(1))
        await chat.shows(r"alice: are you there\?  ✗ failed after 30\.0 s — /resend 1$")
        await chat.shows(
            r'\* message 1 "are you there\?" to 127\.0\.0\.1:9001 failed after 30\.0 s:'
            r" no acknowledgement within 30 s — /resend 1$"
        )
        chat.say("/resend 1")
        await chat.until(lambda: runtime.sent == ["are you there?"] * 2, "the resend")
        assert runtime.sent_to == [None, [("127.0.0.1", 9001)]]  # only where it failed
        # One message, one number, one line: the runtime's new id (2) is not shown.
        await chat.shows(r"alice: are you there\?  … resent$")
        await chat.shows(r"\* message 1 sent again$")
        chat.say("/resend 1")
        await chat.shows(r"message 1 was resent and is on its way; nothing to resend")
        chat.say("/resend 7")
        await chat.shows(r"no message 7 to resend")
        runtime.push(failed(2))  # the resend fails too: still message 1
        await chat.shows(r"alice: are you there\?  ✗ failed after 30\.0 s — /resend 1$")
        failure_line = re.compile(r'^.*\* message 1 "are you there\?" .* — /resend 1$', re.M)
        await chat.until(lambda: len(failure_line.findall(chat.pane)) == 2, "a second failure")
        chat.say("/resend 1")
        await chat.until(lambda: len(runtime.sent) == 3, "the second resend")
        runtime.push(delivered(3))
        await chat.shows(r"alice: are you there\?  ✓ 1\.2 ms$")
        assert "message 2" not in chat.pane and "message 3" not in chat.pane
        assert chat.pane.count("alice: are you there?") == 1
        chat.say("/quit")
        assert await chat.exit_status() == 0  # the failed message was resent and delivered


@pytest.mark.asyncio
async def test_a_failed_message_not_resent_makes_the_exit_status_1() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("lost")
        await chat.until(lambda: runtime.sent == ["lost"])
        runtime.push(failed(1))
        await chat.shows(r"/resend 1$")
        chat.say("/quit")
        assert await chat.exit_status() == 1


@pytest.mark.asyncio
async def test_refused_message_is_one_error_line_and_stays_in_the_input_line() -> None:
    runtime = FakeRuntime()
    runtime.refuse = NoPeers("no peer to send to")
    async with running(runtime) as chat:
        chat.say("anyone?")
        await chat.shows(r"\* not sent: no peer to send to — the text is still in the input line$")
        assert chat.ui.input.text == "anyone?"
        assert runtime.sent == []
        runtime.refuse = None
        chat.type(ENTER)  # retry: the same text goes out
        await chat.until(lambda: runtime.sent == ["anyone?"])
        await chat.until(lambda: chat.ui.input.text == "")


@pytest.mark.asyncio
async def test_double_slash_sends_a_literal_slash_line() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("//usr/bin is where it lives")
        await chat.until(lambda: runtime.sent == ["/usr/bin is where it lives"])
        await chat.shows(r"alice: /usr/bin is where it lives  …$")


@pytest.mark.asyncio
async def test_bracketed_paste_of_several_lines_is_one_message() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.type("\x1b[200~first line\r\nsecond line\nthird\x1b[201~")
        await chat.until(lambda: chat.ui.input.text == "first line\nsecond line\nthird")
        assert runtime.sent == []  # the pasted newlines did not send anything
        chat.type(ENTER)
        await chat.until(lambda: runtime.sent == ["first line\nsecond line\nthird"])
        await chat.shows(r"alice: first line\n +second line\n +third  …$")


@pytest.mark.asyncio
async def test_a_pasted_block_loses_its_trailing_newlines() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.type("\x1b[200~copied line\r\n\x1b[201~")
        await chat.until(lambda: chat.ui.input.text == "copied line")
        chat.type(ENTER)
        await chat.until(lambda: runtime.sent == ["copied line"])
        await chat.shows(r"^\d\d:\d\d alice: copied line  …$")  # the mark on the same line
        chat.type("\x1b[200~two\nlines\n\n\x1b[201~" + ENTER)
        await chat.until(lambda: runtime.sent[1:] == ["two\nlines"])


@pytest.mark.asyncio
async def test_alt_enter_inserts_a_newline_into_the_message() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.type("one\x1b\rtwo" + ENTER)
        await chat.until(lambda: runtime.sent == ["one\ntwo"])


@pytest.mark.asyncio
async def test_history_recalls_earlier_lines_with_up_and_down() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("first")
        chat.say("second")
        await chat.until(lambda: runtime.sent == ["first", "second"])
        chat.type(UP)
        await chat.until(lambda: chat.ui.input.text == "second")
        chat.type(UP)
        await chat.until(lambda: chat.ui.input.text == "first")
        chat.type(DOWN)
        await chat.until(lambda: chat.ui.input.text == "second")
        chat.type(ENTER)
        await chat.until(lambda: runtime.sent == ["first", "second", "second"])


# -- what arrives ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_incoming_messages_and_peer_events_become_lines() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        await chat.shows(r"^\d\d:\d\d \* bob \(127\.0\.0\.1:9001\) joined #lobby$")
        await chat.until(lambda: "· bob ·" in chat.ui.status_text(), "bob in the status bar")
        runtime.push(
            MessageReceived(
                peer=BOB, nick="bob", text="こんにちは\nline two", sent_at_ms=0, room="lobby"
            )
        )
        await chat.shows(r"^\d\d:\d\d bob: こんにちは\n {11}line two$")
        runtime.push(PeerRenamed(peer=BOB, old_nick="bob", new_nick="robert"))
        await chat.shows(r"\* bob \(127\.0\.0\.1:9001\) is now robert$")
        runtime.push(
            DatagramRejected(
                peer=CAROL, reason=RejectReason.NOT_UDPCHAT, count=3, preview="GET /\x1b[0m"
            )
        )
        await chat.shows(
            r"\* dropped 3 datagrams from 127\.0\.0\.1:9002: not udpchat:"
            r' "GET /\\x1b\[0m"$'
        )
        runtime.push(PeerLeft(peer=BOB, nick="robert", reason=LeaveReason.BYE))
        await chat.shows(r"\* robert \(127\.0\.0\.1:9001\) left$")
        await chat.until(lambda: "no peers" in chat.ui.status_text(), "the status bar to update")


@pytest.mark.asyncio
async def test_two_peers_called_bob_are_shown_as_bob_and_bob_2() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        runtime.push(PeerJoined(peer=CAROL, nick="bob", rooms=LOBBY))
        await chat.shows(r"\* bob \(2\) \(127\.0\.0\.1:9002\) joined #lobby$")
        runtime.push(
            MessageReceived(
                peer=CAROL, nick="bob", text="the other one", sent_at_ms=0, room="lobby"
            )
        )
        runtime.push(
            MessageReceived(peer=BOB, nick="bob", text="the first one", sent_at_ms=0, room="lobby")
        )
        await chat.shows(r"^\d\d:\d\d bob \(2\): the other one$")
        await chat.shows(r"^\d\d:\d\d bob: the first one$")
        await chat.until(lambda: "bob, bob (2)" in chat.ui.status_text(), "both in the status bar")


# -- rooms and conversations ---------------------------------------------------------


@pytest.mark.asyncio
async def test_a_direct_message_waits_in_its_own_pane_counted_and_with_a_bell() -> None:
    runtime = FakeRuntime()
    output, screen = vt100()
    async with running(runtime, output) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        await chat.shows(r"joined #lobby$")
        runtime.push(MessageReceived(peer=BOB, nick="bob", text="psst", sent_at_ms=0))
        await chat.until(lambda: "2:@bob 1 new" in chat.ui.status_text(), "the unread count")
        assert "psst" not in chat.pane  # the lobby on screen is not interrupted
        await chat.until(lambda: "\a" in screen.getvalue(), "the bell")
        chat.type("\x1b2")  # Alt-2
        await chat.shows(r"^\d\d:\d\d bob: psst$")
        assert chat.ui.status_text().startswith(" @bob ·")
        assert "new" not in chat.ui.status_text()
        chat.say("back at you")
        await chat.until(lambda: runtime.sent_to[-1:] == [[BOB]], "a direct reply")
        chat.type("\x10")  # Ctrl-P: back to the lobby
        await chat.until(lambda: chat.ui.status_text().startswith(" #lobby (2 members)"))
        assert "psst" not in chat.pane


@pytest.mark.asyncio
async def test_a_strangers_direct_messages_past_five_are_counted_not_shown() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=CAROL, nick="mallory", rooms=("elsewhere",)))
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        for i in range(8):
            runtime.push(
                MessageReceived(peer=CAROL, nick="mallory", text=f"spam {i}", sent_at_ms=0)
            )
        for i in range(8):
            runtime.push(MessageReceived(peer=BOB, nick="bob", text=f"bob {i}", sent_at_ms=0))
        await chat.until(lambda: "3:@bob 8 new" in chat.ui.status_text(), "bob's eight")
        assert "2:@mallory 5 new" in chat.ui.status_text()
        chat.type("\x1b2")
        await chat.shows(r"^\d\d:\d\d mallory: spam 4$")
        await chat.shows(r"\* a direct message from mallory \(127\.0\.0\.1:9002\) not shown")
        assert "spam 5" not in chat.pane and "spam 7" not in chat.pane


@pytest.mark.asyncio
async def test_a_raw_peer_has_its_own_pane_with_its_encoding_and_no_receipts() -> None:
    runtime = FakeRuntime()
    nc: Address = ("127.0.0.1", 8080)
    async with running(runtime) as chat:
        chat.say("/raw 127.0.0.1:8080")
        await chat.until(lambda: runtime.raw == {nc: None}, "the raw peer added")
        await chat.shows(r"lines you type go to 127\.0\.0\.1:8080 as plain text")
        assert chat.ui.status_text().startswith(" @127.0.0.1:8080 (raw, utf-8)")
        runtime.push(
            MessageReceived(
                peer=nc, nick="", text="你好", sent_at_ms=0, dialect="raw", encoding="gb18030"
            )
        )
        await chat.shows(r"^\d\d:\d\d 127\.0\.0\.1:8080: 你好$")
        assert chat.ui.status_text().startswith(" @127.0.0.1:8080 (raw, gb18030)")
        chat.say("收到")
        await chat.until(lambda: runtime.sent_to[-1:] == [[nc]], "a reply")
        runtime.pending_count -= 1  # a raw peer is never pending
        runtime.push(RawMessageSent(message_id=1, peer=nc, encoding="gb18030"))
        await chat.shows(r"alice: 收到  sent \(raw peer, no receipt\)$")
        chat.say("/encoding cp932")
        await chat.shows(r"\* 127\.0\.0\.1:8080 is read and written as cp932$")
        assert runtime.raw[nc] == "cp932"
        chat.say("/encoding latin-1")
        await chat.shows(r"encoding not changed: encodings")


@pytest.mark.asyncio
async def test_an_ip_messenger_user_has_a_pane_marked_ipmsg_with_its_encoding() -> None:
    runtime = FakeRuntime()
    tux: Address = ("10.77.0.1", 2425)
    runtime.rows = [
        PeerStatus(
            peer=tux, nick="tux", present=True, configured=False, silent_for=1.0, rtt=None,
            pending=0, dialect="ipmsg", encoding="gb18030", group="lab", host="tuxhost",
        )
    ]  # fmt: skip
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=tux, nick="tux", dialect="ipmsg", group="lab", host="vm"))
        await chat.shows(r"\* tux \(10\.77\.0\.1:2425\) joined \(IP Messenger, group lab")
        runtime.push(
            MessageReceived(
                peer=tux, nick="tux", text="你好", sent_at_ms=0, dialect="ipmsg", encoding="gb18030"
            )
        )
        runtime.push(FileOffered(peer=tux, nick="tux", name="a.pdf", size=2048))
        chat.say("/query tux")
        await chat.shows(r"^\d\d:\d\d tux: 你好$")
        await chat.shows(r"offered a file a\.pdf \(2\.0 KiB\), not supported$")
        assert chat.ui.status_text().startswith(" @tux (IPMsg, gb18030)")
        chat.say("/encoding cp932")
        await chat.shows(r"\* 10\.77\.0\.1:2425 is read and written as cp932$")
        assert runtime.raw[tux] == "cp932"
        assert chat.ui.status_text().startswith(" @tux (IPMsg, cp932)")
        chat.say("/peers")
        await chat.shows(r"tux \(IPMsg, gb18030\)\s+group lab, host tuxhost\s+here")


@pytest.mark.asyncio
async def test_a_conversation_opens_with_its_history_and_search_looks_everywhere(
    tmp_path: Path,
) -> None:
    history = History.open(tmp_path / "history.sqlite3")
    earlier = 1_764_000_000_000  # 2025-11-24
    history.add_received(
        [Received("#lobby", "10.0.0.2:9000", "bob", "lunch at noon?", earlier, earlier, "udpchat")]
    )
    row = history.add_sent("#lobby", "alice", "yes, noon", earlier + 60_000)
    history.set_delivery(row, "10.0.0.2:9000", "delivered", earlier + 60_100)
    history.add_received(
        [Received("@bob", "10.0.0.2:9000", "bob", "noon it is", earlier, earlier, "udpchat")]
    )
    journal = Journal(history)
    runtime = FakeRuntime()
    async with running(runtime, journal=journal) as chat:
        await chat.shows(r"^11-2\d \d\d:\d\d bob: lunch at noon\?$")
        await chat.shows(r"alice: yes, noon  ✓$")
        await chat.shows(r"history above · this run starts here")
        chat.say("hello again")
        await chat.until(lambda: runtime.sent == ["hello again"], "the message sent")
        runtime.push(MessageDelivered(message_id=1, peer=BOB, elapsed=0.001))
        chat.say("/search noon")
        await chat.shows(r"\* 3 messages hold 'noon'")
        await chat.shows(r"@bob bob: noon it is$")
    stored = [(m.text, m.state) for m in History.open(tmp_path / "history.sqlite3").select()]
    assert ("hello again", "delivered") in stored


@pytest.mark.asyncio
async def test_page_up_past_the_first_line_scrolls_back_into_older_history(
    tmp_path: Path,
) -> None:
    history = History.open(tmp_path / "history.sqlite3")
    at = 1_764_000_000_000
    history.add_received(
        [
            Received("#lobby", "10.0.0.2:9000", "bob", f"old line {n}", at + n, at + n, "udpchat")
            for n in range(130)
        ]
    )
    runtime = FakeRuntime()
    async with running(runtime, journal=Journal(history)) as chat:
        await chat.shows(r"bob: old line 129$")
        assert "old line 79" not in chat.pane  # 50 lines replayed: 80 to 129
        pane = chat.ui.conversation
        for _ in range(60):  # a page at a time; 50 more lines at the first one
            if pane.anchor == 0 and "old line 0\n" in chat.pane + "\n":
                break
            before = (pane.anchor, len(pane.entries))
            chat.type(PAGE_UP)
            await chat.until(
                lambda was=before: (pane.anchor, len(pane.entries)) != was,  # type: ignore[misc]
                "a page up",
            )
        await chat.shows(r"bob: old line 0$")
        lines = [line for line in chat.pane.splitlines() if "old line" in line]
        assert [line.rsplit(" ", 1)[1] for line in lines] == [str(n) for n in range(130)]


@pytest.mark.asyncio
async def test_quiet_rings_no_bell() -> None:
    runtime = FakeRuntime()
    output, screen = vt100()
    with (
        create_pipe_input() as pipe,
        create_app_session(input=pipe, output=output),
    ):
        ui = TerminalUI(drain_timeout=TIMEOUT, quiet=True)
        runtime.on_event = ui.on_event
        task = asyncio.create_task(ui.run_async(runtime, handle_signals=False))
        chat = Driver(ui, pipe, task)
        await chat.until(lambda: ui.app.is_running, "the application to start")
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        runtime.push(MessageReceived(peer=BOB, nick="bob", text="psst", sent_at_ms=0))
        await chat.until(lambda: "@bob 1 new" in ui.status_text(), "the unread count")
        ui.request_quit()
        await asyncio.wait_for(task, TIMEOUT)
    assert "\a" not in screen.getvalue()


@pytest.mark.asyncio
async def test_join_msg_query_switch_and_leave_steer_where_lines_go() -> None:
    runtime = FakeRuntime()
    runtime.rows = [PeerStatus(BOB, "bob", True, False, 1.0, None, 0, ("lobby", "dev"))]
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=("lobby", "dev")))
        chat.say("/join #Dev")
        await chat.shows(r"\* you joined #dev \(1 other here\); lines you type go there$")
        chat.say("for dev")
        await chat.until(lambda: runtime.sent_in[-1:] == ["dev"], "a line said in #dev")
        chat.say("/msg bob just you")
        await chat.until(lambda: runtime.sent_to[-1:] == [[BOB]], "a direct message")
        await chat.shows(r"\* sent to @bob — Alt-3 shows it$")
        assert chat.ui.status_text().startswith(" #dev (2 members)")  # /msg stays here
        chat.say("/rooms")
        await chat.shows(r"\* 2 rooms:\n +#dev  2 members \(you are in\)\n +#lobby  2 members")
        chat.say("/query nobody")
        await chat.shows(r"\* nobody called nobody is here — /peers lists who is$")
        chat.say("/switch #lobby")
        await chat.until(lambda: chat.ui.status_text().startswith(" #lobby"))
        chat.say("/leave dev")
        await chat.shows(r"\* you left #dev$")
        assert runtime.rooms == ("lobby",)
        chat.say("/join bad/name")
        await chat.shows(r"not joined: a room name holds letters, digits")
        chat.say("/join two words")
        await chat.shows(r"usage: /join NAME, or /join NAME --key-file FILE for a keyed room$")


@pytest.mark.asyncio
async def test_join_with_a_key_file_keys_the_room_and_a_bad_file_is_one_line(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "secret.key"
    key_file.write_text("our secret room\n")
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say(f"/join secret --key-file {key_file}")
        await chat.shows(r"you joined #secret \(nobody else yet, keyed: only holders of its")
        key = runtime.keys["secret"]
        assert key is not None and len(key) == 32
        chat.say(f"/join other --key-file {tmp_path / 'missing'}")
        await chat.shows(r"not joined: cannot read --key-file .*missing: No such file")
        assert "other" not in runtime.rooms


@pytest.mark.asyncio
async def test_a_member_joining_a_room_is_shown_in_that_rooms_pane() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(PeerJoined(peer=BOB, nick="bob", rooms=LOBBY))
        chat.say("/join dev")
        await chat.shows(r"you joined #dev")
        runtime.push(MemberJoined(peer=BOB, nick="bob", room="elsewhere"))  # not ours
        runtime.push(MemberJoined(peer=BOB, nick="bob", room="dev"))
        await chat.shows(r"^\d\d:\d\d \* bob \(127\.0\.0\.1:9001\) joined #dev$")
        assert "elsewhere" not in chat.pane
        await chat.until(lambda: chat.ui.status_text().startswith(" #dev (2 members)"))


@pytest.mark.asyncio
async def test_a_send_the_kernel_refused_is_one_warning_line() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(SendFailed(peer=("192.168.1.255", 9000), reason="Permission denied", count=1))
        await chat.shows(
            r"^\d\d:\d\d \* could not send to 192\.168\.1\.255:9000: Permission denied$"
        )
        runtime.push(SendFailed(peer=BOB, reason="Network is unreachable", count=4))
        await chat.shows(
            r"\* could not send to 127\.0\.0\.1:9001 \(4 datagrams\): Network is unreachable$"
        )


@pytest.mark.asyncio
async def test_hostile_message_is_shown_escaped_and_never_reaches_the_terminal() -> None:
    runtime = FakeRuntime()
    output, screen = vt100()
    async with running(runtime, output) as chat:
        runtime.push(
            MessageReceived(
                peer=BOB,
                nick="m\x1b[31mallory",
                text="\x1b[2J\x1b]0;owned\x07",
                sent_at_ms=0,
                room="lobby",
            )
        )
        await chat.shows(re.escape(r"m\x1b[31mallory: \x1b[2J\x1b]0;owned\x07"))
        runtime.push(
            MessageReceived(
                peer=BOB, nick="bob", text="\u202eevil\u0085", sent_at_ms=0, room="lobby"
            )
        )
        await chat.shows(re.escape(r"bob: \u202eevil\x85"))
        chat.say("/quit")
        await chat.exit_status()
    drawn = screen.getvalue()
    assert "owned" in drawn  # the text was drawn...
    assert "\x1b]0;owned" not in drawn and "\x07" not in drawn  # ...but not as a title
    assert "\u202e" not in drawn and "\x1b[31mallory" not in drawn


# -- commands ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_help_lists_every_command() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("/help")
        await chat.shows(r"keys:")
        for command in ("/help", "/peers", "/nick NAME", "/peer add|del", "/stats", "/model"):
            assert command in chat.pane
        assert "/resend N" in chat.pane and "/quit, /q, /exit" in chat.pane


@pytest.mark.asyncio
async def test_peers_shows_address_nick_last_seen_round_trip_and_pending() -> None:
    runtime = FakeRuntime()
    runtime.rows = [
        PeerStatus(
            peer=BOB, nick="bob", present=True, configured=True, silent_for=2.4, rtt=0.0004,
            pending=1, rooms=("lobby", "dev"),
        ),
        PeerStatus(
            peer=CAROL, nick="", present=False, configured=False, silent_for=None, rtt=None,
            pending=0,
        ),
        PeerStatus(
            peer=("127.0.0.1", 8080), nick="", present=True, configured=False, silent_for=3.0,
            rtt=None, pending=0, dialect="raw", encoding="gb18030",
        ),
    ]  # fmt: skip
    async with running(runtime) as chat:
        chat.say("/peers")
        await chat.shows(
            r"^ +127\.0\.0\.1:9001 +bob +#lobby #dev +here, configured +seen 2 s ago"
            r" +rtt 0\.4 ms +1 pending$"
        )
        await chat.shows(r"^ +127\.0\.0\.1:9002 +- +- +away +seen never +rtt - +0 pending$")
        await chat.shows(r"^ +127\.0\.0\.1:8080 +\(raw, gb18030\) +- +here +seen 3 s ago")
        runtime.rows = []
        chat.say("/peers")
        await chat.shows(r"no peers yet")


@pytest.mark.asyncio
async def test_stats_shows_the_counters_and_round_trips() -> None:
    runtime = FakeRuntime()
    runtime.rows = [
        PeerStatus(
            peer=BOB, nick="bob", present=True, configured=True, silent_for=0.0, rtt=0.0021,
            pending=0,
        )
    ]  # fmt: skip
    async with running(runtime) as chat:
        chat.say("/stats")
        await chat.shows(r"messages: 3 sent · 2 delivered · 1 failed · 4 received")
        await chat.shows(r"5 retransmitted")
        await chat.shows(r"dropped: 6 duplicates · 7 malformed · 8 foreign")
        await chat.shows(r"round trip: bob 2\.1 ms")


@pytest.mark.asyncio
async def test_model_names_the_concurrency_model() -> None:
    async with running(FakeRuntime()) as chat:
        chat.say("/model")
        await chat.shows(r"\* model: thread \(a receiving thread and a sending thread")


@pytest.mark.asyncio
async def test_nick_changes_the_nickname_and_a_bad_one_is_one_error_line() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("/nick 爱丽丝")
        await chat.shows(r"\* you are now 爱丽丝$")
        assert runtime.nick == "爱丽丝"
        await chat.until(lambda: chat.ui.status_text().startswith(" #lobby (1 member) · 爱丽丝 ·"))
        chat.say("hi")
        await chat.shows(r"爱丽丝: hi  …$")
        chat.type("\x1b[200~/nick bad\x1bname\x1b[201~" + ENTER)  # pasted: ESC stays ESC
        await chat.shows(r"nickname not changed: a nickname cannot hold control characters$")
        chat.say("/nick " + "x" * 40)
        await chat.shows(r"nickname not changed: a nickname is at most 32 bytes")
        chat.say("/nick refused")
        await chat.shows(r"nickname not changed: the runtime says no$")
        chat.say("/nick")
        await chat.shows(r"nickname not changed: usage: /nick NAME$")
        assert runtime.nick == "爱丽丝"


@pytest.mark.asyncio
async def test_peer_add_and_del_resolve_the_address_and_report_bad_ones() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("/peer add 127.0.0.1:9005")
        await chat.shows(r"\* added 127\.0\.0\.1:9005")
        assert runtime.added == [("127.0.0.1", 9005)]
        chat.say("/peer add 127.0.0.1")
        await chat.until(lambda: runtime.added[-1:] == [("127.0.0.1", 9000)], "default port")
        chat.say("/peer add 127.0.0.1:99999")
        await chat.shows(r"\* peer not added: port must be a number from 0 to 65535")
        chat.say("/peer add [::1:9000")
        await chat.shows(r"\* peer not added: malformed peer address")
        chat.say("/peer add 1.2.3")
        await chat.shows(r"\* peer not added: malformed peer address '1\.2\.3'")
        chat.say("/peer add 224.0.0.1")
        await chat.shows(r"\* peer not added: 224\.0\.0\.1 is a multicast address")
        chat.say("/peer del 127.0.0.1:9001")
        await chat.shows(r"127\.0\.0\.1:9001 is not a peer")
        runtime.rows = [
            PeerStatus(
                peer=BOB, nick="bob", present=True, configured=False, silent_for=0.0, rtt=None,
                pending=0,
            )
        ]  # fmt: skip
        chat.say("/peer del 127.0.0.1:9001")
        await chat.shows(r"\* removed 127\.0\.0\.1:9001")
        assert runtime.removed == [BOB]
        chat.say("/peer list")
        await chat.shows(r"usage: /peer add HOST\[:PORT\] or /peer del HOST\[:PORT\]")
        assert len(runtime.added) == 2


@pytest.mark.asyncio
async def test_unknown_command_gets_a_hint() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("/frobnicate now")
        await chat.shows(r"\* unknown command /frobnicate — try /help")
        assert runtime.sent == []


@pytest.mark.asyncio
async def test_tab_completes_command_names_and_peer_subcommands() -> None:
    async with running(FakeRuntime()) as chat:
        chat.type("/mo\t")
        await chat.until(lambda: chat.ui.input.text == "/model")
        chat.type(CTRL_U + "/peer a\t")
        await chat.until(lambda: chat.ui.input.text == "/peer add")
        chat.type(CTRL_U + "/ex\t")
        await chat.until(lambda: chat.ui.input.text == "/exit")


@pytest.mark.asyncio
async def test_page_up_scrolls_back_and_page_down_returns_to_the_newest() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        for number in range(120):
            runtime.push(
                MessageReceived(
                    peer=BOB, nick="bob", text=f"line {number}", sent_at_ms=0, room="lobby"
                )
            )
        await chat.shows(r"bob: line 119$")
        chat.type(PAGE_UP)
        await chat.until(lambda: "scrolled back" in chat.ui.status_text(), "scrolling back")
        runtime.push(MessageReceived(peer=BOB, nick="bob", text="news", sent_at_ms=0, room="lobby"))
        await chat.until(lambda: "1 new below" in chat.ui.status_text(), "the unseen count")
        for _ in range(10):
            chat.type(PAGE_DOWN)
        await chat.until(lambda: "scrolled back" not in chat.ui.status_text(), "following")


# -- quitting ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_quit_waits_for_delivery_then_closes_the_runtime() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say("bye now")
        await chat.until(lambda: runtime.sent == ["bye now"])
        runtime.push(delivered(1))
        await chat.shows(r"✓")
        chat.say("/quit")
        assert await chat.exit_status() == 0
    assert runtime.calls == ["wait_delivered", "close"]


@pytest.mark.asyncio
@pytest.mark.parametrize("command", ["/q", "/exit"])
async def test_q_and_exit_quit_like_quit(command: str) -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.say(command)
        assert await chat.exit_status() == 0
    assert runtime.calls == ["wait_delivered", "close"] and runtime.sent == []


@pytest.mark.asyncio
async def test_waiting_to_quit_counts_deliveries_in_good_english() -> None:
    runtime = FakeRuntime()
    runtime.hold_delivery = True
    async with running(runtime) as chat:
        chat.say("one")
        chat.say("two")
        await chat.until(lambda: runtime.sent == ["one", "two"])
        chat.type(CTRL_D)
        await chat.shows(r"\* waiting for 2 deliveries… Ctrl-C to quit now$")
        chat.say("more?")
        await chat.shows(r"quitting: waiting for deliveries — Ctrl-C or /quit to quit now$")
        chat.say("/q")  # asked again: at once
        await chat.exit_status()


@pytest.mark.asyncio
async def test_ctrl_d_on_an_empty_line_quits_and_elsewhere_deletes() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        chat.type("ab\x1b[D" + CTRL_D)  # Left, then Ctrl-D deletes the "b"
        await chat.until(lambda: chat.ui.input.text == "a")
        assert not chat.task.done()
        chat.type(CTRL_U + CTRL_D)
        assert await chat.exit_status() == 0
    assert runtime.calls == ["wait_delivered", "close"]


@pytest.mark.asyncio
async def test_ctrl_c_waits_for_pending_deliveries_and_a_second_one_quits_at_once() -> None:
    runtime = FakeRuntime()
    runtime.hold_delivery = True
    async with running(runtime) as chat:
        chat.say("in flight")
        await chat.until(lambda: runtime.sent == ["in flight"])
        chat.type(CTRL_C)
        await chat.shows(r"\* waiting for 1 delivery… Ctrl-C again to quit now$")
        await chat.until(lambda: "waiting for 1 delivery… Ctrl-C again" in chat.ui.status_text())
        assert not chat.task.done()
        chat.type(CTRL_C)
        assert await chat.exit_status() == 1  # quit with the message unconfirmed
    assert runtime.calls == ["wait_delivered", "close"]


@pytest.mark.asyncio
async def test_delivery_while_waiting_to_quit_ends_the_wait() -> None:
    runtime = FakeRuntime()
    runtime.hold_delivery = True
    async with running(runtime) as chat:
        chat.say("in flight")
        await chat.until(lambda: runtime.sent == ["in flight"])
        chat.say("/quit")
        await chat.shows(r"\* waiting for 1 delivery… Ctrl-C to quit now$")  # not "again"
        runtime.push(delivered(1))
        await chat.shows(r"in flight  ✓ 1\.2 ms$")
        runtime.release.set()
        assert await chat.exit_status() == 0


@pytest.mark.asyncio
async def test_sigterm_quits_like_ctrl_c() -> None:
    runtime = FakeRuntime()

    def safety_net(*_: object) -> None:
        pytest.fail("SIGTERM reached the Python handler instead of the UI")

    previous = signal.signal(signal.SIGTERM, safety_net)
    try:
        async with running(runtime, handle_signals=True) as chat:
            os.kill(os.getpid(), signal.SIGTERM)
            assert await chat.exit_status() == 0
        assert runtime.calls == ["wait_delivered", "close"]
        assert signal.getsignal(signal.SIGTERM) is safety_net  # restored afterwards
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- colours -----------------------------------------------------------------------

COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-7]|9[0-7]|38;5;\d+)[;m]")


@pytest.mark.asyncio
async def test_no_color_draws_without_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    for no_color in ("", "1"):
        monkeypatch.setenv("NO_COLOR", no_color)
        runtime = FakeRuntime()
        output, screen = vt100()
        async with running(runtime, output) as chat:
            runtime.push(
                MessageReceived(peer=BOB, nick="bob", text="colourful?", sent_at_ms=0, room="lobby")
            )
            await chat.shows(r"bob: colourful\?")
            chat.say("/quit")
            await chat.exit_status()
        assert bool(COLOUR.search(screen.getvalue())) is not bool(no_color)
        assert ("colourful?" in screen.getvalue()) is True


# -- layout ------------------------------------------------------------------------


def test_long_lines_wrap_between_words_and_keep_the_delivery_state_whole() -> None:
    words = "tiny words " * 5 + "你好" * 10
    row: StyleAndTextTuples = [("class:time", "09:45 "), ("", "alice: "), ("", words)]
    row += [("", "  "), ("class:state.delivered", "✓ 12 ms")]
    lines = [fragment_list_to_text(line) for line in wrap(row, 30)]
    assert lines == [
        "09:45 alice: tiny words tiny ",
        "      words tiny words tiny ",
        "      words tiny words 你好你",  # CJK has no spaces: it breaks anywhere
        "      好你好你好你好你好你好你",
        "      好你好你好  ✓ 12 ms",
    ]
    assert all(get_cwidth(line) <= 30 for line in lines)
    assert WRAP_INDENT == 6


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # five code points, one glyph
FLAG = "\U0001f1ef\U0001f1f5"  # two regional indicators
CLUSTERS = [FAMILY, FLAG, "\U0001f44d\U0001f3fd", "e\u0301", "\u2764\ufe0f", "你"]


def cluster_starts(text: str) -> set[int]:
    """Where each cluster of CLUSTERS (or a single code point) starts in `text`."""
    starts, index = set(), 0
    while index < len(text):
        starts.add(index)
        index += next((len(c) for c in CLUSTERS if text.startswith(c, index)), 1)
    return starts


def test_wrapping_counts_grapheme_clusters_and_never_splits_one() -> None:
    body = "".join(CLUSTERS) * 8
    row: StyleAndTextTuples = [("class:time", "09:45 "), ("", "bob: "), ("", body)]
    lines = [fragment_list_to_text(line) for line in wrap(row, 20)]
    # Every line ends at a cluster boundary, fits, and is full but for the last one.
    text = lines[0][len("09:45 bob: ") :] + "".join(line[WRAP_INDENT:] for line in lines[1:])
    assert text == body
    boundaries, index = cluster_starts(body), len(lines[0]) - len("09:45 bob: ")
    for line in lines[1:]:
        assert index in boundaries  # where this line starts
        index += len(line) - WRAP_INDENT
    assert all(wcwidth.wcswidth(line) <= 20 for line in lines)
    assert all(wcwidth.wcswidth(line) >= 19 for line in lines[:-1])
    assert wcwidth.wcswidth(lines[0]) >= 19  # the family counts 2 columns, not 6


def test_command_columns_line_up_whatever_the_nicknames_are_made_of() -> None:
    rows = [
        PeerStatus(
            peer=BOB, nick=FAMILY + FLAG, present=True, configured=False, silent_for=1.0,
            rtt=None, pending=0,
        ),
        PeerStatus(
            peer=CAROL, nick="carol", present=True, configured=False, silent_for=1.0, rtt=None,
            pending=0,
        ),
    ]  # fmt: skip
    family_line, carol_line = peers_lines(rows)[1:]
    here = [wcwidth.wcswidth(line[: line.index("here")]) for line in (family_line, carol_line)]
    assert here[0] == here[1]


@pytest.mark.asyncio
async def test_the_screen_gives_each_grapheme_cluster_one_cell_of_its_width() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(
            MessageReceived(
                peer=BOB, nick="bob", text=f"{FAMILY}{FLAG}e\u0301x", sent_at_ms=0, room="lobby"
            )
        )
        await chat.shows("bob: ")
        chat.ui.app.invalidate()
        await chat.until(lambda: _row_with(chat.ui, FAMILY) is not None, "the family drawn")
        cells = _row_with(chat.ui, FAMILY)
        assert cells is not None
        start = next(x for x, cell in cells.items() if cell.char == FAMILY)
        # What prompt_toolkit's renderer writes, and how far it moves for each cell.
        assert [(cells[start + x].char, cells[start + x].width) for x in (0, 2, 4, 5)] == [
            (FAMILY, 2),
            (FLAG, 2),
            ("e\u0301", 1),
            ("x", 1),
        ]
        status = _row_with(chat.ui, " alice · ")
        assert status is not None and "class:status" in status[0].style


def _row_with(ui: TerminalUI, text: str) -> dict[int, Char] | None:
    """The last drawn screen row holding `text` (as one cell, or a run of cells)."""
    screen = ui.app.renderer._last_screen
    if screen is None:
        return None
    for y in range(screen.height):
        row = screen.data_buffer[y]
        drawn = "".join(row[x].char for x in range(max(row, default=-1) + 1))
        if text in drawn:
            return dict(row)
    return None


@pytest.mark.asyncio
async def test_tabs_in_a_message_become_spaces() -> None:
    runtime = FakeRuntime()
    async with running(runtime) as chat:
        runtime.push(MessageReceived(peer=BOB, nick="bob", text="a\tb", sent_at_ms=0, room="lobby"))
        await chat.shows(r"bob: a    b$")


ALICE_INSTANCE = b"\xaa" * 8
BOB_INSTANCE = b"\xbb" * 8
WEEK = 7 * 86400.0


def away_bob() -> PeerStatus:
    """Bob, seen in this run and gone: a udpchat peer whose installation we know."""
    return PeerStatus(BOB, "bob", False, False, 60.0, None, 0, instance=BOB_INSTANCE)


@pytest.mark.asyncio
async def test_a_message_for_someone_away_is_queued_on_disk_listed_and_can_be_cancelled(
    tmp_path: Path,
) -> None:
    history = History.open(tmp_path / "history.sqlite3")
    runtime = FakeRuntime()
    runtime.rows = [away_bob()]
    async with running(runtime, journal=Journal(history), keep=WEEK) as chat:
        chat.say("/query bob")
        await chat.shows(r"lines you type go to .* alone")
        chat.say("see you tomorrow")
        await chat.until(lambda: runtime.sent == ["see you tomorrow"], "the message sent")
        key = runtime.keys_sent[0]
        assert key is not None and key[:8] == ALICE_INSTANCE
        (queued,) = history.outbox()  # on disk before the runtime had it
        assert (queued.key, queued.instance, queued.peer_nick) == (key, BOB_INSTANCE, "bob")
        runtime.held_ids.add(1)
        runtime.push(
            MessageHeld(message_id=1, peer=BOB, nick="bob", reason="bob is away", expires_in=WEEK)
        )
        await chat.shows(r"see you tomorrow  queued: bob is away — /queue$")
        chat.say("/queue")
        await chat.shows(r"1 queued \(/cancel N takes one back\):")
        await chat.shows(r"1\. to bob: 'see you tomorrow' — bob is away; kept 7 days more")
        chat.say("/cancel 2")
        await chat.shows(r"usage: /cancel N, where N is a number /queue lists \(1 to 1\)")
        chat.say("/cancel 1")
        await chat.shows(r"see you tomorrow  cancelled$")
        await chat.shows(r"\* cancelled: it will not be sent")
        assert history.outbox() == []
        chat.say("/queue")
        await chat.shows(r"nothing is queued")
        chat.say("/cancel 1")
        await chat.shows(r"\* nothing is queued")


@pytest.mark.asyncio
async def test_the_outbox_of_an_earlier_run_is_handed_to_the_runtime_at_start(
    tmp_path: Path,
) -> None:
    from udpchat.store import OutboxEntry

    history = History.open(tmp_path / "history.sqlite3")
    key = ALICE_INSTANCE + bytes(8)
    expires = 1_764_000_000_000 + int(WEEK * 1000)
    row = history.add_sent(
        "@bob", "alice", "from yesterday", 1_764_000_000_000, key=key,
        outbox=OutboxEntry(BOB_INSTANCE, "bob", expires),
    )  # fmt: skip
    runtime = FakeRuntime()
    async with running(runtime, journal=Journal(history), keep=WEEK) as chat:
        await chat.shows(r"1 message from an earlier run still to be delivered — /queue lists")
        assert runtime.sent == ["from yesterday"]
        assert runtime.keys_sent == [key]
        assert runtime.outboxed == [Outboxed(BOB_INSTANCE, "bob", expires)]
        runtime.push(MessageDelivered(message_id=1, peer=BOB, elapsed=0.2))
        await chat.shows(r"✓ delivered to .*: from yesterday \(it waited in the outbox\)")
    assert history.outbox() == []
    assert [m.state for m in history.select() if m.id == row] == ["delivered"]
