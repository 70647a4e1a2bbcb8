"""Sockets and addresses: binding, reading a burst, and parsing what users type as a peer.

Every function here turns an OS error or a malformed address into an `AddressError` whose
message is one line for the user.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from ..protocol import Address

DEFAULT_PORT = 9000
RECEIVE_BUFFER = 64 * 1024
"""Largest datagram we read; bigger than any valid one (1,200 bytes), so none is cut."""
SOCKET_BUFFER = 1 << 20
"""Kernel buffer we ask for, so a burst is not dropped while the receiver is busy."""


class AddressError(ValueError):
    """A peer or bind address that cannot be used; the message is one line for the user."""


DRAIN = 64
"""Datagrams a runtime reads per wake-up before it flushes the core, so that a burst is
answered with one ACK per peer rather than one per datagram."""


def read_queued(sock: socket.socket, batch: list[tuple[bytes, Address]]) -> None:
    """Append to `batch` what is already queued in the socket, up to DRAIN datagrams in
    all, without blocking (whatever the socket's own blocking mode)."""
    while len(batch) < DRAIN:
        try:
            data, addr = sock.recvfrom(RECEIVE_BUFFER, socket.MSG_DONTWAIT)
        except OSError:
            # Nothing more queued (BlockingIOError), or an error the next blocking read
            # meets and handles.
            return
        batch.append((data, normalize(addr)))


def normalize(addr: tuple[object, ...]) -> Address:
    """(host, port) from what recvfrom returns (IPv6 adds flow info and scope id)."""
    host, port = addr[0], addr[1]
    assert isinstance(host, str) and isinstance(port, int)
    return (host, port)


def family_of(bind: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(bind.split("%")[0]).version
    except ValueError:
        raise AddressError(f"--bind needs a numeric IP address, not {bind!r}") from None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def bind_socket(bind: str, port: int) -> socket.socket:
    """A UDP socket bound to (bind, port), with large kernel buffers.

    Raises AddressError with a one-line explanation when the port is taken or the address
    does not belong to this machine.
    """
    family = family_of(bind)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((bind, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressError(
                f"UDP port {port} on {bind} is already in use; choose another with --port"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise AddressError(f"{bind} is not an address of this machine (--bind)") from None
        if error.errno == errno.EACCES:
            raise AddressError(
                f"not allowed to bind UDP port {port}; use --port 1024 or above"
            ) from None
        raise AddressError(f"cannot bind {bind} port {port}: {error.strerror}") from None
    return sock


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise AddressError(f"port must be a number from 0 to 65535, not {text!r}")
    return int(text)


def resolve_peer(
    text: str, family: socket.AddressFamily, default_port: int = DEFAULT_PORT
) -> Address:
    """Turn "HOST", "HOST:PORT", "[V6]:PORT" or a bare IPv6 address into an address of
    `family`. Raises AddressError with a one-line reason."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise AddressError(f"malformed peer address {text!r}; use [IPv6]:PORT")
        host = text[1:close]
        if close + 1 < len(text):
            port = parse_port(text[close + 2 :])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = parse_port(port_text)
    if not host:
        raise AddressError(f"malformed peer address {text!r}; use HOST or HOST:PORT")
    if port == 0:
        raise AddressError(f"peer port must be 1 to 65535 in {text!r}")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror:
        other = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
        try:
            socket.getaddrinfo(host, port, other, socket.SOCK_DGRAM)
        except socket.gaierror:
            raise AddressError(f"unknown host {host!r}") from None
        hint = "--bind ::" if other == socket.AF_INET6 else "--bind 0.0.0.0"
        raise AddressError(f"{host} has no address of the socket's family; try {hint}") from None
    return normalize(infos[0][4])
