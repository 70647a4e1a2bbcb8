"""Sockets and addresses: binding, reading a burst, parsing what users type as a peer, and
listing this machine's own addresses.

Every function here turns an OS error or a malformed address into an `AddressError` whose
message is one line for the user.

Rules:
- A peer is one machine: a dotted quad, an IPv6 literal or a host name. The shorthands
  that inet_aton still accepts ("1.2.3", "127.1", "0x7f.1") are refused rather than read
  as some other address, and so are broadcast and multicast addresses, to which every
  send would fail.
- A socket bound to "::" is dual-stack: IPv4 peers become IPv4-mapped IPv6 addresses
  ("::ffff:192.168.1.20"), the form in which recvfrom reports IPv4 senders on it.
- Finding our own addresses only reads the interfaces; it never sends anything.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import re
import selectors
import socket
import struct
import sys
from collections.abc import Iterator

from ..protocol import Address

DEFAULT_PORT = 9000
RECEIVE_BUFFER = 64 * 1024
"""Largest datagram we read; bigger than any valid one (1,200 bytes), so none is cut."""
SOCKET_BUFFER = 1 << 20
"""Kernel buffer we ask for, so a burst is not dropped while the receiver is busy."""


class AddressError(ValueError):
    """A peer or bind address that cannot be used; the message is one line for the user."""


class PortInUse(AddressError):
    """The chat's own port is taken (by another chat on this machine, most often)."""


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


class Reader:
    """What a receiving thread waits on: the chat socket, and the discovery socket when
    there is one. `read()` blocks until datagrams arrive and returns them (up to DRAIN
    per socket): those of the chat socket, then those of the discovery socket; or None
    once the chat socket is shut down for reading (`close`)."""

    def __init__(self, sock: socket.socket, listener: socket.socket | None) -> None:
        self._sock = sock
        self._listener = listener
        self._selector: selectors.BaseSelector | None = None
        if listener is not None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock, selectors.EVENT_READ)
            self._selector.register(listener, selectors.EVENT_READ)

    def read(
        self,
    ) -> tuple[list[tuple[bytes, Address]], list[tuple[bytes, Address]]] | None:
        if self._selector is None:  # one socket: block in recvfrom, no select per read
            only = self._first_and_queued(self._sock, block=True)
            return None if only is None else (only, [])
        batch: list[tuple[bytes, Address]] = []
        announced: list[tuple[bytes, Address]] = []
        for key, _ in self._selector.select():
            if key.fileobj is self._sock:
                more = self._first_and_queued(self._sock, block=False)
                if more is None:
                    return None
                batch += more
            else:
                read_queued(self._listener, announced)  # type: ignore[arg-type]
        return batch, announced

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()

    @staticmethod
    def _first_and_queued(
        sock: socket.socket, *, block: bool
    ) -> list[tuple[bytes, Address]] | None:
        try:
            data, addr = sock.recvfrom(RECEIVE_BUFFER, 0 if block else socket.MSG_DONTWAIT)
        except OSError:
            # Nothing after all, or an ICMP error reported on the socket: nothing to read.
            return []
        if addr is None:  # shut down for reading: the runtime is closing
            return None
        batch = [(data, normalize(addr))]
        read_queued(sock, batch)
        return batch


def normalize(addr: tuple[object, ...]) -> Address:
    """(host, port) from what recvfrom returns (IPv6 adds flow info and scope id)."""
    host, port = addr[0], addr[1]
    assert isinstance(host, str) and isinstance(port, int)
    return (host, port)


def family_of(bind: str) -> socket.AddressFamily:
    """The address family of a socket bound to `bind`, a numeric IP address."""
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
        if is_dual_stack(bind):
            # The system default (net.ipv6.bindv6only) may make "::" IPv6-only; peers
            # given as IPv4 addresses are mapped for this socket (resolve_peer).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((bind, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(
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


def is_dual_stack(bind: str) -> bool:
    """Whether a socket bound to `bind` talks to IPv4 and IPv6 peers alike (it is "::")."""
    try:
        return ipaddress.ip_address(bind) == ipaddress.IPv6Address("::")
    except ValueError:
        return False


def parse_port(text: str) -> int:
    """A port number from 0 to 65535, or AddressError."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise AddressError(f"port must be a number from 0 to 65535, not {text!r}")
    return int(text)


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
"""One label of a host name (RFC 1123): letters, digits and inner hyphens, 1 to 63."""


def _is_host_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host  # a fully qualified "name."
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return False
    # A name whose last label is all digits is a mistyped address, never a name (RFC 1123
    # section 2.1). Left to getaddrinfo, inet_aton would read "1.2.3" as 1.2.0.3 and
    # "0x7f.1" as 127.0.0.1.
    if labels[-1].isdigit():
        return False
    try:
        socket.inet_aton(name)
    except OSError:
        return True
    return False


def resolve_peer(text: str, bind: str = "0.0.0.0", default_port: int = DEFAULT_PORT) -> Address:
    """Turn "HOST", "HOST:PORT", "[V6]:PORT" or a bare IPv6 address into the address of a
    peer for a socket bound to `bind`. Raises AddressError with a one-line reason.

    HOST is a dotted quad, an IPv6 literal or a host name. On a dual-stack socket ("::")
    an IPv4 peer comes back IPv4-mapped. Broadcast and multicast addresses are refused.
    """
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise AddressError(f"malformed peer address {text!r}; use [IPv6]:PORT")
        host = text[1:close]
        if close + 1 < len(text):
            port = parse_port(text[close + 2 :])
        if ":" not in host:
            raise AddressError(f"malformed peer address {text!r}; [...] holds an IPv6 address")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = parse_port(port_text)
    if not host:
        raise AddressError(f"malformed peer address {text!r}; use HOST or HOST:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_host_name(host):
            raise AddressError(
                f"malformed peer address {text!r}; use an IPv4 address such as 192.168.1.20,"
                " an IPv6 address or a host name"
            ) from None
    else:
        _refuse_group_address(host, host)
    if port == 0:
        raise AddressError(f"peer port must be 1 to 65535 in {text!r}")
    family, dual_stack = family_of(bind), is_dual_stack(bind)
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC if dual_stack else family, socket.SOCK_DGRAM
        )
    except socket.gaierror:
        other = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
        try:
            socket.getaddrinfo(host, port, other, socket.SOCK_DGRAM)
        except socket.gaierror:
            raise AddressError(f"unknown host {host!r}") from None
        hint = "--bind ::" if other == socket.AF_INET6 else "--bind 0.0.0.0"
        raise AddressError(f"{host} has no address of the socket's family; try {hint}") from None
    addr = normalize(infos[0][4])
    _refuse_group_address(addr[0], host)
    if dual_stack and infos[0][0] == socket.AF_INET:
        addr = (f"::ffff:{addr[0]}", addr[1])
    return addr


def _refuse_group_address(ip: str, host: str) -> None:
    """AddressError when `ip` is a broadcast or multicast address: no one peer answers
    there, so every message would fail."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    named = host if host == str(address) else f"{host} ({address})"
    if address.is_multicast:
        raise AddressError(f"{named} is a multicast address; a peer is one machine")
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255") or address in _local_broadcasts()
    ):
        raise AddressError(f"{named} is a broadcast address; a peer is one machine")


# -- this machine's addresses -------------------------------------------------------
# Linux's interface ioctls (linux/sockios.h) and interface flags (linux/if.h).
_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
# IPv6 address flags (linux/if_addr.h): an address that failed duplicate address
# detection, or has not passed it yet, cannot be used.
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_IF_INET6 = "/proc/net/if_inet6"


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes | None:
    """One SIOCGIF* request on interface `name`: the struct ifreq it fills, or None."""
    try:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("40s", name.encode()[:15]))
    except OSError:  # no IPv4 address on the interface, or the interface went away
        return None


def _ipv4_in(ifreq: bytes) -> ipaddress.IPv4Address:
    # struct ifreq: the name (16 bytes), then a struct sockaddr_in (family, port, address).
    return ipaddress.IPv4Address(ifreq[20:24])


def _interfaces() -> Iterator[tuple[str, int, ipaddress.IPv4Address | None, set[str]]]:
    """(name, flags, IPv4 address, IPv4 broadcast addresses) of each interface (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            ifreq = _ioctl(sock, _SIOCGIFFLAGS, name)
            if ifreq is None:
                continue
            flags = struct.unpack_from("H", ifreq, 16)[0]
            ifreq = _ioctl(sock, _SIOCGIFADDR, name)
            address = _ipv4_in(ifreq) if ifreq is not None else None
            broadcasts: set[str] = set()
            if address is not None and flags & _IFF_BROADCAST:
                ifreq = _ioctl(sock, _SIOCGIFBRDADDR, name)
                if ifreq is not None:
                    broadcasts.add(str(_ipv4_in(ifreq)))
                # The subnet's own broadcast address too, should the interface's differ.
                ifreq = _ioctl(sock, _SIOCGIFNETMASK, name)
                if ifreq is not None:
                    network = ipaddress.IPv4Network(f"{address}/{_ipv4_in(ifreq)}", strict=False)
                    if network.prefixlen < 31:  # a /31 or /32 has no broadcast address
                        broadcasts.add(str(network.broadcast_address))
            yield name, flags, address, broadcasts


def interfaces_up(*, ipv4_only: bool = True) -> list[tuple[str, str, set[str]]]:
    """(name, IPv4 address, its broadcast addresses) of each interface that is up,
    loopback included; with `ipv4_only=False` also those without an IPv4 address (the
    address is then ""). Empty where the interfaces cannot be read (only Linux's can)."""
    return [
        (name, str(address) if address is not None else "", broadcasts)
        for name, flags, address, broadcasts in _interfaces()
        if flags & _IFF_UP and (address is not None or not ipv4_only)
    ]


def _local_broadcasts() -> set[ipaddress.IPv4Address]:
    """The broadcast addresses of this machine's IPv4 subnets."""
    return {
        ipaddress.IPv4Address(broadcast)
        for _, _, _, broadcasts in _interfaces()
        for broadcast in broadcasts
    }


def lan_addresses() -> list[str] | None:
    """This machine's unicast addresses that others can reach: the IPv4 ones, then the
    global IPv6 ones, of every interface that is up and running, loopback excepted. None where the
    interfaces cannot be read (only Linux's can).

    It reads the interfaces (ioctl, /proc/net/if_inet6) and sends nothing.
    """
    if not sys.platform.startswith("linux"):
        return None
    up: set[str] = set()
    ipv4: list[str] = []
    for name, flags, address, _ in _interfaces():
        # Up and running: an interface without a carrier (a bridge with nothing on it,
        # an unplugged cable) reaches no one.
        if flags & _IFF_UP and flags & _IFF_RUNNING and not flags & _IFF_LOOPBACK:
            up.add(name)
            if address is not None and not (address.is_unspecified or address.is_loopback):
                ipv4.append(str(address))
    try:
        with open(_IF_INET6, encoding="ascii") as table:
            rows = [line.split() for line in table]
    except OSError:  # IPv6 is disabled
        rows = []
    ipv6: list[str] = []
    for row in rows:
        if len(row) != 6 or row[5] not in up:
            continue
        hex_address, _, _, scope, flags_hex, _ = row
        if int(scope, 16) != 0 or int(flags_hex, 16) & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            continue  # link-local (reachable only with a scope) or not usable yet
        address6 = ipaddress.IPv6Address(bytes.fromhex(hex_address))
        if not (address6.is_loopback or address6.is_multicast):
            ipv6.append(str(address6))
    return ipv4 + ipv6
