"""Line mode (udpchat/ui/lines.py) over a stand-in runtime: what scripts read in --jsonl."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from test_tui import FakeRuntime

from udpchat.protocol import Address, MessageDelivered
from udpchat.ui.lines import LineMode


class AnswersAtOnce(FakeRuntime):
    """A runtime whose peer acknowledges before `send` has returned, as an IPMsg client
    on a LAN does (RECVMSG well under a millisecond after the message)."""

    def send(
        self, text: str, to: Sequence[Address] | None = None, *, room: str | None = None
    ) -> int:
        message_id = super().send(text, to, room=room)
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
