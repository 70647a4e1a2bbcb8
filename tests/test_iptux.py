"""udpchat with `--ipmsg` and the real iptux (Debian's, headless: tests/iptux_lab.py) on
the virtual LAN: iptux on h1, udpchat in line mode on h2, both on UDP port 2425 and bound
to 0.0.0.0, as on a real LAN. udpchat finds iptux by its own BR_ENTRY broadcast;
messages go both ways, with Chinese text, acknowledged; quitting says BR_EXIT.

The reliability test sends 100 messages each way through 30 % loss on the bridge and
prints what each side delivered. udpchat sends one message at a time and retries it until
acknowledged (give-up 30 s). iptux retries only the message it sent last (4 tries, 1 s
apart): typed one after another, each of its messages goes once, so about 30 % are lost
on the way; udpchat must show each that arrives once, and every one it acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from iptux_lab import Iptux, missing_iptux
from lan import VirtualLan
from test_lan_chat import LanChat

from udpchat.protocol import ipmsg
from udpchat.runtimes import MODELS

OpenLan = Callable[..., VirtualLan]
MESSAGES = 100


@pytest.fixture
def iptux_lan(open_lan: OpenLan, tmp_path: Path) -> Iterator[tuple[VirtualLan, Iptux]]:
    reason = missing_iptux()
    if reason is not None:
        pytest.skip(reason)
    lan = open_lan(hosts=2)
    with Iptux(lan, lan.hosts[0], tmp_path / "iptux") as iptux:
        yield lan, iptux


def meet(lan: VirtualLan, iptux: Iptux, model: str) -> LanChat:
    """udpchat on h2 with --ipmsg, once each side lists the other."""
    chat = LanChat(lan, lan.hosts[1], model, "--ipmsg", "--no-discovery")
    assert chat.seen[0]["ipmsg"] is True
    joined = chat.expect(lambda e: e["event"] == "peer_joined" and e["dialect"] == "ipmsg")
    assert (joined["nick"], joined["group"], joined["host"]) == ("tux", "lab", "tuxhost")
    assert joined["peer"] == f"{iptux.address}:{ipmsg.PORT}"
    wait_until(lambda: iptux.knows(lan.hosts[1].address), 10.0, "iptux to list udpchat")
    return chat


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def quit_chat(chat: LanChat, timeout: float = 15.0) -> None:
    assert chat.process.stdin is not None
    chat.process.stdin.close()
    chat.process.wait(timeout=timeout)


@pytest.mark.parametrize("model", MODELS)
def test_udpchat_and_iptux_list_each_other_and_chat_both_ways_with_acknowledgements(
    iptux_lan: tuple[VirtualLan, Iptux], model: str
) -> None:
    lan, iptux = iptux_lan
    chat = meet(lan, iptux, model)
    text = f"你好 iptux, from the {model} model"
    chat.say(f"/msg tux {text}")
    sent = chat.expect(lambda e: e["event"] == "message_sent")
    delivered = chat.expect(lambda e: e["event"] in ("message_delivered", "delivery_failed"))
    assert (delivered["event"], delivered["message_id"]) == (
        "message_delivered",
        sent["message_id"],
    )
    iptux.wait_for_text(text, 10.0)  # iptux shows it (its notification holds the decoded text)
    logged = iptux.send_to_pal(lan.hosts[1].address, "你好 udpchat").packet()
    assert logged is not None and logged.extra.rstrip(b"\0") == "你好 udpchat".encode()
    got = chat.expect(lambda e: e["event"] == "message_received")
    assert (got["text"], got["nick"], got["dialect"], got["direct"]) == (
        "你好 udpchat",
        "tux",
        "ipmsg",
        True,
    )
    mark = len(iptux.received_packets())
    quit_chat(chat)

    def said_exit() -> bool:
        return any(
            p.address == lan.hosts[1].address
            and (packet := p.packet()) is not None
            and packet.mode == ipmsg.BR_EXIT
            for p in iptux.received_packets()[mark:]
        )

    wait_until(said_exit, 10.0, "iptux to hear udpchat's BR_EXIT")


# Its own waits are bounded (300 s for the exchange); it takes about two minutes, more
# than the suite's default limit of 120 s on a busy machine.
@pytest.mark.timeout(420)
def test_a_hundred_messages_each_way_through_30_percent_loss(
    iptux_lan: tuple[VirtualLan, Iptux],
) -> None:
    lan, iptux = iptux_lan
    chat = meet(lan, iptux, "thread")
    lan.set_loss(30)
    started = time.monotonic()
    ours = [f"udpchat {i:03d} 你好" for i in range(MESSAGES)]
    theirs = [f"iptux {i:03d} 你好" for i in range(MESSAGES)]
    for text in ours:
        chat.say(f"/msg tux {text}")
    iptux_sent: list[str] = []

    def type_in_iptux() -> None:
        for text in theirs:
            logged = iptux.send_to_pal(lan.hosts[1].address, text, timeout=30.0).packet()
            assert logged is not None
            iptux_sent.append(logged.extra.rstrip(b"\0").decode("utf-8", "replace"))

    typist = threading.Thread(target=type_in_iptux)
    typist.start()
    sent_ids: dict[int, str] = {}
    outcomes: dict[int, str] = {}
    received: list[str] = []

    def record(event: dict[str, Any]) -> bool:
        if event["event"] == "message_sent":
            sent_ids[event["message_id"]] = event["text"]
        elif event["event"] in ("message_delivered", "delivery_failed"):
            outcomes[event["message_id"]] = event["event"]
        elif event["event"] == "message_received":
            received.append(event["text"])
        return len(outcomes) == MESSAGES

    chat.expect(record, timeout=300.0)
    typist.join(timeout=300.0)
    assert not typist.is_alive()
    # iptux's last messages may still be on their way: up to 4 tries, 1 s apart.
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline and len(received) < MESSAGES:
        try:
            chat.expect(record, timeout=deadline - time.monotonic())
        except pytest.fail.Exception:
            break
    took = time.monotonic() - started
    lan.clear_loss()
    shown_by_iptux = iptux.received_texts()
    delivered = [sent_ids[i] for i, outcome in outcomes.items() if outcome == "message_delivered"]
    h2 = lan.hosts[1].address
    iptux_messages = {
        packet.number: packet.extra.rstrip(b"\0").decode("utf-8", "replace")
        for p in iptux.sent_packets()
        if p.address == h2 and (packet := p.packet()) is not None and packet.mode == ipmsg.SENDMSG
    }
    copies = sum(
        1
        for p in iptux.sent_packets()
        if p.address == h2 and (packet := p.packet()) is not None and packet.mode == ipmsg.SENDMSG
    )
    answered = {
        iptux_messages.get(int(number))
        for p in iptux.received_packets()
        if p.address == h2
        and (packet := p.packet()) is not None
        and packet.mode == ipmsg.RECVMSG
        and (number := packet.extra.rstrip(b"\0")).isdigit()
    } - {None}
    print(
        f"\n30 % loss, {MESSAGES} messages each way, {took:.0f} s:"
        f" udpchat -> iptux: {len(delivered)} acknowledged,"
        f" {sum(t in ours for t in shown_by_iptux)} shown by iptux;"
        f" iptux -> udpchat: {len(iptux_sent)} sent in {copies} datagrams,"
        f" {len(received)} shown by udpchat, {len(answered)} acknowledged to iptux"
    )
    # Nothing is reported delivered that iptux did not show; nothing is shown twice.
    assert set(delivered) <= set(shown_by_iptux)
    assert len([t for t in shown_by_iptux if t in ours]) == len(set(shown_by_iptux) & set(ours))
    assert len(set(received)) == len(received) and set(received) <= set(iptux_sent)
    # Every message udpchat acknowledged to iptux, it showed.
    assert answered <= set(received)
    # udpchat retries until its give-up (30 s): at 30 % loss each way, all arrive.
    assert len(delivered) == MESSAGES
    # iptux retries only its latest message (4 tries, 1 s apart): typed one after
    # another, most go once, and about 30 % are lost.
    assert len(received) >= MESSAGES // 2
    quit_chat(chat)
