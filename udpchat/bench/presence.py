"""`udpchat bench presence`: what discovery and membership cost, for 10, 50 and 200 chats.

In memory, on the virtual clock (`memnet`): the core is what decides how many datagrams
presence takes and how fast everyone sees everyone, and a LAN of 200 real chats would
measure the machine rather than the protocol. Every chat announces to a group address
and a broadcast address that reach all of them (as on one LAN), with a one-way delay of
0.5 ms and the given loss on every copy. For each size:

- converged: virtual seconds from the last chat's start (they start over one second)
  until every chat shows every other as present and as a member of the lobby, the room
  they all start in;
- steady state, after 5 minutes: datagrams and bytes each chat sends per minute (all
  kinds), over `window` virtual minutes;
- idle CPU per chat: this process's CPU time over that window, divided by the number
  of chats and the window: the share of one core each chat's core would use on such a
  LAN (the runtime's own wake-ups come on top: `udpchat bench` measures those for a
  real chat);
- one message to the room: a line said in the lobby, which every chat is in; virtual
  time until the last member shows it (each copy has the 0.5 ms delay), and the CPU
  time the whole exchange took (the send, every receive, every ACK).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from ..protocol import Address, ChatSession, Config, MessageReceived
from ..protocol.wire import DISCOVERY_GROUP, DISCOVERY_PORT
from .memnet import MemNet

GROUP: Address = (DISCOVERY_GROUP, DISCOVERY_PORT)
BROADCAST: Address = ("255.255.255.255", DISCOVERY_PORT)
LATENCY = 0.0005
SETTLE = 300.0
"""Virtual seconds before the steady-state window: past every start-up announcement."""


def _host(i: int) -> Address:
    return (f"10.{i // 250}.{i % 250}.1", 9000)


def lan(count: int, *, loss: float, seed: int) -> MemNet:
    """`count` chats announcing on one simulated LAN, started over one virtual second."""
    net = MemNet(latency=LATENCY, drop=loss, seed=seed)
    addrs = [_host(i) for i in range(count)]
    net.groups[GROUP] = net.groups[BROADCAST] = addrs
    config = Config(announce_to=(GROUP, BROADCAST))
    for i, addr in enumerate(addrs):
        net.run_until(i / max(count - 1, 1))
        session_id = (i + 1).to_bytes(4, "big") + b"\x5e\x55\x10\x11"
        net.attach(addr, ChatSession(f"chat{i}", session_id=session_id, config=config))
    return net


def _converged(net: MemNet) -> bool:
    everyone = set(net.sessions)
    for addr, session in net.sessions.items():
        members = {
            row.peer for row in session.peers(net.now) if row.present and "lobby" in row.rooms
        }
        if members != everyone - {addr}:
            return False
    return True


def measure(count: int, *, loss: float = 0.0, seed: int = 1, window: float = 5.0) -> dict[str, Any]:
    """One size's figures (see the module's doc); `window` in virtual minutes."""
    net = lan(count, loss=loss, seed=seed)
    started = net.now
    step = 0.001 if loss == 0 else 0.5
    while not _converged(net):
        if net.now - started > SETTLE:
            raise RuntimeError(f"{count} chats did not converge within {SETTLE:g} s")
        net.run_for(step)
    converged = net.now - started
    net.run_until(SETTLE)
    first = len(net.sent)
    cpu = time.process_time()
    net.run_for(window * 60)
    idle_cpu = time.process_time() - cpu
    steady = net.sent[first:]
    sender = next(iter(net.sessions))
    cpu = time.process_time()
    sent_at = net.now
    net.send(sender, "hello, everyone", room="lobby")
    net.run_until_settled()
    message_cpu = time.process_time() - cpu
    arrivals = [entry.time for entry in net.log if isinstance(entry.event, MessageReceived)]
    if len(arrivals) != count - 1:
        raise RuntimeError(f"the message reached {len(arrivals)} of {count - 1} chats")
    per_chat_minute = count * window
    return {
        "chats": count,
        "loss": loss,
        "converged_s": round(converged, 3),
        "datagrams_per_chat_minute": round(len(steady) / per_chat_minute, 2),
        "bytes_per_chat_minute": round(sum(len(s.data) for s in steady) / per_chat_minute),
        "idle_cpu_percent_per_chat": round(100 * idle_cpu / (count * window * 60), 5),
        "message_to_all_ms": round((max(arrivals) - sent_at) * 1000, 2),
        "message_to_all_cpu_ms": round(message_cpu * 1000, 1),
    }


COLUMNS = [
    ("chats", "chats", "{}"),
    ("loss", "loss", "{:.0%}"),
    ("converged_s", "converged (s)", "{:.3f}"),
    ("datagrams_per_chat_minute", "datagrams/chat/min", "{:.2f}"),
    ("bytes_per_chat_minute", "bytes/chat/min", "{:,}"),
    ("idle_cpu_percent_per_chat", "idle CPU/chat", "{:.4f} %"),
    ("message_to_all_ms", "line to the room (ms)", "{:.2f}"),
    ("message_to_all_cpu_ms", "its CPU (ms)", "{:.1f}"),
]


def render(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in COLUMNS) + " |"
    lines = [header, rule]
    for row in rows:
        cells = [fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def main(argv: Sequence[str]) -> int:
    """Run the sizes asked for, print the table; 0, or 2 for a usage error (one line)."""
    parser = _Parser(
        prog="udpchat bench presence",
        description=(
            "Discovery and membership in memory, on a virtual clock: time to converge, "
            "presence traffic and idle CPU per chat at steady state, and one message to "
            "every chat, for LANs of several sizes."
        ),
    )
    parser.add_argument("--chats", default="10,50,200", metavar="LIST", help="LAN sizes")
    parser.add_argument("--loss", default="0", metavar="SHARE", help="loss per copy, 0 to 0.9")
    parser.add_argument("--window", default="5", metavar="MINUTES", help="steady-state window")
    parser.add_argument("--seed", default="1", metavar="N")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    try:
        args = parser.parse_args(argv)
        sizes = [int(text) for text in args.chats.split(",")]
        loss, window, seed = float(args.loss), float(args.window), int(args.seed)
    except ValueError as error:
        print(f"udpchat bench presence: error: {error}", file=sys.stderr)
        return 2
    if not all(2 <= size <= 1000 for size in sizes) or not 0 <= loss <= 0.9 or window <= 0:
        print(
            "udpchat bench presence: error: --chats 2 to 1000 each, --loss 0 to 0.9,"
            " --window above 0",
            file=sys.stderr,
        )
        return 2
    rows = []
    for size in sizes:
        print(f"presence: {size} chats ...", file=sys.stderr, flush=True)
        rows.append(measure(size, loss=loss, seed=seed, window=window))
    print(render(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)
    return 0
