"""Peer addresses as users type them, this machine's own addresses, dual-stack sockets.

Nothing here sends a datagram anywhere but 127.0.0.1: resolving a numeric address asks
no one, and `lan_addresses()` only reads the interfaces.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import pytest
from conftest import OpenRuntime, wait_for

from udpchat.protocol import MessageReceived
from udpchat.runtimes import (
    MODELS,
    AddressError,
    bind_socket,
    create_runtime,
    resolve_peer,
    sockets,
)
from udpchat.ui.format import format_address, reach_text, reachable_at


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="this machine has no IPv6")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 9000)),
        ("127.0.0.1:9001", ("127.0.0.1", 9001)),
        ("localhost:9001", ("127.0.0.1", 9001)),
        ("  127.0.0.1:7  ", ("127.0.0.1", 7)),
    ],
)
def test_dotted_quads_and_host_names_are_peers(text: str, expected: tuple[str, int]) -> None:
    assert resolve_peer(text, "127.0.0.1") == expected


@pytest.mark.parametrize("name", ["printer", "alice-pc.lan", "alice-pc.lan.", "x1.example"])
def test_names_made_of_letters_digits_and_hyphens_are_host_names(name: str) -> None:
    assert sockets._is_host_name(name)


@needs_ipv6
@pytest.mark.parametrize(
    ("text", "expected"), [("::1", ("::1", 9000)), ("[::1]:9001", ("::1", 9001))]
)
def test_ipv6_literals_are_peers_of_an_ipv6_socket(text: str, expected: tuple[str, int]) -> None:
    assert resolve_peer(text, "::1") == expected


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3",  # inet_aton would read 1.2.0.3
        "1.2.3:9000",
        "127.1",  # 127.0.0.1
        "0x7f.1",  # hexadecimal, 127.0.0.1
        "0177.0.0.1",  # octal, 127.0.0.1
        "2130706433",  # one number, 127.0.0.1
        "1.2.3.4.5",
        "256.1.1.1",
        "host.123",  # a name's last label is never all digits
        "a..b",
        "-lead.example",
        "trail-.example",
        "under_score",
        "sp ace",
        "naïve",
        "x" * 64 + ".example",
        "[localhost]:9000",
    ],
)
def test_malformed_addresses_are_refused_not_guessed(text: str) -> None:
    with pytest.raises(AddressError, match="malformed peer address") as caught:
        resolve_peer(text, "0.0.0.0")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "bind", "message"),
    [
        ("255.255.255.255", "0.0.0.0", "255.255.255.255 is a broadcast address"),
        ("224.0.0.1", "0.0.0.0", "224.0.0.1 is a multicast address"),
        ("239.255.255.250:1900", "0.0.0.0", "239.255.255.250 is a multicast address"),
        ("ff02::1", "0.0.0.0", "ff02::1 is a multicast address"),
        ("[ff05::2]:9000", "::", "ff05::2 is a multicast address"),
        ("224.0.0.251", "::", "224.0.0.251 is a multicast address"),
    ],
)
def test_broadcast_and_multicast_addresses_are_refused_as_peers(
    text: str, bind: str, message: str
) -> None:
    with pytest.raises(AddressError, match=re.escape(message)):
        resolve_peer(text, bind)


def test_the_broadcast_address_of_a_local_subnet_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        sockets, "_local_broadcasts", lambda: {ipaddress.IPv4Address("192.168.1.255")}
    )
    with pytest.raises(AddressError, match=re.escape("192.168.1.255 is a broadcast address")):
        resolve_peer("192.168.1.255:9000", "0.0.0.0")
    assert resolve_peer("192.168.1.20", "0.0.0.0") == ("192.168.1.20", 9000)


def test_this_machines_real_subnet_broadcasts_are_refused() -> None:
    broadcasts = sockets._local_broadcasts()
    if not broadcasts:
        pytest.skip("no interface here has an IPv4 broadcast address")
    for broadcast in broadcasts:
        with pytest.raises(AddressError, match="is a broadcast address"):
            resolve_peer(str(broadcast), "0.0.0.0")


# -- dual stack ---------------------------------------------------------------------


@needs_ipv6
def test_an_ipv4_peer_of_a_dual_stack_socket_is_ipv4_mapped() -> None:
    assert resolve_peer("127.0.0.1:9001", "::") == ("::ffff:127.0.0.1", 9001)
    assert resolve_peer("[::1]:9001", "::") == ("::1", 9001)
    # Bound to one IPv6 address, the socket is not dual-stack: the old hint stays.
    with pytest.raises(AddressError, match="has no address of the socket's family"):
        resolve_peer("127.0.0.1", "::1")


@needs_ipv6
def test_a_socket_bound_to_the_ipv6_wildcard_accepts_ipv4_too() -> None:
    sock = bind_socket("::", 0)
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


@needs_ipv6
@pytest.mark.parametrize("model", MODELS)
def test_a_dual_stack_chat_talks_to_an_ipv4_peer(open_runtime: OpenRuntime, model: str) -> None:
    bob = open_runtime(model, "bob")
    alice = create_runtime(
        model,
        "alice",
        bind="::",
        port=0,
        peers=[resolve_peer(f"127.0.0.1:{bob.local_address[1]}", "::")],
    )
    with alice:
        alice.send("over the dual stack")
        received = wait_for(bob, lambda event: isinstance(event, MessageReceived))
        assert isinstance(received, MessageReceived) and received.text == "over the dual stack"
        assert alice.wait_delivered(10.0)


def test_ipv4_mapped_addresses_are_shown_as_ipv4() -> None:
    assert format_address(("::ffff:192.168.1.20", 9000)) == "192.168.1.20:9000"
    assert format_address(("::ffff:c0a8:114", 9000)) == "192.168.1.20:9000"
    assert format_address(("fd00::2", 9000)) == "[fd00::2]:9000"
    assert format_address(("192.168.1.20", 9000)) == "192.168.1.20:9000"


# -- this machine's addresses -----------------------------------------------------------


def test_lan_addresses_are_unicast_and_never_loopback() -> None:
    addresses = sockets.lan_addresses()
    assert addresses is not None  # the tests run on Linux
    for text in addresses:
        address = ipaddress.ip_address(text)
        assert not (address.is_loopback or address.is_multicast or address.is_unspecified)
        assert not address.is_link_local


def test_lan_addresses_take_ipv6_of_global_scope_on_interfaces_that_are_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"  # link-local
        "fd000000000000000000000000000002 04 40 00 82     eth0\n"  # usable
        "fd000000000000000000000000000003 04 40 00 c0     eth0\n"  # tentative
        "20010db8000000000000000000000009 05 40 00 80    wlan0\n"  # interface down
        "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    interfaces = [
        ("lo", 0x49, ipaddress.IPv4Address("127.0.0.1"), set()),
        ("eth0", 0x1043, ipaddress.IPv4Address("192.168.1.10"), {"192.168.1.255"}),
        ("wlan0", 0x1002, ipaddress.IPv4Address("10.0.0.5"), set()),  # down
        ("tun0", 0x1, None, set()),  # up, no IPv4 address
    ]
    monkeypatch.setattr(sockets, "_interfaces", lambda: iter(interfaces))
    monkeypatch.setattr(sockets, "_IF_INET6", str(table))
    assert sockets.lan_addresses() == ["192.168.1.10", "fd00::2"]


@pytest.mark.parametrize(
    ("local", "lan", "text"),
    [
        (
            ("0.0.0.0", 9000),
            ["192.168.1.10", "fd00::2"],
            "others can reach you at 192.168.1.10:9000",
        ),
        (
            ("::", 9000),
            ["192.168.1.10", "fd00::2"],
            "others can reach you at 192.168.1.10:9000, [fd00::2]:9000",
        ),
        (
            ("0.0.0.0", 9000),
            [f"10.0.0.{n}" for n in range(1, 7)],
            "others can reach you at 10.0.0.1:9000, 10.0.0.2:9000, 10.0.0.3:9000,"
            " 10.0.0.4:9000 and 2 more",
        ),
        (("192.168.1.10", 9000), [], "others can reach you at 192.168.1.10:9000"),
        (("0.0.0.0", 9000), [], "only this machine can reach you: no network interface but"),
        (("0.0.0.0", 9000), ["fd00::2"], "only this machine can reach you over IPv4; --bind ::"),
        (("127.0.0.1", 9000), ["192.168.1.10"], "only this machine can reach you: 127.0.0.1:9000"),
        (
            ("::1", 9000),
            ["192.168.1.10"],
            "only this machine can reach you: [::1]:9000 is loopback",
        ),
    ],
)
def test_the_reach_line_names_addresses_a_friend_can_use(
    local: tuple[str, int], lan: list[str], text: str
) -> None:
    shown = reach_text(local, lan)
    assert shown is not None and shown.startswith(text)


def test_reachable_at_is_none_where_interfaces_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("udpchat.ui.format.lan_addresses", lambda: None)
    assert reachable_at(("0.0.0.0", 9000)) is None and reach_text(("0.0.0.0", 9000)) is None
    assert reachable_at(("192.168.1.10", 9000)) == ["192.168.1.10:9000"]
