"""Self-tests of tests/iptux_lab.py: the real iptux in a virtual LAN, against a probe.

The probe is a minimal IPMsg speaker: a UDP socket on 0.0.0.0:2425 inside another host
of the same LAN (sockets belong to the namespace they are made in, so it runs there as a
subprocess), driven through JSON lines on its stdin and stdout. The tests show that the
lab starts iptux, sees what it receives and how it decodes it, and makes it send.

One iptux serves the module (it takes a second or two to start); each test first
introduces the probe with a BR_ENTRY, which also resets iptux's idea of the probe's
encoding and of its last packet number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from iptux_lab import Iptux, IptuxError, missing_iptux
from lan import Host, VirtualLan, read_line

from udpchat.protocol import ipmsg

TEXT = "你好 from probe"
PROBE_NICK = "probe"
PROBE_VERSION = b"1_probe"

# The probe. stdin: {"to": ADDRESS, "data": HEX} sends a datagram to ADDRESS:2425.
# stdout: {"event": "ready"}, then {"event": "sent", ...} and {"event": "datagram",
# "from": ADDRESS, "port": P, "data": HEX, "time": T}, times on the monotonic clock.
# It exits when stdin closes.
PROBE = r"""
import json, os, select, socket, sys, time

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.bind(("0.0.0.0", 2425))

def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()

say(event="ready")
pending = b""
while True:
    readable, _, _ = select.select([sock, 0], [], [])
    if sock in readable:
        data, (address, port) = sock.recvfrom(65535)
        say(event="datagram", address=address, port=port, data=data.hex(),
            time=time.monotonic())
    if 0 in readable:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            sock.sendto(bytes.fromhex(request["data"]), (request["to"], 2425))
            say(event="sent", to=request["to"], time=time.monotonic())
"""


@dataclass(frozen=True)
class Datagram:
    """What the probe received."""

    address: str
    data: bytes
    time: float
    """When, on the monotonic clock."""

    @property
    def packet(self) -> ipmsg.Packet:
        return ipmsg.decode(self.data)


class Probe:
    """The probe running in `host`; closes with the LAN or with `close`."""

    def __init__(self, lan: VirtualLan, host: Host) -> None:
        self.host = host
        self.received: list[Datagram] = []
        self._numbers = ipmsg.PacketNumbers(time.time())
        self._process = lan.run(
            host,
            [sys.executable, "-c", PROBE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lan = lan
        assert self._next_event(10.0)["event"] == "ready"

    @property
    def address(self) -> str:
        return self.host.address

    def close(self) -> None:
        self._lan.kill(self._process)

    def packet(self, command: int, extra: bytes = b"") -> ipmsg.Packet:
        """A packet from the probe, numbered above every earlier one."""
        number = self._numbers.next(time.time())
        return ipmsg.Packet(
            PROBE_VERSION, number, b"probe", self.host.name.encode(), command, extra
        )

    def send(self, packet: ipmsg.Packet, to: str) -> float:
        """Send `packet` to `to`:2425; when it left, on the monotonic clock."""
        assert self._process.stdin is not None
        request = {"to": to, "data": ipmsg.encode(packet).hex()}
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        self._process.stdin.flush()
        while True:
            event = self._next_event(5.0)
            if event["event"] == "sent":
                return float(event["time"])

    def introduce(self, timeout: float = 5.0) -> Datagram:
        """Broadcast BR_ENTRY (CAPUTF8OPT, with the UTF-8 fields); iptux's ANSENTRY."""
        extra = ipmsg.entry_extra(PROBE_NICK, "lab", "probe", self.host.name)
        mark = len(self.received)
        self.send(self.packet(ipmsg.BR_ENTRY | ipmsg.CAPUTF8OPT, extra), self.host.broadcast)
        return self.expect(lambda d: d.packet.mode == ipmsg.ANSENTRY, timeout, mark)

    def expect(
        self, predicate: Callable[[Datagram], bool], timeout: float, after: int = 0
    ) -> Datagram:
        """The first datagram from index `after` on that matches; fails after `timeout`."""
        found = self.wait(predicate, timeout, after)
        if found is None:
            pytest.fail(f"no matching datagram within {timeout} s; got {self.received[after:]}")
        return found

    def wait(
        self, predicate: Callable[[Datagram], bool], timeout: float, after: int = 0
    ) -> Datagram | None:
        """Like `expect`, but None when none came (to show that something does not)."""
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.received):
                datagram = self.received[index]
                index += 1
                if predicate(datagram):
                    return datagram
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._next_event(left)
            except TimeoutError:
                return None

    def _next_event(self, timeout: float) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(read_line(self._process, timeout))
        if event["event"] == "datagram":
            self.received.append(
                Datagram(event["address"], bytes.fromhex(event["data"]), float(event["time"]))
            )
        return event


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Iptux, Probe]]:
    """iptux on h1 and the probe on h2 of a LAN of two hosts, for the whole module."""
    reason = missing_iptux()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("iptux-lab")
    with (
        VirtualLan(hosts=2, directory=directory / "lan") as lan,
        Iptux(lan, lan.hosts[0], directory / "iptux") as iptux,
    ):
        probe = Probe(lan, lan.hosts[1])
        try:
            yield iptux, probe
        finally:
            probe.close()


def from_iptux(iptux: Iptux, mode: int) -> Callable[[Datagram], bool]:
    return lambda datagram: datagram.address == iptux.address and datagram.packet.mode == mode


def test_iptux_answers_a_broadcast_entry_with_ansentry(lab: tuple[Iptux, Probe]) -> None:
    iptux, probe = lab
    mark = len(probe.received)
    extra = ipmsg.entry_extra(PROBE_NICK, "lab", "probe", probe.host.name)
    entry = probe.packet(ipmsg.BR_ENTRY | ipmsg.CAPUTF8OPT, extra)
    sent_at = probe.send(entry, probe.host.broadcast)
    answer = probe.expect(from_iptux(iptux, ipmsg.ANSENTRY), 5.0, mark)
    print(f"\nANSENTRY after {(answer.time - sent_at) * 1000:.1f} ms: {answer.data!r}")

    packet = answer.packet
    assert packet.version.startswith(b"1_iptux ")
    assert (packet.user, packet.host) == (b"root", b"tuxhost")
    # iptux announces its encoding in its own extension of the extra, not with
    # CAPUTF8OPT; ABSENCEOPT it always sets.
    assert packet.options == ipmsg.ABSENCEOPT
    assert packet.extra == b"tux\0lab\0icon-tux.png\0utf-8\0"
    # Its log has the BR_ENTRY byte for byte, and it now lists the probe.
    assert any(p.data == ipmsg.encode(entry) for p in iptux.received_packets())
    assert iptux.knows(probe.address)


@pytest.mark.parametrize(
    ("encoding", "options"),
    [("utf-8", ipmsg.UTF8OPT), ("utf-8", 0), ("gbk", 0)],
    ids=["utf8-with-utf8opt", "utf8-without-utf8opt", "gbk-without-utf8opt"],
)
def test_iptux_acks_a_message_and_shows_its_text(
    lab: tuple[Iptux, Probe], encoding: str, options: int
) -> None:
    iptux, probe = lab
    probe.introduce()
    shown = len(iptux.received_texts())
    mark = len(probe.received)
    message = probe.packet(
        ipmsg.SENDMSG | ipmsg.SENDCHECKOPT | options, TEXT.encode(encoding) + b"\0"
    )
    sent_at = probe.send(message, iptux.address)

    ack = probe.expect(from_iptux(iptux, ipmsg.RECVMSG), 5.0, mark)
    print(f"\nRECVMSG after {(ack.time - sent_at) * 1000:.1f} ms: {ack.data!r}")
    # The acknowledged packet number, NUL-terminated.
    assert ack.packet.extra == str(message.number).encode() + b"\0"
    started = time.monotonic()
    iptux.wait_for_text(TEXT, 5.0, nickname=PROBE_NICK, after=shown)
    print(f"shown {(time.monotonic() - started) * 1000:.0f} ms after the ack: {TEXT!r}")
    assert iptux.received_texts()[shown:] == [TEXT]


def test_iptux_sends_a_typed_message_and_takes_the_ack(lab: tuple[Iptux, Probe]) -> None:
    iptux, probe = lab
    probe.introduce()
    text = "hello 你好 from tux"
    mark = len(probe.received)
    started = time.monotonic()
    logged = iptux.send_to_pal(probe.address, text, timeout=15.0)
    typed = time.monotonic()
    message = probe.expect(from_iptux(iptux, ipmsg.SENDMSG), 5.0, mark)
    print(
        f"\ntyped and sent in {typed - started:.2f} s; SENDMSG 0x{message.packet.command:x}: "
        f"{message.data!r}"
    )
    assert message.data == logged.data
    packet = message.packet
    # SENDCHECKOPT only: no UTF8OPT, though the text is UTF-8 (the probe's encoding as
    # iptux guessed it from the probe's entry packet).
    assert packet.options == ipmsg.SENDCHECKOPT
    assert ipmsg.message_text(packet, "utf-8") == text

    after_ack = len(probe.received)
    probe.send(probe.packet(ipmsg.RECVMSG, str(packet.number).encode()), iptux.address)
    # Unacknowledged, iptux resends every second; acknowledged, it does not.
    retry = probe.wait(
        lambda d: d.address == iptux.address and d.data == message.data, 1.5, after_ack
    )
    assert retry is None, "iptux resent the message: it did not take the RECVMSG"


def test_after_gbk_text_iptux_writes_to_that_pal_in_gbk(lab: tuple[Iptux, Probe]) -> None:
    iptux, probe = lab
    probe.introduce()
    shown = len(iptux.received_texts())
    message = probe.packet(ipmsg.SENDMSG | ipmsg.SENDCHECKOPT, TEXT.encode("gbk") + b"\0")
    probe.send(message, iptux.address)
    iptux.wait_for_text(TEXT, 5.0, nickname=PROBE_NICK, after=shown)

    mark = len(probe.received)
    iptux.send_to_pal(probe.address, "再见 from tux", timeout=15.0)
    answer = probe.expect(from_iptux(iptux, ipmsg.SENDMSG), 5.0, mark)
    print(f"\nSENDMSG after GBK: {answer.data!r}")
    probe.send(probe.packet(ipmsg.RECVMSG, str(answer.packet.number).encode()), iptux.address)
    # The peer's code page sticks until its next entry packet; still no UTF8OPT.
    assert answer.packet.options == ipmsg.SENDCHECKOPT
    assert ipmsg.message_text(answer.packet, "gbk") == "再见 from tux"


def test_iptux_announces_itself_and_broadcasts_br_exit_when_quitting(
    open_lan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    reason = missing_iptux()
    if reason is not None:
        pytest.skip(reason)
    lan = open_lan(hosts=2)
    probe = Probe(lan, lan.hosts[1])
    started = time.monotonic()
    with Iptux(lan, lan.hosts[0], tmp_path / "iptux") as iptux:
        ready = time.monotonic()
        entry = probe.expect(from_iptux(iptux, ipmsg.BR_ENTRY), 5.0)
        print(f"\nready in {ready - started:.2f} s; BR_ENTRY: {entry.data!r}")
        assert entry.packet.options == ipmsg.ABSENCEOPT
        assert entry.packet.extra == b"tux\0lab\0icon-tux.png\0utf-8\0"

        # iptux says goodbye to its pals only, one by one: BR_EXIT is no broadcast.
        probe.introduce()
        mark = len(probe.received)
        quitting = time.monotonic()
        status = iptux.quit(timeout=10.0)
        exit_packet = probe.expect(from_iptux(iptux, ipmsg.BR_EXIT), 5.0, mark)
        print(f"quit in {time.monotonic() - quitting:.2f} s ({status}): {exit_packet.data!r}")
        assert exit_packet.packet.options == ipmsg.DIALUPOPT
        assert exit_packet.packet.extra == b"\0"
    assert not iptux.running()


def test_sending_to_an_unknown_pal_fails_clearly(lab: tuple[Iptux, Probe]) -> None:
    iptux, _ = lab
    with pytest.raises(IptuxError, match=r"no pal at 10\.77\.0\.200"):
        iptux.send_to_pal("10.77.0.200", "nobody there", timeout=0.5)
