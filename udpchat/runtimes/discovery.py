"""The discovery socket: where a runtime hears the LAN's announcements, and where its own
go (docs/protocol.md, "Discovery").

Why a second socket. Announcements must reach every chat on the LAN, and several chats
on one machine each have their own chat port; a multicast or broadcast datagram is
delivered by its destination port. So every chat also listens on the one discovery
port, with `SO_REUSEADDR` so that each listener on a machine gets its copy. That socket
only receives: announcements leave from the chat socket, so their source is where the
announcer receives, and every answer goes there. The runtime's receiving thread (or
process, or loop) reads both sockets.

Rules:
- Multicast is sent with a TTL (hop limit) of 1 and looped back, so chats on this
  machine hear it and no router forwards it.
- Bound to one address, the chat announces on that address's interface only: its group
  membership and multicast interface are pinned there (127.0.0.1 keeps everything on
  loopback, which is how the tests run), and its broadcast goes to that subnet's
  broadcast address, if it has one. Bound to 0.0.0.0, it joins the group on every
  interface that is up and sends where the routing table says (the default route's
  interface), with a broadcast to 255.255.255.255.
- IPv6 (`--bind ::`) uses the link-local group on every interface that is up, and has
  no broadcast.
- Errors sending to these addresses are the network's business (no route, no multicast):
  the runtime sends them quietly, and `--peer` still works.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from ..protocol import Address, ipmsg
from ..protocol.wire import DISCOVERY_GROUP, DISCOVERY_GROUP6
from .sockets import SOCKET_BUFFER, AddressError, family_of, interfaces_up

_GROUP = socket.inet_aton(DISCOVERY_GROUP)


@dataclass
class Discovery:
    """A listening socket and the addresses announcements go to."""

    listener: socket.socket
    announce_to: tuple[Address, ...]

    def close(self) -> None:
        self.listener.close()


def open_discovery(chat: socket.socket, bind: str, port: int) -> Discovery:
    """Listen for announcements on `port` and set `chat` up to send them.

    Raises AddressError (one line) when the discovery port cannot be bound.
    """
    if family_of(bind) == socket.AF_INET6:
        return _open_ipv6(chat, port)
    return _open_ipv4(chat, bind, port)


def _listener(family: socket.AddressFamily, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressError(
                f"UDP port {port}, where udpchat hears announcements, is taken by another"
                " program; choose another with --discovery-port, or --no-discovery"
            ) from None
        if error.errno == errno.EACCES:
            raise AddressError(
                f"not allowed to bind discovery port {port}; use --discovery-port 1024"
                " or above, or --no-discovery"
            ) from None
        raise AddressError(
            f"cannot listen for announcements on UDP port {port}: {error.strerror}"
            " (--no-discovery turns discovery off)"
        ) from None
    return sock


def _open_ipv4(chat: socket.socket, bind: str, port: int) -> Discovery:
    listener = _listener(socket.AF_INET, port)
    chat.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    chat.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    chat.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    announce_to: list[Address] = [(DISCOVERY_GROUP, port)]
    if bind != "0.0.0.0":
        chat.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(bind))
        _join(listener, bind)
        announce_to += [(b, port) for b in _broadcasts_of(bind)]
    else:
        for _, address, _ in interfaces_up():
            _join(listener, address)
        announce_to.append(("255.255.255.255", port))
    return Discovery(listener, tuple(announce_to))


def _join(listener: socket.socket, interface_address: str) -> None:
    try:
        listener.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            _GROUP + socket.inet_aton(interface_address),
        )
    except OSError:
        pass  # an interface without multicast, or joined already: broadcast may still do


def _broadcasts_of(bind: str) -> list[str]:
    for _, address, broadcasts in interfaces_up():
        if address == bind:
            return sorted(broadcasts)
    return []


def ipmsg_broadcasts(bind: str) -> tuple[Address, ...]:
    """Where IP Messenger entry packets are broadcast from a chat bound to `bind`: that
    address's subnet broadcast, or, bound to 0.0.0.0, 255.255.255.255 and every
    interface's subnet broadcast (as IPMsg clients do); on port 2425. None for IPv6 or
    loopback, which have no broadcast."""
    if family_of(bind) == socket.AF_INET6:
        return ()
    if bind != "0.0.0.0":
        return tuple((b, ipmsg.PORT) for b in _broadcasts_of(bind))
    subnets = {b for _, _, broadcasts in interfaces_up() for b in broadcasts}
    return (("255.255.255.255", ipmsg.PORT), *((b, ipmsg.PORT) for b in sorted(subnets)))


def _open_ipv6(chat: socket.socket, port: int) -> Discovery:
    listener = _listener(socket.AF_INET6, port)
    chat.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    chat.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
    group = socket.inet_pton(socket.AF_INET6, DISCOVERY_GROUP6)
    announce_to: list[Address] = []
    for name, _, _ in interfaces_up(ipv4_only=False):
        try:
            index = socket.if_nametoindex(name)
            request = group + struct.pack("@I", index)  # struct ipv6_mreq
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
        except OSError:
            continue
        announce_to.append((f"{DISCOVERY_GROUP6}%{name}", port))
    return Discovery(listener, tuple(announce_to))
