"""Real `udpchat` processes on the virtual LAN (tests/lan.py): found with no `--peer`.

Every host is a network namespace of its own, so every chat uses the default ports (9000
for the chat, 21277 for discovery) and its default bind address, 0.0.0.0, as on a real
LAN. Chats run in `--jsonl` mode, read line by line with a timeout per line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from lan import Host, VirtualLan, read_line

from udpchat.runtimes import MODELS

OpenLan = Callable[..., VirtualLan]
LINE_TIMEOUT = 15.0
JOIN_LIMIT = 2.0
"""Seconds from the last chat's start to everyone seeing everyone: the issue's target."""


class LanChat:
    """One udpchat in line mode on a host of the virtual LAN."""

    def __init__(self, lan: VirtualLan, host: Host, model: str, *args: str) -> None:
        self.host = host
        self.process = lan.run(
            host,
            [sys.executable, "-m", "udpchat", "--jsonl", "--name", host.name, "--model", model,
             *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.seen: list[dict[str, Any]] = []
        self.expect(lambda e: e["event"] == "ready")

    def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = LINE_TIMEOUT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = read_line(self.process, left)
            except TimeoutError:
                break
            event: dict[str, Any] = json.loads(line)
            self.seen.append(event)
            if match(event):
                return event
        pytest.fail(f"{self.host.name}: nothing matching within {timeout} s; saw {self.seen}")

    def joined(self, nicks: set[str]) -> None:
        left = set(nicks)
        while left:
            event = self.expect(lambda e: e["event"] == "peer_joined")
            left.discard(event["nick"])

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode("utf-8") + b"\n")
        self.process.stdin.flush()


def stamp(event: dict[str, Any]) -> float:
    """An event's `time` (ISO 8601 with milliseconds) as seconds since the epoch."""
    return datetime.fromisoformat(event["time"]).timestamp()


def start_all(lan: VirtualLan, models: tuple[str, ...], *args: str) -> list[LanChat]:
    return [LanChat(lan, host, model, *args) for host, model in zip(lan.hosts, models, strict=True)]


def start_and_meet(lan: VirtualLan, models: tuple[str, ...], *args: str) -> list[LanChat]:
    """A chat of each model on each host, once every one has seen every other join."""
    chats = start_all(lan, models, *args)
    names = {host.name for host in lan.hosts}
    for chat in chats:
        chat.joined(names - {chat.host.name})
    return chats


MIXES = [pytest.param((m, m, m), id=m) for m in MODELS] + [
    pytest.param(tuple(MODELS), id="-".join(MODELS))
]


@pytest.mark.parametrize("models", MIXES)
def test_three_hosts_started_with_no_peer_chat_within_two_seconds(
    open_lan: OpenLan, models: tuple[str, ...]
) -> None:
    lan = open_lan(hosts=3)
    chats = start_and_meet(lan, models)
    # From the chats' own stamps: the last one ready, the last join anyone saw.
    last_ready = max(stamp(e) for chat in chats for e in chat.seen if e["event"] == "ready")
    last_join = max(stamp(e) for chat in chats for e in chat.seen if e["event"] == "peer_joined")
    took = last_join - last_ready
    assert took < JOIN_LIMIT, f"everyone saw everyone {took:.3f} s after the last start"
    print(f"\n[{'-'.join(models)}] everyone saw everyone {took * 1000:.0f} ms after the last start")
    chats[0].say("hello, LAN")
    for chat in chats[1:]:
        event = chat.expect(lambda e: e["event"] == "message_received")
        assert (event["text"], event["nick"], event["room"]) == ("hello, LAN", "h1", "lobby")
    chats[0].expect(lambda e: e["event"] == "message_delivered")
    chats[0].expect(lambda e: e["event"] == "message_delivered")
    # A direct message reaches h2 alone: h3's next message from h1 is the one after it.
    chats[0].say("/msg h2 just for h2")
    event = chats[1].expect(lambda e: e["event"] == "message_received")
    assert (event["text"], event.get("direct"), "room" in event) == ("just for h2", True, False)
    delivered = chats[0].expect(lambda e: e["event"] == "message_delivered")
    assert delivered["peer"] == f"{lan.hosts[1].address}:9000"
    chats[0].say("after the whisper")
    event = chats[2].expect(lambda e: e["event"] == "message_received")
    assert event["text"] == "after the whisper"


def test_hosts_find_each_other_by_broadcast_where_multicast_is_dropped(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=3)
    lan.block_multicast()
    start_and_meet(lan, ("thread", "process", "asyncio"))  # fails unless all meet


def test_discovery_finds_each_other_through_thirty_percent_loss(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    lan.set_loss(30)
    # The start-up announcements (0, 1, 2, 4, 8, 16 s and on), each sent to the group
    # and broadcast, and their answers: all lost only rarely.
    chats = start_and_meet(lan, ("thread", "process", "asyncio"))
    chats[0].say("through the loss")
    for chat in chats[1:]:
        chat.expect(lambda e: e["event"] == "message_received", timeout=30)


def test_without_discovery_one_named_member_is_enough_to_meet_the_room(
    open_lan: OpenLan,
) -> None:
    """The issue's case: h1 and h2 name each other, h3 names only h1. Before rooms, h1
    saw a three-way chat while h2 and h3 never saw each other."""
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    chats = [
        LanChat(lan, h1, "thread", "--no-discovery", "--peer", h2.address),
        LanChat(lan, h2, "process", "--no-discovery", "--peer", h1.address),
        LanChat(lan, h3, "asyncio", "--no-discovery", "--peer", h1.address),
    ]
    for chat, others in zip(chats, ({"h2", "h3"}, {"h1", "h3"}, {"h1", "h2"}), strict=True):
        chat.joined(others)
    chats[1].say("h3, I never named you")
    event = chats[2].expect(lambda e: e["event"] == "message_received")
    assert (event["nick"], event["text"]) == ("h2", "h3, I never named you")


def test_without_discovery_nobody_is_found_but_peer_still_works(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    quiet = LanChat(lan, h1, "thread", "--no-discovery", "--peer", h2.address)
    named = LanChat(lan, h2, "thread", "--no-discovery")
    third = LanChat(lan, h3, "thread")  # announces, but nobody listens
    quiet.joined({"h2"})
    named.joined({"h1"})
    quiet.say("only to h2")
    named.expect(lambda e: e["event"] == "message_received" and e["text"] == "only to h2")
    third.say("anyone?")
    third.expect(lambda e: e["event"] == "message_refused" and "nobody else" in e["reason"])
    assert not [e for e in third.seen if e["event"] == "peer_joined"]


@pytest.mark.parametrize("victim", [0, 1, 2], ids=["thread", "process", "asyncio"])
def test_a_host_killed_with_sigkill_is_gone_within_fifteen_seconds_for_who_talks_to_it(
    open_lan: OpenLan, victim: int
) -> None:
    lan = open_lan(hosts=3)
    chats = start_and_meet(lan, ("thread", "process", "asyncio"))
    dead = chats[victim]
    talker, other = (chat for chat in chats if chat is not dead)
    lan.kill(dead.process)  # SIGKILL: no BYE
    killed = time.monotonic()
    talker.say("who is still here?")
    left = talker.expect(lambda e: e["event"] == "peer_left", timeout=20)
    # The process model's children outlive their parent long enough to say BYE.
    reason = "bye" if victim == 1 else "timed out"
    assert (left["nick"], left["reason"]) == (dead.host.name, reason)
    assert time.monotonic() - killed < 15.0 + 1.0  # 1 s for reading the line
    event = other.expect(lambda e: e["event"] == "message_received")
    assert event["text"] == "who is still here?"


def test_ipv6_chats_find_each_other_by_link_local_multicast(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    chats = start_and_meet(lan, ("thread", "process", "asyncio"), "--bind", "::")
    chats[2].say("over IPv6")
    for chat in chats[:2]:
        event = chat.expect(lambda e: e["event"] == "message_received")
        assert event["text"] == "over IPv6"


def test_a_host_behind_a_router_named_by_peer_meets_the_whole_lobby_through_one_member(
    open_lan: OpenLan,
) -> None:
    """Announcements do not cross the router; h1's roster of the lobby, sent to r1 (which
    it did not find by discovery), is how r1 and h2 meet."""
    lan = open_lan(hosts=2, remote_hosts=1)
    h1, h2 = lan.hosts
    (r1,) = lan.remote_hosts
    local = [LanChat(lan, h1, "thread"), LanChat(lan, h2, "asyncio")]
    remote = LanChat(lan, r1, "process", "--peer", h1.address)
    local[0].joined({"h2", "r1"})
    local[1].joined({"h1", "r1"})
    remote.joined({"h1", "h2"})
    remote.say("from behind the router")
    for chat in local:
        event = chat.expect(lambda e: e["event"] == "message_received")
        assert (event["nick"], event["text"], event["room"]) == (
            "r1",
            "from behind the router",
            "lobby",
        )
    local[1].say("to both")
    for chat in (local[0], remote):
        chat.expect(lambda e: e["event"] == "message_received" and e["text"] == "to both")


def test_two_chats_on_one_host_and_one_on_another_all_find_each_other(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=2)
    h1, h2 = lan.hosts
    first = LanChat(lan, h1, "thread")
    # Same host, no --port: 9000 is taken, so it takes a free port; discovery finds it.
    second = LanChat(lan, h1, "asyncio", "--name", "h1-second")
    other = LanChat(lan, h2, "process")
    first.joined({"h1-second", "h2"})
    second.joined({"h1", "h2"})
    other.joined({"h1", "h1-second"})
    ports = {e["address"] for chat in (first, second) for e in chat.seen if e["event"] == "ready"}
    assert len(ports) == 2 and "0.0.0.0:9000" in ports


def test_a_host_whose_cable_is_pulled_is_gone_and_comes_back_when_plugged_in(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=3)
    chats = start_and_meet(lan, ("thread", "process", "asyncio"))
    h3 = lan.hosts[2]
    lan.disconnect(h3)
    chats[0].say("is h3 there?")
    left = chats[0].expect(lambda e: e["event"] == "peer_left", timeout=20)
    assert (left["nick"], left["reason"]) == ("h3", "timed out")
    lan.reconnect(h3)
    chats[2].say("back again")  # its first datagram through shows it present again
    event = chats[0].expect(lambda e: e["event"] == "peer_joined", timeout=20)
    assert event["nick"] == "h3"
    received = chats[0].expect(lambda e: e["event"] == "message_received")
    assert received["text"] == "back again"
