"""A tiny UDP sender and listener that tests/test_lan.py runs inside the virtual LAN's hosts.

    python lan_probe.py listen --port P [--group G] [--interface-address A | --interface I]
    python lan_probe.py send --to ADDRESS --port P [--count N] [--text T] [--ttl 1] ...

`listen` prints "ready" once bound (and joined), then each datagram's text on a line, and
exits 0 after a datagram whose first word is "end" (printed too). It gives up after
--timeout seconds with "timeout" and exit status 1, so a lost marker never hangs a test.
`send` sends --count datagrams "TEXT 0", "TEXT 1", ... IPv6 is chosen by the address.
"""

from __future__ import annotations

import argparse
import ipaddress
import select
import socket
import sys
import time

# Forced past net.core.rmem_max (we are root): a burst of hundreds of datagrams must not
# overflow the listener's buffer, or overflow would pass for loss on the wire.
RECEIVE_BUFFER = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux's value; Python omits it


def listen(arguments: argparse.Namespace) -> int:
    group = ipaddress.ip_address(arguments.group) if arguments.group else None
    ipv6 = arguments.ipv6 or (group is not None and group.version == 6)
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    # Several listeners on one host share the port, as several udpchats share discovery.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind((arguments.bind or ("::" if ipv6 else "0.0.0.0"), arguments.port))
    if group is not None and group.version == 4:
        interface = socket.inet_aton(arguments.interface_address or "0.0.0.0")
        membership = group.packed + interface
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    elif group is not None:
        index = socket.if_nametoindex(arguments.interface)
        membership = group.packed + index.to_bytes(4, sys.byteorder)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, membership)
    print("ready", flush=True)

    deadline = time.monotonic() + arguments.timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        text = sock.recv(65535).decode()
        print(text)
        if text.split()[0] == "end":
            return 0
    print("timeout")
    return 1


def send(arguments: argparse.Namespace) -> int:
    destination = ipaddress.ip_address(arguments.to.split("%")[0])
    family = socket.AF_INET6 if destination.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, arguments.ttl)
        if arguments.interface_address:
            interface = socket.inet_aton(arguments.interface_address)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
        address: tuple[object, ...] = (arguments.to, arguments.port)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, arguments.ttl)
        index = socket.if_nametoindex(arguments.interface) if arguments.interface else 0
        if index:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        # A link-local destination needs its link: the scope id.
        address = (str(destination), arguments.port, 0, index)
    for number in range(arguments.count):
        sock.sendto(f"{arguments.text} {number}".encode(), address)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    listener = commands.add_parser("listen")
    listener.add_argument("--port", type=int, required=True)
    listener.add_argument("--bind")
    listener.add_argument("--group")
    listener.add_argument("--ipv6", action="store_true")
    listener.add_argument("--interface-address")
    listener.add_argument("--interface", default="eth0")
    listener.add_argument("--timeout", type=float, default=10.0)
    sender = commands.add_parser("send")
    sender.add_argument("--to", required=True)
    sender.add_argument("--port", type=int, required=True)
    sender.add_argument("--count", type=int, default=1)
    sender.add_argument("--text", default="hello")
    sender.add_argument("--ttl", type=int, default=1)
    sender.add_argument("--interface-address")
    sender.add_argument("--interface")
    arguments = parser.parse_args()
    return listen(arguments) if arguments.command == "listen" else send(arguments)


if __name__ == "__main__":
    sys.exit(main())
