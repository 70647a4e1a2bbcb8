"""Two real `udpchat` terminal UIs in tmux, typed into with send-keys, read with capture-pane.

Each test runs its own tmux server (`tmux -L <unique>`), with fixed 100x30 windows, and
kills it at the end. Waiting means polling capture-pane until a deadline: tmux is an
external program that cannot tell us when it has drawn.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from udpchat.runtimes import MODELS, create_runtime

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 100, 30
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None,
    reason="tmux is not installed (scripts/install-test-tools installs it when run as root)",
)


class Tmux:
    """A private tmux server: one session per chat, panes kept after their process ends."""

    def __init__(self, directory: Path) -> None:
        self.socket = f"udpchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.directory = directory
        # A session that outlives the chats keeps the server up, so that the server
        # options below are set before any chat starts (and a chat that fails at once
        # still leaves its pane to read).
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "keep", "sleep 3600")
        self.run("set-option", "-g", "remain-on-exit", "on")

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout

    def start(self, name: str, *args: str) -> None:
        """Run `udpchat ARGS` in a new session called `name`.

        The exit status goes to a file: tmux's own #{pane_dead_status} is sometimes never
        set when other processes (the process model's children) share the terminal.
        """
        status = self.directory / f"{name}.status"
        status.unlink(missing_ok=True)
        state = f"XDG_STATE_HOME={self.directory / 'state'}"
        # Each chat is a person with a history of their own, never the user's: the tmux
        # server does not pass on the test's environment.
        data = f"XDG_DATA_HOME={self.directory / ('data-' + name)}"
        # No discovery: these chats name their peers, and none may announce on the LAN.
        argv = [sys.executable, "-m", "udpchat", "--no-discovery", *args]
        chat = shlex.join(["env", "TERM=xterm-256color", state, data, *argv])
        command = f"{chat}; echo $? > {shlex.quote(str(status))}"
        self.run(
            "new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT),
            "-c", str(ROOT), command,
        )  # fmt: skip

    def type(self, name: str, text: str) -> None:
        """Type `text` literally, then Enter."""
        self.run("send-keys", "-t", name, "-l", text)
        self.run("send-keys", "-t", name, "Enter")

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-t", name)

    def wait(self, name: str, condition: Callable[[str], bool], what: str) -> str:
        """The screen once `condition(screen)` holds; fails the test after TIMEOUT s."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            screen = self.screen(name)
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"{name}'s screen never showed {what}:\n{screen}")
            time.sleep(0.05)

    def shows(self, name: str, *patterns: str) -> str:
        """The screen once every regular expression matches somewhere on it."""
        return self.wait(
            name,
            lambda screen: all(re.search(p, screen, re.MULTILINE) for p in patterns),
            " and ".join(map(repr, patterns)),
        )

    def ended(self, name: str) -> int:
        """The exit status of the chat in session `name`, once it has ended."""
        status = self.directory / f"{name}.status"
        deadline = time.monotonic() + TIMEOUT
        while not (status.exists() and status.read_text().endswith("\n")):
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not end:\n{self.screen(name)}")
            time.sleep(0.05)
        return int(status.read_text())

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        # The server leaves its socket file behind; -L puts it in tmux's own directory.
        sockets = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (sockets / self.socket).unlink(missing_ok=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        server.kill()


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (another program may take them before we do)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_chat(tmux: Tmux, name: str, *args: str) -> bool:
    """Start a chat UI; False when its port was taken in the meantime (the caller retries)."""
    tmux.start(name, "--bind", "127.0.0.1", "--name", name, *args)
    screen = tmux.wait(
        name,
        lambda screen: "listening on" in screen or "error:" in screen,
        "the chat starting",
    )
    if "already in use" in screen:
        tmux.run("kill-session", "-t", name)
        return False
    assert "listening on" in screen, screen
    return True


def start_pair(tmux: Tmux, model: str) -> tuple[int, int]:
    for _ in range(5):
        alice_port, bob_port = free_ports(2)
        common = ("--model", model)
        if not start_chat(
            tmux, "alice", "--port", str(alice_port), "--peer", f"127.0.0.1:{bob_port}", *common
        ):
            continue
        if start_chat(
            tmux, "bob", "--port", str(bob_port), "--peer", f"127.0.0.1:{alice_port}", *common
        ):
            return alice_port, bob_port
        tmux.run("kill-session", "-t", "alice")
    pytest.fail("could not find two free UDP ports")


@pytest.mark.parametrize("model", MODELS)
def test_two_terminal_uis_show_the_conversation_on_both_screens(tmux: Tmux, model: str) -> None:
    alice_port, bob_port = start_pair(tmux, model)
    tmux.shows("alice", rf"\* bob \(127\.0\.0\.1:{bob_port}\) joined")
    tmux.shows("bob", rf"\* alice \(127\.0\.0\.1:{alice_port}\) joined")

    tmux.type("alice", "hello bob, 你好 🙂")
    tmux.shows("bob", r"^\d\d:\d\d alice: hello bob, 你好 🙂$")
    tmux.type("bob", "hi alice — こんにちは")
    delivered = r"  ✓ \d+(\.\d)? m?s$"
    for name in ("alice", "bob"):
        screen = tmux.shows(
            name,
            r"^\d\d:\d\d alice: hello bob, 你好 🙂",
            r"^\d\d:\d\d bob: hi alice — こんにちは",
            rf"^\d\d:\d\d {name}: .*{delivered}",
        )
        status_bar = screen.splitlines()[-2]
        assert status_bar.startswith(f" #lobby (2 members) · {name} · 127.0.0.1:")
        assert f"· {model} ·" in status_bar
        assert status_bar.rstrip().endswith("· 0 pending")
        assert screen.splitlines()[-1].startswith(">")

    tmux.type("alice", "/quit")
    assert tmux.ended("alice") == 0
    tmux.shows("bob", rf"\* alice \(127\.0\.0\.1:{alice_port}\) left$")  # alice said BYE
    tmux.type("bob", "/quit")
    assert tmux.ended("bob") == 0


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one glyph, two columns, five code points
FLAG = "\U0001f1ef\U0001f1f5"


def test_emoji_sequences_line_up_wrap_whole_and_leave_no_stale_cells(tmux: Tmux) -> None:
    for _ in range(5):
        alice_port, bob_port = free_ports(2)
        if not start_chat(tmux, "alice", "--port", str(alice_port)):
            continue
        tmux.start(
            "bob", "--bind", "127.0.0.1", "--port", str(bob_port), "--name", FAMILY,
            "--peer", f"127.0.0.1:{alice_port}",
        )  # fmt: skip
        screen = tmux.wait("bob", lambda s: "listening on" in s or "error:" in s, "bob starting")
        if "already in use" not in screen:
            break
        tmux.run("kill-session", "-t", "alice")
    else:
        pytest.fail("could not find two free UDP ports")
    # The status bar changes from "no peers" to "alice" after the family nickname: a
    # renderer that counted the family as 6 columns would redraw it 4 columns off.
    screen = tmux.shows("bob", r"\* alice \(127\.0\.0\.1:\d+\) joined #lobby$")
    tmux.wait(
        "bob",
        lambda s: (
            s.splitlines()[-2].rstrip()
            == f" #lobby (2 members) · {FAMILY} · 127.0.0.1:{bob_port} · thread"
            " · alice · 0 pending"
        ),
        "the status bar naming alice",
    )
    # The delivery state replaces "…" in place, after the clusters.
    text = f"{FAMILY}{FLAG} family"
    tmux.type("bob", text)
    tmux.shows("bob", rf"^\d\d:\d\d {FAMILY}: {text}  ✓ \d+(\.\d)? m?s$")
    # 60 families are 120 columns: 45 fit in 100 after "HH:MM 👨‍👩‍👧: ", the rest wrap.
    tmux.type("bob", FAMILY * 60)
    screen = tmux.shows(
        "alice", rf"^\d\d:\d\d {FAMILY}: ({FAMILY}){{45}}$", rf"^ {{6}}({FAMILY}){{15}}$"
    )
    tmux.type("alice", "/quit")
    assert tmux.ended("alice") == 0
    tmux.type("bob", "/quit")
    assert tmux.ended("bob") == 0


def test_escape_sequences_from_a_peer_are_shown_escaped_and_do_not_reach_the_terminal(
    tmux: Tmux,
) -> None:
    hostile = "\x1b[2J\x1b]0;owned\x07"
    shown = r"\x1b[2J\x1b]0;owned\x07"  # what the screen must show, literally
    for _ in range(5):
        (port,) = free_ports(1)
        if start_chat(tmux, "alice", "--port", str(port)):
            break
    else:
        pytest.fail("could not find a free UDP port")
    mallory = create_runtime(
        "thread", "mallory", bind="127.0.0.1", port=0, peers=[("127.0.0.1", port)]
    )
    with mallory:
        tmux.shows("alice", r"\* mallory \(127\.0\.0\.1:\d+\) joined")
        mallory.send(hostile)
        assert mallory.wait_delivered(TIMEOUT)
        # The same bytes as a datagram that is not udpchat at all: its preview too.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(hostile.encode(), ("127.0.0.1", port))
        screen = tmux.shows(
            "alice",
            "^" + r"\d\d:\d\d mallory: " + re.escape(shown) + "$",
            r"dropped a datagram from 127\.0\.0\.1:\d+: not udpchat: " + re.escape(f'"{shown}"'),
        )
        assert "listening on" in screen  # the screen was not cleared
        assert tmux.run("display", "-p", "-t", "alice", "#{pane_title}").strip() != "owned"
    tmux.type("alice", "/quit")
    assert tmux.ended("alice") == 0


def test_plain_keeps_line_mode_in_a_terminal(tmux: Tmux) -> None:
    for _ in range(5):
        (port,) = free_ports(1)
        if start_chat(tmux, "alice", "--plain", "--port", str(port)):
            break
    else:
        pytest.fail("could not find a free UDP port")
    screen = tmux.shows("alice", r"^\d\d:\d\d:\d\d \* listening on .*; end of input quits$")
    assert "· 0 pending" not in screen  # no status bar: not the terminal UI
    tmux.run("send-keys", "-t", "alice", "C-d")
    assert tmux.ended("alice") == 0


@pytest.mark.parametrize("model", MODELS)
def test_a_message_nobody_acknowledges_fails_on_screen_after_the_give_up_time(
    tmux: Tmux, model: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound and never read: nothing is acknowledged
        peer = f"127.0.0.1:{silent.getsockname()[1]}"
        assert start_chat(
            tmux, "alice", "--port", "0", "--peer", peer, "--give-up", "1", "--model", model
        )
        tmux.type("alice", "anyone there?")
        tmux.shows("alice", r"alice: anyone there\?  ✗ failed after 1\.\d s — /resend 1")
        tmux.type("alice", "/quit")
        assert tmux.ended("alice") == 1  # a message failed and was not resent
