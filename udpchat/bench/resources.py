"""The resources scenario: real `udpchat` chats, started and left idle.

What a user starts is measured here, not a bench peer: `python -m udpchat --plain ...`
in line mode over pipes and, when the CLI selects the terminal UI for a terminal,
`python -m udpchat ...` under a pseudo-terminal. Each chat under test (A) has a
line-mode counterpart (B) so that it is idle as a real chat is: with a peer present.

- start to ready: from starting the interpreter to the "listening on" line (line mode)
  or the first screen that shows it (terminal UI);
- idle: CPU time and wake-ups of A's whole process tree over a few seconds with
  nothing to do, and its memory (RSS; PSS summed over the tree) at the end.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pty
import re
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import Any

from .measure import TreeSample, sample_tree

_READY = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
_ALTERNATE_SCREEN = "\x1b[?1049h"
"""What a full-screen prompt_toolkit application writes first; line mode never does."""
_CURSOR_QUERY = "\x1b[6n"
_EXIT_TIMEOUT = 5.0


class ChatProcess:
    """One `udpchat` chat in a child process, its output collected by a reader thread."""

    def __init__(
        self,
        model: str,
        *,
        name: str,
        peer_port: int | None = None,
        terminal: bool = False,
        ready_timeout: float = 20.0,
    ) -> None:
        self.model = model
        self.terminal = terminal
        command = [sys.executable, "-m", "udpchat", "--model", model, "--name", name]
        # No discovery: the pair names each other, and a chat the user runs on this
        # machine must neither hear the benchmark's chats nor be heard by them.
        command += ["--bind", "127.0.0.1", "--port", "0", "--no-discovery"]
        # A history of its own, as a user's chat has one (its start-up and memory
        # include it), in a folder that goes with the chat: never the user's history.
        self._folder = tempfile.TemporaryDirectory(prefix="udpchat-bench-")
        command += ["--history", os.path.join(self._folder.name, "history.sqlite3")]
        if peer_port is not None:
            command += ["--peer", f"127.0.0.1:{peer_port}"]
        if not terminal:
            command.append("--plain")
        self._output = ""
        self._changed = threading.Condition()
        self._master: int | None = None
        started = time.monotonic()
        if terminal:
            self._master, follower = pty.openpty()
            # A fixed 80x24 screen, so that every run draws the same amount.
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            self.process = subprocess.Popen(
                command,
                stdin=follower,
                stdout=follower,
                stderr=follower,
                start_new_session=True,
                env={**os.environ, "TERM": "xterm-256color"},
            )
            os.close(follower)
            reader = self._read_terminal
        else:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            reader = self._read_lines
        self._reader = threading.Thread(target=reader, name="bench-chat-reader", daemon=True)
        self._reader.start()
        match = self.wait_for(_READY, ready_timeout)
        if match is None:
            self.close()
            raise RuntimeError(f"{model} chat did not report ready within {ready_timeout} s")
        self.start_to_ready_s = time.monotonic() - started
        self.port = int(match.group(1))
        self.is_full_screen = _ALTERNATE_SCREEN in self._output

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first match of `pattern` in the output (escapes removed), or None."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = pattern.search(_ESCAPES.sub("", self._output))
                left = deadline - time.monotonic()
                if match is not None or left <= 0 or self.process.poll() is not None:
                    return match
                self._changed.wait(left)

    def sample(self) -> TreeSample:
        return sample_tree(self.process.pid)

    def close(self) -> None:
        """End the chat as a user does (end of input, or Ctrl-D); kill it if it hangs."""
        process = self.process
        try:
            if self._master is not None:
                os.write(self._master, b"\x04")
            elif process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_EXIT_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()
        self._reader.join(_EXIT_TIMEOUT)
        if self._master is not None:
            os.close(self._master)
            self._master = None
        self._folder.cleanup()

    def _append(self, text: str) -> None:
        with self._changed:
            self._output += text
            self._changed.notify_all()

    def _read_lines(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._append(line.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def _read_terminal(self) -> None:
        master = self._master
        assert master is not None
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return  # EIO: the child closed the terminal
            if not data:
                return
            text = data.decode("utf-8", "replace")
            if _CURSOR_QUERY in text:
                # Answer the cursor position request as a terminal would, so the UI
                # does not wait for an answer that never comes.
                try:
                    os.write(master, b"\x1b[1;1R")
                except OSError:
                    return
            self._append(text)


_JOINED = re.compile(r"joined")


def start_chat_pair(model: str, *, terminal: bool, round_index: int) -> list[ChatProcess]:
    """B (line mode), then A (line mode or terminal UI) naming B; both see the other."""
    b = ChatProcess(model, name=f"b{round_index}")
    try:
        a = ChatProcess(model, name=f"a{round_index}", peer_port=b.port, terminal=terminal)
    except BaseException:
        b.close()
        raise
    chats = [a, b]
    for chat in chats:
        if chat.wait_for(_JOINED, 10.0) is None:
            close_all(chats)
            raise RuntimeError(f"{model} chats did not see each other join within 10 s")
    return chats


def close_all(chats: list[ChatProcess]) -> None:
    for chat in chats:
        chat.close()


def idle_figures(before: TreeSample, after: TreeSample, seconds: float) -> dict[str, Any]:
    """Idle CPU, wake-ups and memory of one chat from two samples `seconds` apart."""
    return {
        "idle_cpu_percent": (after.cpu_ns - before.cpu_ns) / (seconds * 1e9) * 100,
        "idle_wakeups_per_s": (after.switches - before.switches) / seconds,
        "idle_rss_mib": after.rss_kib / 1024,
        "idle_pss_mib": after.pss_kib / 1024,
        "processes": after.processes,
        "threads": after.threads,
    }


def terminal_ui_available() -> bool:
    """Whether the terminal UI module exists (it is being built alongside the bench)."""
    return importlib.util.find_spec("udpchat.ui.tui") is not None
