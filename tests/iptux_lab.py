"""Debian's real iptux (an IP Messenger clone, GTK), run headless inside a virtual LAN host.

Tests check an IPMsg peer against it: the peer runs in one host of a `VirtualLan`, iptux in
another. `Iptux` starts, inside its host's namespace, an Xvfb of its own and, in a fresh
HOME preseeded with a config (nickname, group, encodings, Return sends), iptux in a D-Bus
session of its own. What iptux does is read from three places:

- its `-l DEBUG` log (stdout and stderr, captured to a file): every datagram it receives
  (as a C string) and sends (as a hex dump), parsed by `received_packets` and
  `sent_packets`;
- the desktop notifications it raises for each message it receives, whose body is the
  text as iptux decoded it: nothing serves `org.freedesktop.Notifications`, but a
  `dbus-monitor` in its session records the `Notify` calls (`received_texts`);
- its windows, found and driven with xdotool: `send_to_pal` opens the chat window with a
  pal (Ctrl+F, the pal's address, Up, Return), types the text and presses Return.

Rules:
- iptux only ever runs inside a LAN host's namespace, never in the caller's, and without
  `-b` (which would make it deaf to broadcasts).
- Xvfb picks its own free display (`-displayfd`): the lock files in /tmp are shared by all
  namespaces, so two labs, or an X server outside, never collide. It listens on no TCP
  port; clients run in the same namespace.
- iptux runs in a UTS namespace of its own with the host name `hostname`, so what it sends
  does not depend on the machine the tests run on, and in a PID namespace of its own
  whose processes (D-Bus, the monitor) the kernel kills and reaps when it ends: none is
  left to the caller's init as an orphan or a zombie.
- Every wait polls with a deadline. `close` ends the process groups it started (iptux, its
  D-Bus session and monitor, Xvfb), also after a failure; the LAN's teardown kills whatever
  is left in the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lan import Host, VirtualLan, missing_requirements, tool

from udpchat.protocol import ipmsg
from udpchat.protocol.errors import WireError

TOOLS = ("iptux", "Xvfb", "xdotool", "dbus-run-session", "dbus-monitor", "unshare")
INSTALL_HINT = "scripts/install-test-tools installs them"
POLL = 0.05
"""Seconds between two looks at a log or at the windows."""
XDOTOOL_TIMEOUT = 10.0
"""Seconds one xdotool command may take."""

MAIN_WINDOW = "^Iptux$"
"""The title of iptux's main window (the pal tree)."""
READY_LINE = r"bind UDP port\(0\.0\.0\.0:2425\) success"

# iptux's log: "[time][iptux-thread][LEVEL]file:line:function:message".
_RECEIVED = re.compile(
    r"received udp message from (?P<address>[\d.]+):(?P<port>\d+), size (?P<size>\d+)\n"
    r'"(?P<data>(?:[^"\\\n]|\\.)*)"'
)
_SENT = re.compile(
    r"send udp message to (?P<address>[\d.]+):(?P<port>\d+), size (?P<size>\d+)\n"
    r"(?P<dump>(?:[0-9a-f]{8}  .*\n)*)"
)
_ESCAPE = re.compile(rb"\\(x[0-9a-f]{2}|.)")
_SIMPLE_ESCAPES = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b'"': b'"', b"\\": b"\\"}
# dbus-monitor's rendering of org.freedesktop.Notifications.Notify(app_name, replaces_id,
# app_icon, summary, body, actions, hints, expire_timeout); strings are printed raw.
_NOTIFY = re.compile(
    r'member=Notify\n   string "(?P<app>.*)"\n   uint32 \d+\n   string "(?P<icon>.*)"\n'
    r'   string "(?P<summary>(?s:.*?))"\n   string "(?P<body>(?s:.*?))"\n   array \['
)
_NEW_MESSAGE = re.compile(r"New Message from (?P<nickname>.*)")


class IptuxError(RuntimeError):
    """iptux did not start, or did not do what it was driven to do in time."""


def missing_iptux() -> str | None:
    """Why iptux cannot run in a virtual LAN here, or None when it can."""
    reason = missing_requirements()
    if reason is not None:
        return reason
    missing = [name for name in TOOLS if tool(name) is None]
    if missing:
        return f"iptux's lab needs {', '.join(missing)}; {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class LoggedPacket:
    """One datagram iptux logged as received from, or sent to, `address`."""

    address: str
    """The peer's IPv4 address (the sender's, or the destination's)."""
    port: int
    data: bytes
    """The datagram, byte for byte."""
    offset: int
    """Where in the log (in bytes) it was written: later packets have larger offsets."""

    def packet(self) -> ipmsg.Packet | None:
        """The datagram decoded, or None if it is not IPMsg."""
        try:
            return ipmsg.decode(self.data)
        except WireError:
            return None


@dataclass(frozen=True)
class Notification:
    """A desktop notification iptux raised: for a message, "New Message from NICK"."""

    summary: str
    body: str


def _unescape(text: str) -> bytes:
    """The bytes of iptux's `stringDumpAsCString`: \\xNN, \\t, \\n, \\r, \\", \\\\."""

    def replace(match: re.Match[bytes]) -> bytes:
        escape = match.group(1)
        if escape.startswith(b"x") and len(escape) == 3:
            return bytes([int(escape[1:], 16)])
        return _SIMPLE_ESCAPES.get(escape, escape)

    return _ESCAPE.sub(replace, text.encode("latin-1"))


def _undump(dump: str) -> bytes:
    """The bytes of a hex dump: "00000000  31 5f ... |1_...|" lines, then the length."""
    data = bytearray()
    for line in dump.splitlines():
        if "|" in line:
            data += bytes.fromhex("".join(line[8 : line.index("|")].split()))
    return bytes(data)


def iptux_config(
    nickname: str, group: str, encoding: str, candidate_encodings: str
) -> dict[str, Any]:
    """What iptux reads from ~/.iptux/config.json; without it, it uses the login name."""
    return {
        "version": 1,
        "nick_name": nickname,
        "belong_group": group,
        "preference_encode": encoding,
        "candidacy_encode": candidate_encodings,
        "use_enter_key": True,  # Return sends; the default is Ctrl+Return
        "open_chat": False,  # no window pops up on its own when a message comes
    }


class Iptux:
    """iptux on `host` of `lan`, with its own X server, D-Bus session and HOME.

    A context manager: entering starts it and waits until it listens and shows its main
    window; leaving ends it (`close`). `directory` receives the HOME, the config, the log
    (`iptux.log`), the notifications (`notifications.log`) and Xvfb's output.
    """

    def __init__(
        self,
        lan: VirtualLan,
        host: Host,
        directory: Path,
        *,
        nickname: str = "tux",
        group: str = "lab",
        hostname: str = "tuxhost",
        encoding: str = "utf-8",
        candidate_encodings: str = "gb18030,utf-16",
    ) -> None:
        self.lan = lan
        self.host = host
        self.directory = directory
        self.nickname = nickname
        self.group = group
        self.hostname = hostname
        self.encoding = encoding
        self.candidate_encodings = candidate_encodings
        self.home = directory / "home"
        self.log_path = directory / "iptux.log"
        self.notifications_path = directory / "notifications.log"
        self.display: str | None = None
        self._xvfb: subprocess.Popen[Any] | None = None
        self._iptux: subprocess.Popen[Any] | None = None

    @property
    def address(self) -> str:
        return self.host.address

    # -- starting and stopping ------------------------------------------------------------

    def __enter__(self) -> Iptux:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, timeout: float = 20.0) -> None:
        """Start Xvfb, then iptux; wait until it is ready. Raises IptuxError on failure,
        after ending whatever it started."""
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.home / ".iptux" / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        settings = iptux_config(self.nickname, self.group, self.encoding, self.candidate_encodings)
        config.write_text(json.dumps(settings, indent=2))
        self.display = self._start_xvfb(deadline - time.monotonic())
        self.notifications_path.write_bytes(b"")
        with self.log_path.open("wb") as log:
            self._iptux = self.lan.run(
                self.host,
                [
                    *("unshare", "--uts", "--pid", "--kill-child", "sh", "-c", _LAUNCHER),
                    "iptux-lab",
                    *(self.hostname, str(self.notifications_path)),
                ],
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: the launcher's whole tree
            )
        self.wait_ready(deadline - time.monotonic())

    def _environment(self) -> dict[str, str]:
        assert self.display is not None
        return {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.directory / "config"),
            "XDG_CACHE_HOME": str(self.directory / "cache"),
            "XDG_DATA_HOME": str(self.directory / "data"),
            "XDG_STATE_HOME": str(self.directory / "state"),
            "XDG_RUNTIME_DIR": str(self.directory / "runtime"),
            "DISPLAY": self.display,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",  # English window titles and notifications
            "NO_AT_BRIDGE": "1",  # no accessibility bus: one D-Bus daemon fewer
            "GDK_BACKEND": "x11",
        }

    def _start_xvfb(self, timeout: float) -> str:
        """Start Xvfb on a display it picks itself; that display, e.g. ":3"."""
        (self.directory / "runtime").mkdir(mode=0o700, exist_ok=True)
        read_end, write_end = os.pipe()
        try:
            with (self.directory / "xvfb.log").open("wb") as output:
                self._xvfb = self.lan.run(
                    self.host,
                    [
                        *("Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp"),
                        *("-screen", "0", "1024x768x24"),
                    ],
                    pass_fds=(write_end,),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            os.close(write_end)
            write_end = -1
            number = _read_line(read_end, timeout)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if not number.isdigit():
            raise IptuxError(f"Xvfb did not say its display: {self._tail('xvfb.log')}")
        return f":{number}"

    def wait_ready(self, timeout: float) -> None:
        """Wait until iptux listens on 0.0.0.0:2425 and its main window is up."""
        deadline = time.monotonic() + timeout
        self.wait_for_log(READY_LINE, timeout)
        self._wait_for_window(MAIN_WINDOW, deadline - time.monotonic())
        # The monitor prints NameLost once it has become a monitor: from then on, no
        # notification escapes it.
        self._wait(
            lambda: "member=NameLost" in self._read(self.notifications_path),
            deadline - time.monotonic(),
            "dbus-monitor to start",
        )

    def running(self) -> bool:
        return self._iptux is not None and self._iptux.poll() is None

    def quit(self, timeout: float = 10.0) -> int:
        """Quit as a user would (Ctrl+Q in the main window): iptux sends BR_EXIT to each
        pal it knows (unicast, not broadcast). Returns the exit status."""
        assert self._iptux is not None, "iptux was not started"
        window = self._wait_for_window(MAIN_WINDOW, timeout)
        self._xdotool("windowfocus", "--sync", window)
        self._xdotool("key", "--clearmodifiers", "ctrl+q")
        try:
            return self._iptux.wait(timeout)
        except subprocess.TimeoutExpired as error:
            raise IptuxError(f"iptux did not quit within {timeout} s") from error

    def close(self) -> None:
        """End iptux with its D-Bus session, then Xvfb. Idempotent."""
        for process in (self._iptux, self._xvfb):
            if process is not None:
                _end_group(process)
        self._iptux = self._xvfb = None

    # -- what iptux logged ----------------------------------------------------------------

    def log_text(self) -> str:
        """Everything iptux (and its D-Bus session) wrote so far; bad UTF-8 replaced."""
        return self._log().decode("utf-8", errors="replace")

    def log_size(self) -> int:
        """The log's length now, in bytes: an offset for `wait_for_log(start=...)`."""
        return len(self._log())

    def wait_for_log(self, pattern: str, timeout: float, start: int = 0) -> str:
        """The first log line from byte `start` on that matches regex `pattern`.
        Raises IptuxError, with the log's tail, after `timeout` seconds."""
        compiled = re.compile(pattern)
        found: list[str] = []

        def match() -> bool:
            text = self._log()[start:].decode("utf-8", errors="replace")
            for line in text.splitlines():
                if compiled.search(line):
                    found.append(line)
                    return True
            return False

        self._wait(match, timeout, f"a log line matching {pattern!r}")
        return found[0]

    def received_packets(self) -> list[LoggedPacket]:
        """Every datagram iptux logged as received, in order (its own included)."""
        return [
            LoggedPacket(m["address"], int(m["port"]), _unescape(m["data"]), m.start())
            for m in _RECEIVED.finditer(self._log().decode("latin-1"))
        ]

    def sent_packets(self) -> list[LoggedPacket]:
        """Every datagram iptux logged as sent, in order, to whatever address."""
        return [
            LoggedPacket(m["address"], int(m["port"]), _undump(m["dump"]), m.start())
            for m in _SENT.finditer(self._log().decode("latin-1"))
        ]

    def knows(self, address: str) -> bool:
        """Whether iptux has heard an entry packet from `address`, so lists it as a pal."""
        entries = {ipmsg.BR_ENTRY, ipmsg.ANSENTRY, ipmsg.BR_ABSENCE}
        return any(
            packet.address == address
            and (decoded := packet.packet()) is not None
            and decoded.mode in entries
            for packet in self.received_packets()
        )

    def notifications(self) -> list[Notification]:
        """The notifications iptux raised, in order."""
        text = self._read(self.notifications_path)
        return [Notification(m["summary"], m["body"]) for m in _NOTIFY.finditer(text)]

    def received_texts(self, nickname: str | None = None) -> list[str]:
        """The texts of the messages iptux received (from pals called `nickname`), as it
        decoded them: the bodies of its "New Message from NICK" notifications."""
        texts = []
        for notification in self.notifications():
            match = _NEW_MESSAGE.fullmatch(notification.summary)
            if match and nickname in (None, match["nickname"]):
                texts.append(notification.body)
        return texts

    def wait_for_text(
        self, text: str, timeout: float, nickname: str | None = None, after: int = 0
    ) -> None:
        """Wait until iptux has shown a received message reading exactly `text`, among
        those after the first `after` (`len(received_texts())` before sending)."""
        self._wait(
            lambda: text in self.received_texts(nickname)[after:],
            timeout,
            f"message {text!r} (iptux shows {self.received_texts()[after:]!r})",
        )

    # -- driving its windows --------------------------------------------------------------

    def send_to_pal(self, pal_address: str, text: str, timeout: float = 15.0) -> LoggedPacket:
        """Type `text` in the chat window with the pal at `pal_address` and press Return;
        returns the first SENDMSG iptux logged sending there afterwards.

        The pal must be known (it sent an entry packet). The chat window is opened from
        the main window, as a user would with the keyboard: Ctrl+F (find a pal), the
        address, Up (into the list of matches), Return. `text` is one line: a newline
        would press Return (send) half way.
        """
        if "\n" in text or "\r" in text:
            raise ValueError("iptux's chat window sends on Return: text must be one line")
        deadline = time.monotonic() + timeout
        self._wait(lambda: self.knows(pal_address), timeout, f"pal at {pal_address}")
        window = self._open_chat(pal_address, deadline - time.monotonic())
        start = self.log_size()
        self._xdotool("windowfocus", "--sync", window)
        # A character outside the keymap is typed by remapping a spare key; typed 5 ms
        # apart, two such characters in a row can lose the first (seen: "你好" -> "你").
        delay = "5" if text.isascii() else "40"
        self._xdotool("type", "--clearmodifiers", "--delay", delay, text)
        self._xdotool("key", "--clearmodifiers", "Return")
        found: list[LoggedPacket] = []

        def sent() -> bool:
            for packet in self.sent_packets():
                decoded = packet.packet()
                if (
                    packet.offset >= start
                    and packet.address == pal_address
                    and decoded is not None
                    and decoded.mode == ipmsg.SENDMSG
                ):
                    found.append(packet)
                    return True
            return False

        self._wait(sent, deadline - time.monotonic(), f"a SENDMSG to {pal_address}")
        return found[0]

    def chat_window(self, pal_address: str) -> str | None:
        """The id of the open chat window with `pal_address`, if any."""
        windows = self._windows(_chat_title(pal_address))
        return windows[0] if windows else None

    def _open_chat(self, pal_address: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        window = self.chat_window(pal_address)
        if window is not None:
            return window
        main = self._wait_for_window(MAIN_WINDOW, timeout)
        self._xdotool("windowfocus", "--sync", main)
        # Ctrl+F shows the search entry of the pal list and focuses it; Escape empties
        # it (it keeps the last search); Up moves to the list of matches, whose first
        # row Return activates: that opens the chat window.
        self._xdotool("key", "--clearmodifiers", "ctrl+f")
        self._xdotool("key", "--clearmodifiers", "Escape")
        self._xdotool("type", "--clearmodifiers", "--delay", "5", pal_address)
        self._xdotool("key", "--clearmodifiers", "Up", "Return")
        return self._wait_for_window(_chat_title(pal_address), deadline - time.monotonic())

    def _windows(self, title_pattern: str) -> list[str]:
        """Visible windows whose title matches the regex (xdotool's matching)."""
        result = self._xdotool("search", "--onlyvisible", "--name", title_pattern, check=False)
        return result.stdout.split()

    def _wait_for_window(self, title_pattern: str, timeout: float) -> str:
        found: list[str] = []

        def shown() -> bool:
            found.extend(self._windows(title_pattern))
            return bool(found)

        self._wait(shown, timeout, f"a window titled {title_pattern!r}")
        return found[0]

    def _xdotool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run xdotool inside the host's namespace, on iptux's display."""
        assert self.display is not None, "iptux was not started"
        command = [tool("ip") or "ip", "netns", "exec", self.host.netns, "xdotool", *args]
        environment = {**os.environ, **self._environment()}
        try:
            result = subprocess.run(
                command,
                env=environment,
                capture_output=True,
                text=True,
                timeout=XDOTOOL_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as error:
            raise IptuxError(f"xdotool {' '.join(args)} hung") from error
        # xdotool search exits 1 when nothing matches; that is an answer, not a failure.
        if check and result.returncode != 0:
            raise IptuxError(f"xdotool {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    # -- helpers --------------------------------------------------------------------------

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return
            if self._iptux is not None and self._iptux.poll() is not None:
                raise IptuxError(
                    f"iptux exited ({self._iptux.returncode}) while waiting for {what}:\n"
                    + self._tail("iptux.log")
                )
            if time.monotonic() >= deadline:
                raise IptuxError(
                    f"no {what} within {timeout:.1f} s; iptux's log ends:\n"
                    + self._tail("iptux.log")
                )
            time.sleep(POLL)

    def _log(self) -> bytes:
        # Offsets are in bytes: iptux escapes what is not ASCII, but GLib's warnings
        # may not, and a character half written must not shift them.
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self._read(self.directory / name).splitlines()[-lines:])


# Run by `unshare --uts --pid --kill-child sh -c`, $1 the host name and $2 the file for
# the notifications: iptux in a D-Bus session of its own, with a monitor recording what
# it asks of the (absent) notification daemon. dbus-run-session ends the bus when iptux exits.
_LAUNCHER = """
hostname "$1" || exit 1
exec dbus-run-session -- sh -c '
dbus-monitor --session "type=method_call,interface=org.freedesktop.Notifications" >"$1" 2>&1 &
exec iptux -l DEBUG
' iptux-session "$2"
"""


def _chat_title(address: str) -> str:
    """iptux titles a chat window "Talk with NICK(HOST) IP:ADDRESS"."""
    return f"IP:{re.escape(address)}$"


def _read_line(descriptor: int, timeout: float) -> str:
    """A line from a pipe, without the newline; what came if it closes or times out."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([descriptor], [], [], left)
        if not readable:
            continue
        chunk = os.read(descriptor, 64)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _end_group(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """End the process group `process` leads: SIGTERM, then SIGKILL; reap the leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        if not _group_alive(process.pid):
            return
    # Still there after SIGKILL (uninterruptible sleep): the LAN's teardown retries.


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
