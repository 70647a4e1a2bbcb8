"""Self-tests of the virtual LAN (tests/lan.py), with tests/lan_probe.py as sender and listener.

A listener says "ready" once bound, and stops at a datagram whose text starts with "end".
To show that something did *not* arrive, the marker follows it on the same path: a frame
sent later behind the same queue cannot overtake it, so "end" first means it was dropped.
That keeps every negative check bounded without sleeping. Unicast waits for ARP or
neighbour discovery, which multicast does not, so a unicast marker follows only unicast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lan as lan_module
import pytest
from lan import (
    Host,
    LanError,
    VirtualLan,
    missing_requirements,
    read_line,
    remove_leftovers,
    tool,
)

OpenLan = Callable[..., VirtualLan]

PROBE = [sys.executable, str(Path(__file__).with_name("lan_probe.py"))]
PORT = 9009
GROUP = "239.255.9.9"
GROUP_V6 = "ff02::9:9"
TIMEOUT = 10.0
BURST = 500


def listen(lan: VirtualLan, host: Host, *options: str) -> subprocess.Popen[str]:
    """A listener on `host`, bound (and joined) by the time this returns."""
    process = lan.run(
        host,
        [*PROBE, "listen", "--port", str(PORT), "--timeout", str(TIMEOUT), *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert read_line(process, TIMEOUT) == "ready"
    return process


def listen_to_group(lan: VirtualLan, host: Host) -> subprocess.Popen[str]:
    return listen(lan, host, "--group", GROUP, "--interface-address", host.address)


def send(lan: VirtualLan, host: Host, to: str, text: str, *options: str, count: int = 1) -> None:
    """Send `count` datagrams from `host`; returns once they have left its socket."""
    argv = [*PROBE, "send", "--to", to, "--port", str(PORT), "--text", text, "--count", str(count)]
    process = lan.run(host, [*argv, *options])
    assert process.wait(timeout=TIMEOUT) == 0


def send_to_group(lan: VirtualLan, host: Host, text: str, *, count: int = 1) -> None:
    send(lan, host, GROUP, text, "--interface-address", host.address, count=count)


def received(listener: subprocess.Popen[str]) -> list[str]:
    """What a listener got before its end marker; fails if the marker never came."""
    output, _ = listener.communicate(timeout=TIMEOUT + 5)
    lines = output.splitlines()
    assert lines and lines[-1].startswith("end"), f"no end marker: {lines[-5:]}"
    return lines[:-1]


def test_hosts_reach_each_other_by_unicast(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    listener = listen(lan, h1)
    send(lan, h2, h1.address, "from-h2")
    send(lan, h3, h1.address, "from-h3")
    send(lan, h3, h1.address, "end")
    assert received(listener) == ["from-h2 0", "from-h3 0"]


def test_multicast_reaches_every_other_host_and_every_socket_sharing_the_port(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    # Two listeners on h2, both on 0.0.0.0:9009: how several udpchats share discovery.
    listeners = [listen_to_group(lan, h2), listen_to_group(lan, h2), listen_to_group(lan, h3)]
    send_to_group(lan, h1, "hello")
    send_to_group(lan, h1, "end")
    assert [received(listener) for listener in listeners] == [["hello 0"]] * 3


def test_broadcast_reaches_every_other_host(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    assert h1.broadcast == "10.77.0.255"
    listeners = [listen(lan, h2), listen(lan, h3)]
    send(lan, h1, h1.broadcast, "hello")
    send(lan, h1, h1.broadcast, "end")
    assert [received(listener) for listener in listeners] == [["hello 0"]] * 2


@pytest.mark.parametrize("kind", ["unicast", "unicast back", "multicast", "broadcast"])
def test_loss_drops_about_the_share_set_then_clearing_it_drops_nothing(
    open_lan: OpenLan, kind: str
) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    sender, receivers = {
        "unicast": (h1, [h2]),
        "unicast back": (h2, [h1]),
        "multicast": (h1, [h2, h3]),
        "broadcast": (h1, [h2, h3]),
    }[kind]
    to = {"unicast": h2.address, "unicast back": h1.address, "broadcast": h1.broadcast}
    listeners = [listen_to_group(lan, host) for host in receivers]

    def burst(text: str, count: int) -> None:
        if kind == "multicast":
            send_to_group(lan, sender, text, count=count)
        else:
            send(lan, sender, to[kind], text, count=count)

    # One datagram through before the loss, so ARP has resolved: a burst queued behind
    # an unresolved address would overflow the kernel's small queue and look like loss.
    burst("warm-up", 1)
    for listener in listeners:
        assert read_line(listener, TIMEOUT) == "warm-up 0"
    lan.set_loss(30)
    burst("lossy", BURST)
    lan.clear_loss()
    burst("clear", 100)
    burst("end", 1)
    for listener in listeners:
        texts = received(listener)
        lossy = sum(text.startswith("lossy") for text in texts)
        assert 0.55 * BURST <= lossy <= 0.85 * BURST, f"{lossy} of {BURST} arrived"
        assert sum(text.startswith("clear") for text in texts) == 100


def test_blocking_multicast_stops_multicast_but_not_broadcast_or_unicast(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    lan.block_multicast()
    listeners = [listen_to_group(lan, h2), listen_to_group(lan, h3)]
    send_to_group(lan, h1, "multicast")
    send(lan, h1, h1.broadcast, "broadcast")
    send(lan, h1, h1.broadcast, "end")
    assert [received(listener) for listener in listeners] == [["broadcast 0"]] * 2

    listener = listen(lan, h2)
    send(lan, h1, h2.address, "unicast")
    send(lan, h1, h2.address, "end")
    assert received(listener) == ["unicast 0"]

    lan.unblock_multicast()
    listeners = [listen_to_group(lan, h2), listen_to_group(lan, h3)]
    send_to_group(lan, h1, "multicast")
    send_to_group(lan, h1, "end")
    assert [received(listener) for listener in listeners] == [["multicast 0"]] * 2


def test_a_remote_host_gets_unicast_but_neither_multicast_nor_broadcast(
    open_lan: OpenLan,
) -> None:
    lan = open_lan(hosts=2, remote_hosts=1)
    h1, _ = lan.hosts
    (r1,) = lan.remote_hosts
    assert r1.address == "10.78.0.1"
    listener = listen_to_group(lan, r1)
    # TTL 8, more than udpchat's 1: the router itself must not forward multicast.
    send(lan, h1, GROUP, "multicast", "--interface-address", h1.address, "--ttl", "8")
    send(lan, h1, h1.broadcast, "broadcast")
    send(lan, h1, r1.broadcast, "directed-broadcast")
    send(lan, h1, r1.address, "unicast")
    send(lan, h1, r1.address, "end")
    assert received(listener) == ["unicast 0"]

    listener = listen(lan, h1)
    send(lan, r1, h1.address, "unicast")
    send(lan, r1, h1.address, "end")
    assert received(listener) == ["unicast 0"]


def test_ipv6_link_local_multicast_and_unicast_reach_the_other_hosts(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    listeners = [listen(lan, host, "--group", GROUP_V6) for host in (h2, h3)]
    send(lan, h1, GROUP_V6, "multicast", "--interface", "eth0")
    # The markers go by unicast, behind the unicast datagram in the same neighbour queue.
    send(lan, h1, h2.link_local, "unicast", "--interface", "eth0")
    send(lan, h1, h2.link_local, "end", "--interface", "eth0")
    send(lan, h1, h3.link_local, "end", "--interface", "eth0")
    assert [received(listener) for listener in listeners] == [
        ["multicast 0", "unicast 0"],
        ["multicast 0"],
    ]


def test_a_disconnected_host_gets_nothing_until_reconnected(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=3)
    h1, h2, h3 = lan.hosts
    listeners = [listen(lan, h2), listen(lan, h3)]
    lan.disconnect(h2)
    send(lan, h1, h1.broadcast, "while-disconnected")
    lan.reconnect(h2)
    send(lan, h1, h1.broadcast, "end")
    assert [received(listener) for listener in listeners] == [[], ["while-disconnected 0"]]


def test_each_host_has_its_own_directories_and_run_adds_variables(
    open_lan: OpenLan, tmp_path: Path
) -> None:
    lan = open_lan(hosts=2)
    show = [sys.executable, "-c", "import os; print(os.environ['XDG_STATE_HOME'], os.environ['X'])"]
    outputs = []
    for host in lan.hosts:
        process = lan.run(host, show, env={"X": host.name}, stdout=subprocess.PIPE, text=True)
        outputs.append(process.communicate(timeout=TIMEOUT)[0].split())
    (state1, x1), (state2, x2) = outputs
    assert (x1, x2) == ("h1", "h2")
    assert state1 != state2
    for state in (state1, state2):
        assert Path(state).is_dir() and tmp_path in Path(state).parents


def test_kill_signals_the_program_itself(open_lan: OpenLan) -> None:
    lan = open_lan(hosts=1)
    handler = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = lan.run(lan.hosts[0], [sys.executable, "-c", handler], stdout=subprocess.PIPE)
    assert read_line(process, TIMEOUT) == "ready"
    assert lan.kill(process, signal.SIGTERM) == 3


def ip(*args: str) -> str:
    return subprocess.run(
        [tool("ip") or "ip", *args], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout


def namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def root_links() -> set[str]:
    """The interfaces of the namespace the tests run in."""
    return {line.split(":")[1].strip() for line in ip("-o", "link").splitlines()}


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an orphan init has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def lan_requirements() -> None:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.usefixtures("lan_requirements")
def test_teardown_leaves_nothing_behind_even_when_the_body_raises() -> None:
    links_before = root_links()
    with (
        pytest.raises(RuntimeError, match="the test body failed"),
        VirtualLan(hosts=2, remote_hosts=1) as lan,
    ):
        created = set(lan.namespaces)
        assert created <= namespaces()
        sleeper = lan.run(lan.hosts[0], ["sleep", "60"])
        # A grandchild the LAN never saw: it must die with its namespace too.
        parent = lan.run(
            lan.remote_hosts[0], ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE
        )
        grandchild = int(read_line(parent, TIMEOUT))
        lan.set_loss(10)
        raise RuntimeError("the test body failed")
    assert not created & namespaces()
    assert sleeper.returncode == -signal.SIGKILL
    assert not running(grandchild)
    assert root_links() == links_before
    nft = subprocess.run(
        [tool("nft") or "nft", "list", "tables"], capture_output=True, text=True, check=True
    )
    assert "udpchat_lan" not in nft.stdout


@pytest.mark.usefixtures("lan_requirements")
def test_a_lan_that_fails_half_way_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    real_batch = lan_module._ip_batch

    def batch_failing_on_h2(netns: str, commands: list[str]) -> None:
        if netns.endswith("-h2"):  # after the switch, its veths and h1 are in place
            raise LanError("h2 could not be configured")
        real_batch(netns, commands)

    monkeypatch.setattr(lan_module, "_ip_batch", batch_failing_on_h2)
    links_before = root_links()
    lan = VirtualLan(hosts=3)
    with pytest.raises(LanError, match="h2 could not be configured"):
        lan.open()
    assert lan.namespaces == []
    assert not {name for name in namespaces() if name.startswith(lan.prefix)}
    assert root_links() == links_before


@pytest.mark.usefixtures("lan_requirements")
def test_leftovers_of_dead_runs_are_removed_and_those_of_a_live_one_kept() -> None:
    exited = subprocess.Popen(["true"])
    exited.wait(timeout=TIMEOUT)
    dead = f"ucl-{exited.pid}-0-h1"
    # A crashed run in a container may have had our pid; no LAN of ours has this name.
    reused = f"ucl-{os.getpid()}-999-h1"
    live = f"ucl-{os.getppid()}-0-h1"  # our parent's, alive for as long as we run
    try:
        for name in (dead, reused, live):
            ip("netns", "add", name)
        removed = remove_leftovers()
        assert dead in removed
        assert reused in removed
        assert live not in removed
        assert live in namespaces()
    finally:
        for name in (dead, reused, live):
            subprocess.run([tool("ip") or "ip", "netns", "delete", name], capture_output=True)
