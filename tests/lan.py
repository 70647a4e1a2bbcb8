"""A simulated LAN of Linux network namespaces, for tests that run real processes as hosts.

Layout. One "switch" namespace holds a bridge called `lan`; each host is a namespace of its
own whose `eth0` is a veth into a bridge port named after it (`lan-h1`, `lan-h2`, ...),
with 10.77.0.N/24, a fixed IPv6 link-local address and a default route out of `eth0`, so
multicast to 239.255.0.0/16 and broadcast to 10.77.0.255 need no extra route. With
`remote_hosts`, a second bridge `remote` (10.78.0.0/24, ports `rem-r1`, ...) in the same
switch namespace is joined to the first by a router namespace that forwards unicast only:
no multicast routing, no directed broadcast, so those hosts are reachable only by address.

Faults are nftables rules in the bridge family, on the switch's forward hook, so they see
every frame going from one port to another: unicast, multicast and broadcast, both ways.
The kernel has no netem, hence `numgen random` for loss. Rules are rebuilt in one atomic
`nft -f` transaction from this object's state whenever that state changes.

Rules:
- Nothing is configured in the caller's own namespace: every interface, address, route and
  nftables table lives in a namespace created here, so tests reach no real network.
- Every name starts with `ucl-<pid>-<n>-`. The first LAN of a process removes leftovers of
  runs whose process is gone (or that had this pid before), with any process inside them.
- Teardown kills what runs inside the namespaces, then deletes them (which takes the veths,
  bridges and tables with them). It is idempotent, copes with a half-built LAN, and runs
  from `__exit__`, from the `open_lan` fixture and at interpreter exit.
- Every wait has a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

NAME_PREFIX = "ucl-"
COMMAND_TIMEOUT = 10.0
"""Seconds any one `ip` or `nft` command may take."""
TABLE = "udpchat_lan"
INTERFACE = "eth0"
SKIP_REASON = (
    "the virtual LAN needs root and iproute2/nftables ({}); "
    "scripts/install-test-tools installs them"
)

# ip and nft live in sbin, which a root shell started by sudo may not have on PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class LanError(RuntimeError):
    """Building, changing or removing the virtual LAN failed; the message has the details."""


@dataclass(frozen=True)
class Host:
    """One simulated machine: a network namespace with one interface into a bridge."""

    name: str
    """Short name, unique in its LAN: h1, h2, ... on the LAN, r1, r2, ... remote."""
    netns: str
    """The network namespace, for `ip netns exec`."""
    address: str
    """Its IPv4 address."""
    network: ipaddress.IPv4Network
    """The subnet of its link."""
    link_local: str
    """Its IPv6 link-local address on `interface` (fixed: fe80:: then the IPv4 octets)."""
    port: str
    """The bridge port its veth plugs into, in the switch namespace."""
    env: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Variables `VirtualLan.run` sets for it: its own home and XDG directories, if any."""
    interface: str = INTERFACE
    """Its one interface."""

    @property
    def broadcast(self) -> str:
        """The broadcast address of its subnet."""
        return str(self.network.broadcast_address)


def tool(name: str) -> str | None:
    """The full path of a command, looking in sbin too."""
    return shutil.which(name, path=_SEARCH_PATH)


@cache
def missing_requirements() -> str | None:
    """Why the virtual LAN cannot be built here, or None when it can.

    Being root with the tools is not quite enough (a container may lack CAP_SYS_ADMIN), so
    this also creates and deletes one namespace, once per process.
    """
    if not sys.platform.startswith("linux"):
        return SKIP_REASON.format(f"this is {sys.platform}, not Linux")
    if os.geteuid() != 0:
        return SKIP_REASON.format(f"running as uid {os.geteuid()}")
    missing = [name for name in ("ip", "nft") if tool(name) is None]
    if missing:
        return SKIP_REASON.format(f"{' and '.join(missing)} not found")
    ip = tool("ip") or "ip"
    probe = f"{NAME_PREFIX}{os.getpid()}-probe"
    result = _run([ip, "netns", "add", probe], check=False)
    if result.returncode != 0:
        return SKIP_REASON.format(f"`ip netns add` fails: {result.stderr.strip()}")
    _run([ip, "netns", "delete", probe], check=False)
    return None


def _run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a setup command; with `check`, a failure raises LanError with its stderr."""
    try:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise LanError(f"{' '.join(argv)} took more than {COMMAND_TIMEOUT} s") from error
    if check and result.returncode != 0:
        where = f"\n{input}" if input else ""
        raise LanError(f"{' '.join(argv)} failed: {result.stderr.strip()}{where}")
    return result


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([tool("ip") or "ip", *args], check=check)


def _ip_batch(netns: str, commands: Sequence[str]) -> None:
    """Run several `ip` commands in `netns` in one process, not one process each."""
    _run([tool("ip") or "ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")


def _in_namespace(netns: str, argv: Sequence[str], input: str | None = None) -> None:
    _run([tool("ip") or "ip", "netns", "exec", netns, *argv], input=input)


def _namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _pids_in(netns: str) -> list[int]:
    result = _ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in result.stdout.split()]


def _remove_namespaces(names: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> None:
    """Kill whatever runs inside `names`, then delete them.

    A namespace with a process inside outlives `ip netns delete` (only its name goes), so
    the processes go first, including grandchildren the tests never saw. One whose
    processes outlive `timeout` keeps its name, for the caller to see and report.
    """
    existing = set(_namespaces())
    names = [name for name in names if name in existing]
    deadline = time.monotonic() + timeout
    for name in names:
        while pids := _pids_in(name):
            if time.monotonic() > deadline:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # Our own children need reaping to leave the namespace; others are reaped
            # by their parent (or init) and are gone by the next look.
            for pid in pids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.01)
        else:
            _ip("netns", "delete", name, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_cleaned_leftovers = False


def remove_leftovers() -> list[str]:
    """Delete the namespaces of earlier runs that died before their teardown.

    They are the `ucl-<pid>-` names whose process is gone, or whose pid is ours (a crashed
    run in a container that started with the same pid) but that no LAN of ours owns.
    Returns the names removed.
    """
    ours = {name for lan in _open_lans for name in lan.namespaces}
    stale = []
    for name in _namespaces():
        if not name.startswith(NAME_PREFIX) or name in ours:
            continue
        pid_text = name[len(NAME_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or not _pid_alive(pid):
            stale.append(name)
    _remove_namespaces(stale)
    return stale


_lan_numbers = itertools.count()
_open_lans: list[VirtualLan] = []


class VirtualLan:
    """A bridge, N hosts on 10.77.0.0/24 and, optionally, remote hosts behind a router.

    Use as a context manager (or `open()` / `close()`). Hosts are `lan.hosts` (h1..hN at
    .1 to .N) and `lan.remote_hosts` (r1..rM on `remote_subnet`); the router, when there
    is one, has the subnet's last usable address on each side.
    """

    def __init__(
        self,
        hosts: int = 3,
        subnet: str = "10.77.0.0/24",
        *,
        remote_hosts: int = 0,
        remote_subnet: str = "10.78.0.0/24",
        directory: Path | None = None,
    ) -> None:
        """`directory`, when given, gets a home and XDG directories per host (see `run`)."""
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{next(_lan_numbers)}-"
        self.switch = self.prefix + "sw"
        self.router: str | None = self.prefix + "rt" if remote_hosts else None
        self.directory = directory
        self.network = ipaddress.IPv4Network(subnet)
        self.remote_network = ipaddress.IPv4Network(remote_subnet)
        self.hosts = self._plan("h", "lan-", self.network, hosts)
        self.remote_hosts = self._plan("r", "rem-", self.remote_network, remote_hosts)
        self.router_addresses = {
            "lan": str(self.network[-2]),
            "remote": str(self.remote_network[-2]),
        }
        self.namespaces: list[str] = []
        """The namespaces created so far, for teardown: a failed setup leaves a prefix."""
        self.processes: list[subprocess.Popen[Any]] = []
        self._loss_percent = 0.0
        self._multicast_blocked = False
        self._disconnected: set[str] = set()
        self._owner_pid = os.getpid()

    def _plan(
        self, letter: str, port_prefix: str, network: ipaddress.IPv4Network, count: int
    ) -> list[Host]:
        if count > network.num_addresses - 3:  # network, router and broadcast addresses
            raise ValueError(f"{network} has no room for {count} hosts and a router")
        hosts = []
        for number in range(1, count + 1):
            address = network[number]
            name = f"{letter}{number}"
            env: dict[str, str] = {}
            if self.directory is not None:
                home = self.directory / name
                env = {
                    "HOME": str(home / "home"),
                    "XDG_CONFIG_HOME": str(home / "config"),
                    "XDG_DATA_HOME": str(home / "data"),
                    "XDG_STATE_HOME": str(home / "state"),
                    "XDG_CACHE_HOME": str(home / "cache"),
                }
            hosts.append(
                Host(
                    name=name,
                    netns=self.prefix + name,
                    address=str(address),
                    network=network,
                    link_local="fe80::" + ":".join(str(address).split(".")),
                    port=port_prefix + name,
                    env=env,
                )
            )
        return hosts

    @property
    def all_hosts(self) -> list[Host]:
        """The LAN's hosts, then the remote ones."""
        return [*self.hosts, *self.remote_hosts]

    # -- building and tearing down --------------------------------------------------------

    def __enter__(self) -> VirtualLan:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Build the LAN; on failure, remove what was built and raise LanError."""
        global _cleaned_leftovers
        reason = missing_requirements()
        if reason is not None:
            raise LanError(reason)
        if self not in _open_lans:
            _open_lans.append(self)
        if not _cleaned_leftovers:
            _cleaned_leftovers = True
            remove_leftovers()
        try:
            self._build()
        except BaseException:
            # The build's own error says more than a teardown's; a namespace left over
            # stays in _open_lans for the exit handler and the next run to remove.
            with contextlib.suppress(LanError):
                self.close()
            raise

    def _build(self) -> None:
        wanted = [self.switch, *(h.netns for h in self.all_hosts)]
        if self.router:
            wanted.append(self.router)
        for name in wanted:
            # Recorded before creation, so a failure half way still tears down this one.
            self.namespaces.append(name)
            _ip("netns", "add", name)

        # Snooping off: without an IGMP querier the bridge's idea of who joined a group
        # depends on reports that loss may drop; flooding, like an unmanaged switch,
        # makes delivery depend only on the rules below.
        switch = [
            "link add lan type bridge mcast_snooping 0",
            "link set lan up",
        ]
        if self.remote_hosts:
            switch += ["link add remote type bridge mcast_snooping 0", "link set remote up"]
        for host in self.all_hosts:
            bridge = "lan" if host in self.hosts else "remote"
            switch += [
                f"link add {host.port} type veth peer name {INTERFACE} netns {host.netns}",
                f"link set {host.port} master {bridge} up",
            ]
        if self.router:
            switch += [
                f"link add lan-rt type veth peer name lan0 netns {self.router}",
                "link set lan-rt master lan up",
                f"link add rem-rt type veth peer name rem0 netns {self.router}",
                "link set rem-rt master remote up",
            ]
        _ip_batch(self.switch, switch)

        for host in self.all_hosts:
            prefix = host.network.prefixlen
            gateway = self.router_addresses["lan" if host in self.hosts else "remote"]
            default = f"via {gateway}" if self.router else f"dev {INTERFACE}"
            _ip_batch(
                host.netns,
                [
                    "link set lo up",
                    # Our own link-local address without duplicate address detection: the
                    # kernel's would stay "tentative" (unbindable) for a second or more.
                    f"link set {INTERFACE} addrgenmode none",
                    f"address add {host.address}/{prefix} dev {INTERFACE}",
                    f"address add {host.link_local}/64 dev {INTERFACE} nodad",
                    f"link set {INTERFACE} up",
                    f"route add default {default}",
                ],
            )
            if self.directory is not None:
                for directory in host.env.values():
                    Path(directory).mkdir(parents=True, exist_ok=True)

        if self.router:
            lan_side = f"{self.router_addresses['lan']}/{self.network.prefixlen}"
            remote_side = f"{self.router_addresses['remote']}/{self.remote_network.prefixlen}"
            _ip_batch(
                self.router,
                [
                    "link set lo up",
                    f"address add {lan_side} dev lan0",
                    f"address add {remote_side} dev rem0",
                    "link set lan0 up",
                    "link set rem0 up",
                ],
            )
            # /proc/sys/net shows the namespace of whoever opens it: a shell inside.
            _in_namespace(self.router, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])

    def close(self) -> None:
        """Kill every process started here, then remove the namespaces. Idempotent."""
        if os.getpid() != self._owner_pid:
            return  # a forked child must not tear down its parent's LAN
        for process in self.processes:
            # One stuck process (SIGKILL waits for uninterruptible sleep) must not stop
            # the rest of the teardown; its namespace is then reported below.
            with contextlib.suppress(subprocess.TimeoutExpired):
                _stop(process, signal.SIGKILL, timeout=COMMAND_TIMEOUT)
        self.processes.clear()
        _remove_namespaces(self.namespaces)
        left = sorted(set(self.namespaces) & set(_namespaces()))
        self.namespaces = left
        if self in _open_lans and not left:
            _open_lans.remove(self)
        if left:
            raise LanError(f"could not remove the namespaces {', '.join(left)}")

    # -- running programs -----------------------------------------------------------------

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start `argv` inside `host`'s namespace; the LAN kills it at teardown.

        The environment is this process's, then the host's own directories (`Host.env`),
        then `env`. stdin is /dev/null unless given: CI has none. `ip netns exec` execs
        the command, so the Popen's pid is the program's own and signals reach it.
        """
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        environment = {**os.environ, **host.env, **(env or {})}
        command = [tool("ip") or "ip", "netns", "exec", host.netns, *argv]
        process = subprocess.Popen(command, env=environment, **popen_kwargs)
        self.processes.append(process)
        return process

    def kill(
        self,
        process: subprocess.Popen[Any],
        sig: signal.Signals = signal.SIGKILL,
        timeout: float = COMMAND_TIMEOUT,
    ) -> int:
        """Send `sig` and wait up to `timeout` seconds for the exit; returns the exit code.

        SIGKILL is a host dying; SIGTERM is asking it to quit. A process that outlives
        `timeout` is killed and the test fails with TimeoutExpired.
        """
        return _stop(process, sig, timeout)

    # -- faults ---------------------------------------------------------------------------

    def set_loss(self, percent: float) -> None:
        """Drop `percent` % of the UDP datagrams crossing the LAN's bridge, each on its own.

        Every frame from one port to another is drawn separately, so a multicast reaching
        two hosts may reach either, both or neither, and each direction of an exchange
        loses its share. Only UDP: ARP and neighbour discovery still work, so the loss a
        test sets is what the datagrams see, without the kernel's ARP retries on top. The
        remote link (behind the router) stays lossless; crossing it loses on the LAN only.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be between 0 and 100 %, not {percent}")
        self._loss_percent = percent
        self._apply_rules()

    def clear_loss(self) -> None:
        self.set_loss(0)

    def block_multicast(self) -> None:
        """Drop UDP to multicast groups on the LAN, and nothing else.

        Emulates access points and switches that filter multicast: broadcast and unicast
        still pass, and IPv6 neighbour discovery (multicast, but ICMPv6) still works.
        """
        self._multicast_blocked = True
        self._apply_rules()

    def unblock_multicast(self) -> None:
        self._multicast_blocked = False
        self._apply_rules()

    def disconnect(self, host: Host) -> None:
        """Drop every frame to and from `host`, as if its cable were cut.

        The host notices nothing (its link stays up); its programs keep running.
        """
        self._disconnected.add(host.port)
        self._apply_rules()

    def reconnect(self, host: Host) -> None:
        self._disconnected.discard(host.port)
        self._apply_rules()

    def _apply_rules(self) -> None:
        rules = []
        for port in sorted(self._disconnected):
            rules += [f'iifname "{port}" drop', f'oifname "{port}" drop']
        if self._multicast_blocked:
            rules += [
                'iifname "lan-*" ip daddr 224.0.0.0/4 meta l4proto udp drop',
                'iifname "lan-*" ip6 daddr ff00::/8 meta l4proto udp drop',
            ]
        if self._loss_percent:
            # In hundredths of a percent, so that 0.5 % is not rounded away.
            threshold = round(self._loss_percent * 100)
            rules.append(
                f'iifname "lan-*" meta l4proto udp numgen random mod 10000 < {threshold} drop'
            )
        # Declaring then deleting the table makes the script work whether or not it
        # exists; the whole script is one transaction, so no frame sees a half rule set.
        script = [f"table bridge {TABLE}", f"delete table bridge {TABLE}"]
        if rules:
            script += [
                f"table bridge {TABLE} {{",
                "  chain forward {",
                "    type filter hook forward priority filter; policy accept;",
                *(f"    {rule}" for rule in rules),
                "  }",
                "}",
            ]
        _in_namespace(self.switch, [tool("nft") or "nft", "-f", "-"], "\n".join(script) + "\n")


def _stop(process: subprocess.Popen[Any], sig: signal.Signals, timeout: float) -> int:
    """Signal `process`, wait for it to end, close its pipes; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=COMMAND_TIMEOUT)
        raise
    finally:
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def read_line(process: subprocess.Popen[Any], timeout: float) -> str:
    """The next line `process` writes to its stdout pipe, without the newline.

    Reads the pipe's file descriptor a byte at a time, so nothing after the line is taken
    from the pipe: `communicate()` or another `read_line` still gets it. Raises
    TimeoutError after `timeout` seconds and EOFError when the pipe closes first.
    """
    assert process.stdout is not None, "start the process with stdout=subprocess.PIPE"
    descriptor = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete line within {timeout} s (so far: {bytes(line)!r})")
        readable, _, _ = select.select([descriptor], [], [], left)
        if not readable:
            continue
        byte = os.read(descriptor, 1)
        if not byte:
            raise EOFError(f"stdout closed (after {bytes(line)!r})")
        if byte == b"\n":
            return line.decode()
        line += byte


@atexit.register
def _close_open_lans() -> None:
    for lan in list(_open_lans):
        with contextlib.suppress(Exception):
            lan.close()


@pytest.fixture
def open_lan(tmp_path: Path) -> Iterator[Callable[..., VirtualLan]]:
    """Open virtual LANs (arguments as VirtualLan's); all are removed after the test.

    Each host gets its own home and XDG directories under the test's tmp_path. Skips the
    test, saying why, where the LAN cannot be built (not root, iproute2 or nftables absent).
    """
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        numbers = itertools.count(1)

        def opener(*args: Any, **kwargs: Any) -> VirtualLan:
            kwargs.setdefault("directory", tmp_path / f"lan{next(numbers)}")
            return stack.enter_context(VirtualLan(*args, **kwargs))

        yield opener
