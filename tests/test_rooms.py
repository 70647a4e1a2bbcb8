"""Rooms and direct messages in memory, on the virtual clock (docs/protocol.md, "Rooms").

Who is in which room, that a room's lines reach its members and nobody else, that a
direct message reaches one peer, that knowing one member is enough (rosters), and that
a peer speaking another protocol version is named once.
"""

from __future__ import annotations

import time

import pytest
from memnet import ALICE, BOB, MemNet, pair
from test_discovery import DISCOVERING, GROUP, host, lan, session_of, time_to_converge

from udpchat.protocol import (
    Address,
    ChatSession,
    Config,
    DeliveryFailed,
    InvalidRoom,
    LocalProtocolError,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageReceived,
    NoPeers,
    PeerJoined,
    PeerLeft,
    VersionMismatched,
    validate_room,
    wire,
)
from udpchat.protocol.crypto import derive_master_key
from udpchat.protocol.rooms import MAX_ROOMS

CAROL: Address = ("10.0.0.3", 4000)


def received(net: MemNet, addr: Address) -> list[tuple[str, str]]:
    """(room, text) of every message `addr` was shown; room "" for a direct one."""
    return [(e.room, e.text) for e in net.events(addr, MessageReceived)]


def rooms_seen(net: MemNet, addr: Address) -> dict[Address, tuple[str, ...]]:
    return {row.peer: row.rooms for row in net.session(addr).peers(net.now) if row.present}


def members_agree(net: MemNet, room: str) -> bool:
    """Every session in `room` sees every other one in it, and nobody else."""
    inside = {a for a, s in net.sessions.items() if room in s.rooms}
    for addr in inside:
        seen = {peer for peer, rooms in rooms_seen(net, addr).items() if room in rooms}
        if seen != inside - {addr}:
            return False
    return True


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "name"),
    [("lobby", "lobby"), ("#Dev", "dev"), (" 小组 ", "小组"), ("a.b-c_d", "a.b-c_d")],
)
def test_room_names_are_kept_in_lower_case_without_the_hash(typed: str, name: str) -> None:
    assert validate_room(typed) == name


@pytest.mark.parametrize("typed", ["", "#", "a b", "a/b", "x" * 25, "dev\x1b", "@bob"])
def test_bad_room_names_are_refused_with_a_reason(typed: str) -> None:
    with pytest.raises(InvalidRoom):
        validate_room(typed)


# -- who gets what ------------------------------------------------------------------------


def three_in_the_lobby(**network: object) -> MemNet:
    """Alice, Bob and Carol, each configured with the two others, all in the lobby."""
    net = MemNet(**network)  # type: ignore[arg-type]
    for addr, nick in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
        net.attach(addr, ChatSession(nick))
    for a in (ALICE, BOB, CAROL):
        for b in (ALICE, BOB, CAROL):
            if a != b:
                net.add_peer(a, b)
    net.run_for(1)
    return net


def test_a_line_said_in_a_room_reaches_its_members_and_nobody_else() -> None:
    net = three_in_the_lobby()
    net.join(ALICE, "dev")
    net.join(BOB, "#Dev")
    net.run_until_settled()
    assert members_agree(net, "dev") and members_agree(net, "lobby")
    net.send(ALICE, "dev only", room="dev")
    net.send(ALICE, "everyone")  # the default room: the lobby
    net.run_until_settled()
    assert received(net, BOB) == [("dev", "dev only"), ("lobby", "everyone")]
    assert received(net, CAROL) == [("lobby", "everyone")]
    assert len(net.events(ALICE, MessageDelivered)) == 3
    assert net.events(ALICE, DeliveryFailed) == []


def test_joining_and_leaving_are_shown_to_every_peer_and_change_who_gets_lines() -> None:
    net = three_in_the_lobby()
    net.join(CAROL, "dev")
    net.run_until_settled()
    for addr in (ALICE, BOB):
        assert net.events(addr, MemberJoined) == [
            MemberJoined(peer=CAROL, nick="carol", room="dev")
        ]
    with pytest.raises(NoPeers, match="nobody else is in #dev"):
        net.send(CAROL, "anyone?", room="dev")
    net.join(BOB, "dev")
    net.run_until_settled()
    net.send(CAROL, "hi bob", room="dev")
    net.run_until_settled()
    net.leave(BOB, "dev")
    net.run_until_settled()
    assert net.events(CAROL, MemberLeft) == [MemberLeft(peer=BOB, nick="bob", room="dev")]
    with pytest.raises(NoPeers):
        net.send(CAROL, "gone?", room="dev")
    assert received(net, BOB) == [("dev", "hi bob")]
    assert received(net, ALICE) == []


def test_a_direct_message_reaches_only_its_peer() -> None:
    net = three_in_the_lobby()
    net.send(ALICE, "psst", to=[BOB])
    net.run_until_settled()
    assert received(net, BOB) == [("", "psst")]
    assert received(net, CAROL) == []
    assert [e.peer for e in net.events(ALICE, MessageDelivered)] == [BOB]


def test_a_chat_in_no_room_can_still_send_direct_messages() -> None:
    net = pair()
    net.run_for(1)
    net.leave(ALICE, "lobby")
    net.run_until_settled()
    with pytest.raises(NoPeers, match="not in any room"):
        net.send(ALICE, "to whom?")
    net.send(ALICE, "to bob", to=[BOB])
    net.run_until_settled()
    assert received(net, BOB) == [("", "to bob")]
    assert rooms_seen(net, BOB)[ALICE] == ()


def test_rooms_are_bounded_and_leaving_one_not_joined_is_an_error() -> None:
    alice = ChatSession("alice")
    for i in range(1, MAX_ROOMS):
        alice.join(f"room{i}", 0.0)
    with pytest.raises(LocalProtocolError, match="at most 8 rooms"):
        alice.join("one-more", 0.0)
    with pytest.raises(LocalProtocolError, match="not in #elsewhere"):
        alice.leave("elsewhere", 0.0)
    with pytest.raises(InvalidRoom):
        alice.join("no spaces", 0.0)


def test_a_configured_peer_gets_room_lines_until_its_rooms_are_known() -> None:
    """Said before Bob answered, a line in #dev waits for him; his HELLO then says he
    is not in #dev, and it fails for him, saying why."""
    net = MemNet()
    net.attach(ALICE, ChatSession("alice", config=Config(rooms=("lobby", "dev"))))
    net.add_peer(ALICE, BOB)
    message_id = net.session(ALICE).send_message("early", 0.0, sent_at_ms=0, room="dev")
    net.send(ALICE, "early lobby")
    net.run_for(0.5)
    net.attach(BOB, ChatSession("bob"))
    net.run_until(5)
    net.run_until_settled()
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert (failed.message_id, failed.peer, failed.reason) == (message_id, BOB, "not in #dev")
    assert received(net, BOB) == [("lobby", "early lobby")]


def test_a_resent_room_line_keeps_its_room() -> None:
    net = three_in_the_lobby()
    net.send(ALICE, "again", to=[CAROL], room="lobby")
    net.run_until_settled()
    assert received(net, CAROL) == [("lobby", "again")]
    assert received(net, BOB) == []


# -- membership on the wire -------------------------------------------------------------


def test_an_answer_whose_rooms_do_not_fit_in_64_bytes_sends_them_by_membership() -> None:
    rooms = tuple(f"room-number-{i}" for i in range(MAX_ROOMS))
    net = MemNet()
    net.attach(ALICE, ChatSession("alice"))
    net.attach(BOB, ChatSession("b" * 32, config=Config(rooms=rooms)))
    net.add_peer(ALICE, BOB)
    net.run_until_settled()
    answers = [s for s in net.datagrams(src=BOB, kind=wire.Hello)]
    assert answers and all(len(s.data) <= wire.HELLO_MIN_SIZE for s in answers)
    assert answers[0].decoded(wire.Hello).rooms_follow
    assert rooms_seen(net, ALICE)[BOB] == rooms
    # Alice was shown Bob first with no room, then in each of his.
    assert net.events(ALICE, PeerJoined)[0].rooms == ()
    assert [e.room for e in net.events(ALICE, MemberJoined)] == list(rooms)


def test_an_old_room_list_arriving_late_does_not_undo_a_newer_one() -> None:
    bob = ChatSession("bob")
    old = wire.Hello(b"alice-s1", "alice", False, 1, ("lobby", "dev"))
    new = wire.Hello(b"alice-s1", "alice", False, 2, ("lobby",))
    bob.receive_datagram(wire.encode(new), ALICE, 0.0)
    bob.receive_datagram(wire.encode(old), ALICE, 0.1)
    assert bob.peers(0.2)[0].rooms == ("lobby",)


def test_membership_and_rosters_never_show_as_messages_nor_delivery_events() -> None:
    net = three_in_the_lobby()
    for addr in (ALICE, BOB, CAROL):
        net.join(addr, "dev")
    net.run_until_settled()
    for addr in (ALICE, BOB, CAROL):
        assert net.events(addr, MessageReceived) == []
        assert net.events(addr, MessageDelivered) == []
        assert net.session(addr).pending() == 0
        assert net.session(addr).stats().messages_sent == 0


# -- knowing one member is enough ------------------------------------------------------


def test_three_chats_where_the_third_names_only_the_first_become_one_room() -> None:
    """The issue's case: Alice and Bob name each other, Carol names only Alice. Alice's
    roster of the lobby introduces Carol to Bob, and each sees the other two."""
    net = MemNet()
    for addr, nick in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
        net.attach(addr, ChatSession(nick))
    net.add_peer(ALICE, BOB)
    net.add_peer(BOB, ALICE)
    net.add_peer(CAROL, ALICE)
    net.run_until(5)
    assert members_agree(net, "lobby")
    for addr in (ALICE, BOB, CAROL):
        assert len(rooms_seen(net, addr)) == 2
    net.send(BOB, "hello carol, whom I never named")
    net.send(CAROL, "hello bob")
    net.run_until_settled()
    assert received(net, CAROL) == [("lobby", "hello carol, whom I never named")]
    assert ("lobby", "hello bob") in received(net, BOB)
    joined = [e.peer for e in net.events(BOB, PeerJoined)]
    assert joined == [ALICE, CAROL]


def test_a_roster_naming_nobody_there_is_given_up_after_three_hellos() -> None:
    net = pair()
    net.run_for(1)
    ghost: Address = ("10.0.0.99", 4000)
    roster = wire.Data(
        b"mallory!", 0, 0, 0, 1, b"10.0.0.99 4000", 0, "mallory", wire.Conversation.ROSTER, "lobby"
    )
    # From a peer not known to be in the lobby, a roster introduces nobody.
    net.inject(wire.encode(roster), ("10.0.0.66", 4000), BOB)
    net.run_for(10)
    assert net.datagrams(dst=ghost) == []
    # From Alice, present, it does: three HELLOs, then nothing.
    alice_roster = roster._replace(session=net.session(ALICE).session_id, seq=99, base=99)
    net.inject(wire.encode(alice_roster), ALICE, BOB)
    net.run_for(60)
    hellos = net.datagrams(src=BOB, dst=ghost, kind=wire.Hello)
    assert [round(s.time - hellos[0].time) for s in hellos] == [0, 1, 3]
    assert ghost not in net.session(BOB).sender.members("lobby")


# -- convergence ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "drop", "limit"),
    [(2, 0.0, 1.0), (10, 0.0, 1.0), (200, 0.0, 2.0), (2, 0.3, 20.0), (10, 0.3, 20.0),
     (50, 0.3, 40.0), (200, 0.3, 70.0)],
)  # fmt: skip
def test_room_membership_converges_by_discovery(count: int, drop: float, limit: float) -> None:
    """200 chats at 30 % loss converge at the announcement 32 s after the start; in
    memory that takes about 45 s of CPU, checked every virtual second."""
    started = time.process_time()
    step = 1.0 if count * drop >= 60 else 0.05
    net = lan(count, drop=drop, seed=count)
    time_to_converge(net, limit, step)
    deadline = net.now + limit
    while not members_agree(net, "lobby"):
        assert net.now < deadline, "rooms did not converge"
        net.run_for(step)
    print(f"\n{count} chats, {drop:.0%} loss: {time.process_time() - started:.1f} s of CPU")


def test_a_partitioned_member_is_gone_then_back_in_its_rooms_when_healed() -> None:
    net = lan(3)
    net.run_for(5)
    a, b, c = host(0), host(1), host(2)
    net.join(c, "dev")
    net.join(a, "dev")
    net.run_until_settled()
    assert members_agree(net, "dev")
    for other in (a, b):
        net.cut(c, other)
        net.cut(other, c)
    net.groups[GROUP] = [a, b]  # c's announcements no longer reach them, nor theirs c
    net.run_for(200)
    assert {e.peer for e in net.events(a, PeerLeft)} == {c}
    net.heal()
    net.groups[GROUP] = [a, b, c]
    net.run_for(70)  # within an announcement period
    assert members_agree(net, "dev") and members_agree(net, "lobby")
    net.send(a, "welcome back", room="dev")
    net.run_until_settled()
    assert ("dev", "welcome back") in received(net, c)


def test_a_restarted_member_comes_back_with_its_new_rooms() -> None:
    net = lan(2)
    net.run_for(5)
    a, b = host(0), host(1)
    net.detach(b)
    config = Config(announce_to=(GROUP,), rooms=("dev",))
    net.attach(b, ChatSession("user1", session_id=b"restart!", config=config))
    net.run_for(3)
    assert rooms_seen(net, a)[b] == ("dev",)
    assert [e.restarted for e in net.events(a, PeerJoined)] == [False, True]


def test_nicknames_may_collide_in_a_room_and_stay_two_members() -> None:
    net = MemNet()
    net.groups[GROUP] = [host(0), host(1), host(2)]
    for i, nick in enumerate(("bob", "bob", "alice")):
        net.attach(host(i), ChatSession(nick, session_id=session_of(i), config=DISCOVERING))
    net.run_for(3)
    assert set(rooms_seen(net, host(2))) == {host(0), host(1)}
    net.send(host(0), "from the first bob")
    net.run_until_settled()
    (message,) = net.events(host(2), MessageReceived)
    assert message.peer == host(0)


# -- another protocol version -------------------------------------------------------------


def test_a_peer_of_protocol_version_1_is_named_once_and_never_answered() -> None:
    bob = ChatSession("bob")
    v1_hello = b"UC\x01\x01" + bytes(8) + b"\x01\x05alice" + bytes(45)
    v1_ping = b"UC\x01\x03" + bytes(8) + bytes(16)
    for i in range(5):
        bob.receive_datagram(v1_hello, ALICE, float(i))
        bob.receive_datagram(v1_ping, ALICE, i + 0.5)
    bob.receive_datagram(v1_hello, CAROL, 6.0)
    bob.receive_datagram(v1_hello, ALICE, 7.0, announced=True)
    events = []
    while (event := bob.next_event()) is not None:
        events.append(event)
    assert events == [
        VersionMismatched(peer=ALICE, version=1),
        VersionMismatched(peer=CAROL, version=1),
    ]
    assert bob.datagrams_to_send(8.0) == []
    assert bob.stats().malformed_dropped == 12


# -- keyed rooms ----------------------------------------------------------------------------

SECRET = derive_master_key(b"the secret room's passphrase")
OTHER = derive_master_key(b"another passphrase")
DAVE: Address = ("10.0.0.4", 4000)


def keyed_four() -> MemNet:
    """Alice, Bob and Dave hold #secret's key, Carol another one; all in the lobby."""
    net = MemNet()
    for addr, nick in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave")):
        net.attach(addr, ChatSession(nick))
    for a in (ALICE, BOB, CAROL, DAVE):
        for b in (ALICE, BOB, CAROL, DAVE):
            if a != b:
                net.add_peer(a, b)
    net.run_for(1)
    for addr, key in ((ALICE, SECRET), (BOB, SECRET), (DAVE, SECRET), (CAROL, OTHER)):
        net.session(addr).join("secret", net.now, key=key)
        net.flush(addr)
    net.run_until_settled()
    return net


def test_a_keyed_room_shows_and_reaches_only_the_holders_of_its_key() -> None:
    net = keyed_four()
    for addr in (ALICE, BOB, DAVE):
        members = {p for p, rooms in rooms_seen(net, addr).items() if "secret" in rooms}
        assert members == {ALICE, BOB, DAVE} - {addr}
    assert {p for p, rooms in rooms_seen(net, CAROL).items() if "secret" in rooms} == set()
    assert all(e.room != "secret" for e in net.events(CAROL, MemberJoined))
    net.send(ALICE, "for key holders", room="secret")
    net.run_until_settled()
    assert received(net, BOB) == received(net, DAVE) == [("secret", "for key holders")]
    assert received(net, CAROL) == []
    # Nothing on the wire names the room or carries the line in clear.
    assert all(b"secret" not in s.data and b"key holders" not in s.data for s in net.sent)
    with pytest.raises(NoPeers, match="nobody else is in #secret"):
        net.send(CAROL, "hello?", room="secret")


def test_a_copied_tag_proves_nothing_and_a_line_replayed_to_another_member_fails() -> None:
    net = keyed_four()
    bobs_list = rooms_seen(net, CAROL)[BOB]
    (tag,) = [room for room in net.session(BOB).sender._wire_rooms() if room.startswith("~")]
    assert tag not in bobs_list  # Carol cannot read it, so it is not shown to her
    # Mallory lists Bob's tag as her own: to Alice it proves nothing.
    mallory: Address = ("10.0.0.66", 4000)
    hello = wire.Hello(b"mallory!", "mallory", False, 1, ("lobby", tag))
    net.inject(wire.encode(hello), mallory, ALICE)
    assert rooms_seen(net, ALICE)[mallory] == ("lobby",)
    # A line Alice sealed for Bob, replayed to Dave (who holds the key): it does not open.
    net.send(ALICE, "for bob's eyes", to=[BOB], room="secret")
    net.run_until_settled()
    (record,) = [
        s.decoded(wire.Data)
        for s in net.datagrams(src=ALICE, dst=BOB, kind=wire.Data)
        if s.decoded(wire.Data).room.startswith("~")
    ]
    dave = net.session(DAVE)
    alice_at_dave = [row for row in dave.peers(net.now) if row.peer == ALICE]
    assert alice_at_dave
    replayed = record._replace(seq=dave.receiver._peers[ALICE].expected or 0, base=0)
    before = dave.stats().auth_failed
    net.inject(wire.encode(replayed), ALICE, DAVE)
    net.run_until_settled()
    assert received(net, DAVE) == []
    assert dave.stats().auth_failed == before + 1


def test_leaving_a_keyed_room_or_joining_it_late_changes_who_is_shown() -> None:
    net = keyed_four()
    net.leave(BOB, "secret")
    net.run_until_settled()
    assert MemberLeft(peer=BOB, nick="bob", room="secret") in net.events(ALICE, MemberLeft)
    # Carol gets the key after all: the tags she already heard now prove membership.
    net.session(CAROL).join("secret", net.now, key=SECRET)
    net.flush(CAROL)
    net.run_until_settled()
    joined = {e.peer for e in net.events(CAROL, MemberJoined) if e.room == "secret"}
    assert joined == {ALICE, DAVE}
    net.send(CAROL, "I'm in", room="secret")
    net.run_until_settled()
    assert received(net, ALICE)[-1] == ("secret", "I'm in")


def test_a_plain_room_of_the_same_name_is_another_room() -> None:
    net = keyed_four()
    eve: Address = ("10.0.0.5", 4000)
    net.attach(eve, ChatSession("eve", config=Config(rooms=("lobby", "secret"))))
    net.add_peer(eve, ALICE)
    net.run_until(net.now + 3)
    assert "secret" not in rooms_seen(net, ALICE)[eve]
    # A line in clear under the keyed room's name is not a line of it.
    line = wire.Data(b"eve-sess", 0, 0, 0, 1, b"fake", 0, "eve", wire.Conversation.ROOM, "secret")
    before = net.session(ALICE).stats().auth_failed
    net.inject(wire.encode(line), ("10.0.0.6", 4000), ALICE)
    net.run_until_settled()
    assert [t for r, t in received(net, ALICE) if r == "secret"] == []
    assert net.session(ALICE).stats().auth_failed == before + 1


def test_a_keyed_line_waits_for_no_unchecked_peer() -> None:
    """A peer named but not heard from gets every plain room's lines (they wait for
    it), never a keyed room's: those are sealed for members whose tag was checked."""
    alice = ChatSession("alice", config=Config(rooms=("secret",), room_keys=(("secret", SECRET),)))
    alice.add_peer(BOB, 0.0)
    with pytest.raises(NoPeers, match="nobody else is in #secret"):
        alice.send_message("too early", 0.0, sent_at_ms=0)
    alice.join("lobby", 0.0)
    alice.send_message("waits for bob", 0.0, sent_at_ms=0, room="lobby")
    assert alice.pending() == 1
