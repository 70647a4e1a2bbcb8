"""What peer text looks like once escaped for a terminal, and in `--jsonl`."""

from __future__ import annotations

import json

import pytest

from udpchat.protocol import (
    FileOffered,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    PeerStatus,
    VersionMismatched,
)
from udpchat.ui.commands import peers_lines
from udpchat.ui.conversations import Strangers, suppressed_text
from udpchat.ui.format import Names, deliveries, describe, escape, json_line, to_json

ZALGO = "Z" + "\u0301\u0316" * 500 + "algo"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
@pytest.mark.parametrize("keep_newlines", [False, True])
def test_line_and_paragraph_separators_are_escaped(separator: str, keep_newlines: bool) -> None:
    shown = escape(f"one{separator}two", keep_newlines=keep_newlines)
    assert shown == f"one\\u{ord(separator):04x}two"


def test_a_character_keeps_at_most_four_combining_marks_and_the_rest_are_counted() -> None:
    assert escape(ZALGO) == "Z\u0301\u0316\u0301\u0316[+996 combining marks]algo"
    line = describe(MessageReceived(peer=("127.0.0.1", 9001), nick="bob", text=ZALGO, sent_at_ms=0))
    assert line is not None and len(line) < 60


@pytest.mark.parametrize(
    "text",
    [
        "Vie\u0302\u0323t Nam",  # two marks on one letter
        "e\u0301\u0301\u0301\u0301",  # four: the most kept
        "देवनागरी",  # spacing marks between letters
        "👨‍👩‍👧 🇯🇵 👍🏽 ❤️",  # emoji sequences
        "你好, こんにちは",
    ],
)
def test_ordinary_text_with_marks_is_left_alone(text: str) -> None:
    assert escape(text) == text


def test_jsonl_escapes_the_separators_and_extra_marks_and_keeps_the_text_exact() -> None:
    text = "a\u2028b\u2029c " + ZALGO + " \U0001d167" * 2 + "\U0001d167" * 6
    line = to_json(MessageReceived(peer=("127.0.0.1", 9001), nick="bob", text=text, sent_at_ms=0))
    assert "\u2028" not in line and "\u2029" not in line
    assert "\\u2028" in line and "\\ud834\\udd67" in line  # outside the BMP: a surrogate pair
    assert line.count("\u0301") + line.count("\u0316") == 4  # the marks kept on the Z
    assert json.loads(line)["text"] == text
    assert json.loads(json_line("message_sent", text=text))["text"] == text


def test_deliveries_are_counted_in_good_english() -> None:
    assert [deliveries(n) for n in (0, 1, 2)] == ["0 deliveries", "1 delivery", "2 deliveries"]


BOB_HOME, BOB_AWAY, CAROL = ("10.0.0.2", 9000), ("10.0.0.3", 9000), ("10.0.0.4", 9000)


def test_two_peers_with_one_nickname_are_told_apart_and_keep_their_names() -> None:
    names = Names()
    assert names.of(BOB_HOME, "bob") == "bob"
    assert names.of(BOB_AWAY, "bob") == "bob (2)"
    assert names.of(CAROL, "carol") == "carol"
    assert names.of(BOB_HOME, "bob") == "bob"  # asked again, or back after leaving
    assert names.of(BOB_AWAY, "bob") == "bob (2)"
    assert names.of(CAROL, "bob") == "bob (3)"  # Carol renames herself bob
    assert names.of(BOB_HOME, "robert") == "robert"
    assert names.of(BOB_AWAY, "robert") == "robert (2)"
    assert names.of(CAROL, "") == ""  # a nickname not known yet is no name


def test_line_mode_names_each_peer_with_the_same_nickname_apart() -> None:
    names = Names()
    lines = [
        describe(PeerJoined(peer=BOB_HOME, nick="bob", rooms=("lobby",)), names=names),
        describe(PeerJoined(peer=BOB_AWAY, nick="bob", rooms=("lobby", "dev")), names=names),
        describe(
            MessageReceived(peer=BOB_AWAY, nick="bob", text="hi", sent_at_ms=0, room="lobby"),
            None,
            names,
        ),
        describe(MessageReceived(peer=BOB_HOME, nick="bob", text="yo", sent_at_ms=0), None, names),
        describe(MemberLeft(peer=BOB_AWAY, nick="bob", room="dev"), names=names),
        describe(MemberJoined(peer=BOB_HOME, nick="bob", room="dev"), names=names),
        describe(PeerRenamed(peer=BOB_AWAY, old_nick="bob", new_nick="bobby"), names=names),
        describe(PeerLeft(peer=BOB_HOME, nick="bob", reason=LeaveReason.BYE), names=names),
    ]
    assert lines == [
        "* bob (10.0.0.2:9000) joined #lobby",
        "* bob (2) (10.0.0.3:9000) joined #lobby, #dev",
        "#lobby bob (2): hi",
        "@bob: yo",
        "* bob (2) (10.0.0.3:9000) left #dev",
        "* bob (10.0.0.2:9000) joined #dev",
        "* bob (2) (10.0.0.3:9000) is now bobby",
        "* bob (10.0.0.2:9000) left",
    ]


def test_a_peer_of_another_protocol_version_is_named_once_with_what_to_do() -> None:
    older = describe(VersionMismatched(peer=BOB_HOME, version=1))
    assert older == (
        "* 10.0.0.2:9000 runs udpchat protocol version 1; this one speaks version 3,"
        " and the two cannot chat (that one needs updating)"
    )
    newer = describe(VersionMismatched(peer=BOB_HOME, version=4))
    assert newer is not None and newer.endswith("(this one needs updating)")


def test_jsonl_says_which_room_a_message_was_said_in_or_that_it_was_direct() -> None:
    said = json.loads(
        to_json(MessageReceived(peer=BOB_HOME, nick="bob", text="hi", sent_at_ms=0, room="dev"))
    )
    assert (said["room"], "direct" in said) == ("dev", False)
    whispered = json.loads(
        to_json(MessageReceived(peer=BOB_HOME, nick="bob", text="psst", sent_at_ms=0))
    )
    assert (whispered["direct"], "room" in whispered) == (True, False)
    joined = json.loads(to_json(PeerJoined(peer=BOB_HOME, nick="bob", rooms=("lobby", "dev"))))
    assert joined["rooms"] == ["lobby", "dev"]


def test_discovery_line_says_where_others_are_looked_for() -> None:
    from udpchat.ui.format import discovery_text

    assert discovery_text(None).startswith("discovery off")
    assert "on the LAN" in discovery_text(21277, ("0.0.0.0", 9000))
    assert "on this machine" in discovery_text(21277, ("127.0.0.1", 9000))
    assert "on this machine" in discovery_text(21277, ("::1", 9000))
    assert "on the LAN" in discovery_text(21277, ("fe80::1%eth0", 9000))


def test_a_strangers_direct_messages_are_limited_and_the_rest_counted() -> None:
    strangers = Strangers()
    mallory, bob = ("10.0.0.66", 9000), ("10.0.0.2", 9000)
    strangers.see(PeerJoined(peer=mallory, nick="mallory", rooms=("elsewhere",)))
    strangers.see(PeerJoined(peer=bob, nick="bob", rooms=("lobby",)))
    assert strangers.is_stranger(mallory, ("lobby",))
    said = MessageReceived(peer=mallory, nick="mallory", text="hi", sent_at_ms=0, room="lobby")
    assert [strangers.screen(said, ("lobby",), 0.0) for _ in range(9)] == [(True, 0)] * 9
    assert not strangers.is_stranger(bob, ("lobby",))
    outcomes = [strangers.admit(mallory, 0.0) for _ in range(8)]
    assert outcomes == [(True, 0)] * 5 + [(False, 1), (False, 0), (False, 0)]
    assert strangers.admit(mallory, 5.0) == (False, 0)  # half a token back: not yet
    assert strangers.admit(mallory, 10.0) == (True, 0)
    assert strangers.admit(mallory, 10.1) == (False, 4)  # reported once per 10 s
    strangers.answered(mallory)
    assert not strangers.is_stranger(mallory, ("lobby",))
    strangers.see(MemberJoined(peer=mallory, nick="mallory", room="lobby"))
    assert strangers.members("lobby") == [mallory, bob]
    strangers.see(MemberLeft(peer=mallory, nick="mallory", room="lobby"))
    strangers.see(PeerLeft(peer=bob, nick="bob", reason=LeaveReason.BYE))
    assert strangers.members("lobby") == []
    line = suppressed_text(mallory, "mallory", 3)
    assert line.startswith("* 3 direct messages from mallory (10.0.0.66:9000) not shown")


TUX = ("10.77.0.1", 2425)


def test_ip_messenger_users_are_marked_with_their_group_host_and_encoding() -> None:
    joined = PeerJoined(peer=TUX, nick="tux", dialect="ipmsg", group="研发部", host="vm")
    assert describe(joined) == "* tux (10.77.0.1:2425) joined (IP Messenger, group 研发部, host vm)"
    said = MessageReceived(
        peer=TUX, nick="tux", text="你好", sent_at_ms=0, dialect="ipmsg", encoding="gb18030"
    )
    assert describe(said) == "@tux (IPMsg, gb18030): 你好"
    offer = FileOffered(peer=TUX, nick="tux", name="报告\x1b[2J.pdf", size=128_000)
    assert describe(offer) == (
        "* tux (10.77.0.1:2425) offered a file 报告\\x1b[2J.pdf (125.0 KiB), not supported"
    )
    assert json.loads(to_json(offer))["event"] == "file_offered"
    row = PeerStatus(
        peer=TUX, nick="tux", present=True, configured=False, silent_for=2.0, rtt=None,
        pending=1, dialect="ipmsg", encoding="utf-8", group="lab", host="tuxhost",
    )  # fmt: skip
    (line,) = peers_lines([row])[1:]
    assert "tux (IPMsg, utf-8)  group lab, host tuxhost  here" in line


def test_an_ip_messenger_user_is_no_stranger() -> None:
    strangers = Strangers()
    strangers.see(PeerJoined(peer=TUX, nick="tux", dialect="ipmsg"))
    assert not strangers.is_stranger(TUX, ("lobby",))


def test_a_flood_from_many_ports_of_one_machine_is_limited_as_one_stranger() -> None:
    strangers = Strangers()
    outcomes = []
    for port in range(40000, 40100):
        said = MessageReceived(
            peer=("10.0.0.66", port), nick="", text="spam", sent_at_ms=0, dialect="raw"
        )
        outcomes.append(strangers.screen(said, ("lobby",), 0.0))
    assert sum(shown for shown, _ in outcomes) == Strangers.BURST
    assert sum(count for _, count in outcomes) == 1  # the first suppressed, reported at once
    later = MessageReceived(peer=("10.0.0.66", 41000), nick="", text="x", sent_at_ms=0)
    assert strangers.screen(later, ("lobby",), 10.0) == (True, 0)
    assert strangers.screen(later, ("lobby",), 10.1) == (False, 95)  # 94 earlier, and this
    other = MessageReceived(peer=("10.0.0.67", 40000), nick="", text="hi", sent_at_ms=0)
    assert strangers.screen(other, ("lobby",), 10.1) == (True, 0)  # another machine
