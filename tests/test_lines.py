"""Line mode (udpchat/ui/lines.py) over a stand-in runtime: what scripts read in --jsonl."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from test_tui import FakeRuntime

from udpchat.archive import Journal
from udpchat.protocol import Address, MessageDelivered, MessageHeld, Outboxed, PeerStatus
from udpchat.store import History, Received
from udpchat.ui.lines import LineMode

BOB: Address = ("10.0.0.2", 9000)
WEEK = 7 * 86400.0


class AnswersAtOnce(FakeRuntime):
    """A runtime whose peer acknowledges before `send` has returned, as an IPMsg client
    on a LAN does (RECVMSG well under a millisecond after the message)."""

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
        message_id = super().send(text, to, room=room, key=key, outboxed=outboxed)
        self.push(MessageDelivered(message_id=message_id, peer=("10.0.0.2", 9000), elapsed=0.0))
        return message_id


def test_a_message_is_announced_as_sent_before_its_delivery_however_fast_that_is() -> None:
    runtime = AnswersAtOnce()
    out = io.StringIO()
    ui = LineMode(jsonl=True, stdin=io.StringIO("one\ntwo\n"), stdout=out, stderr=io.StringIO())
    runtime.on_event = ui.on_event
    assert ui.run(runtime) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    order = [(e["event"], e.get("message_id")) for e in events if "message_id" in e]
    assert order == [
        ("message_sent", 1),
        ("message_delivered", 1),
        ("message_sent", 2),
        ("message_delivered", 2),
    ]


class HoldsForAway(FakeRuntime):
    """A runtime whose only peer, bob, has left: direct messages wait for him."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = [PeerStatus(BOB, "bob", False, False, 60.0, None, 0, instance=b"b" * 8)]

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
        message_id = super().send(text, to, room=room, key=key, outboxed=outboxed)
        self.pending_count -= 1  # held, not on the wire: nothing to wait for at the end
        self.held_ids.add(message_id)
        held = MessageHeld(
            message_id=message_id, peer=BOB, nick="bob", reason="bob is away", expires_in=WEEK
        )
        self.push(held)
        return message_id


def run_lines(runtime: FakeRuntime, lines: str, *, jsonl: bool = True) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    ui = LineMode(jsonl=jsonl, stdin=io.StringIO(lines), stdout=out, stderr=err, keep=WEEK)
    runtime.on_event = ui.on_event
    return ui.run(runtime), out.getvalue(), err.getvalue()


def test_a_direct_message_to_someone_away_is_queued_listed_and_cancelled() -> None:
    runtime = HoldsForAway()
    status, out, _ = run_lines(runtime, "/msg bob one\n/msg bob two\n/queue\n/cancel 1\n/queue\n")
    events = [json.loads(line) for line in out.splitlines()]
    queued = [e for e in events if e["event"] == "message_queued"]
    assert [(e["message_id"], e["text"], e["to"], e["reason"]) for e in queued] == [
        (1, "one", "bob", "bob is away"),
        (2, "two", "bob", "bob is away"),
    ]
    first, second = [e["messages"] for e in events if e["event"] == "queue"]
    assert [(m["number"], m["message_id"], m["text"]) for m in first] == [
        (1, 1, "one"),
        (2, 2, "two"),
    ]
    assert [m["text"] for m in second] == ["two"]
    assert runtime.cancelled == [1]
    failed = [e for e in events if e["event"] == "delivery_failed"]
    assert [(e["message_id"], e["reason"]) for e in failed] == [(1, "cancelled")]
    # A cancelled message is the user's choice; one still waiting, with no history to keep
    # it, is lost at the end: exit status 1.
    assert status == 1


def test_what_waits_at_the_end_is_said_and_lost_without_a_history() -> None:
    status, out, err = run_lines(HoldsForAway(), "/msg bob later\n", jsonl=False)
    assert '* queued "later": bob is away; it goes when bob is back (kept 7 days)' in out
    assert "1 message waits for peers that are away, and is lost: no history keeps it" in err
    assert status == 1


def test_cancel_says_why_not() -> None:
    status, out, err = run_lines(FakeRuntime(), "/cancel 1\n/cancel x\n/queue\n", jsonl=False)
    assert err.count("udpchat: /cancel: nothing is queued") == 2
    assert "nothing is queued: every message sent has been delivered or has failed" in out
    assert status == 0  # nothing was sent, so nothing failed


def test_a_message_to_someone_known_only_from_the_history_waits_for_them(tmp_path: Path) -> None:
    history = History.open(tmp_path / "history.sqlite3")
    bob_key = b"b" * 8 + bytes(7) + b"\x01"
    history.add_received(
        [Received("@bob", "10.0.0.2:9000", "bob", "hi", 1, 1, "udpchat", bob_key, 9000)]
    )
    runtime = FakeRuntime()  # nobody here in this run
    out = io.StringIO()
    ui = LineMode(
        jsonl=True,
        stdin=io.StringIO("/msg bob are you back?\n/msg carol hello\n"),
        stdout=out,
        stderr=io.StringIO(),
        journal=Journal(history),
        instance=b"a" * 8,
        keep=WEEK,
    )
    runtime.on_event = ui.on_event
    ui.run(runtime)
    assert runtime.sent == ["are you back?"]
    (outboxed,) = runtime.outboxed
    assert outboxed is not None and (outboxed.instance, outboxed.nick) == (b"b" * 8, "bob")
    (queued,) = history.outbox()
    assert (queued.text, queued.instance, queued.conversation) == (
        "are you back?",
        b"b" * 8,
        "@bob",
    )
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    sent = [e for e in events if e["event"] == "message_sent"]
    assert [(e["text"], e["to"]) for e in sent] == [("are you back?", "bob")]
    refused = [e for e in events if e["event"] == "message_refused"]
    assert [e["reason"] for e in refused] == ["nobody called carol is here — /peers lists who is"]
