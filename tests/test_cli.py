"""The `udpchat` command as a user runs it: real processes, pipes, 127.0.0.1."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from udpchat.runtimes import DEFAULT_PORT, MODELS, create_runtime

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class Chat:
    """One `udpchat` process with its stdin as a pipe and its output read line by line."""

    def __init__(self, *args: str, discovery_port: int | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # No discovery unless asked for, on a private port: most of these chats name
        # their peers, and none may announce on this machine's LAN (bound to 127.0.0.1,
        # a chat's announcements stay on loopback).
        if discovery_port is None:
            discovery = ["--no-discovery"]
        else:
            discovery = ["--discovery-port", str(discovery_port)]
        # Two chats of a test are two people: each keeps no history unless the test
        # names a file (one default file would be shared, and the second would say so).
        if "--history" not in args and "--no-history" not in args:
            discovery.append("--no-history")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "udpchat", *discovery, "--bind", "127.0.0.1", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8"))

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for an output line matching `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        pytest.fail(f"no line matching {pattern!r} within {timeout} s; saw {self.seen!r}")

    def say(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def end_input(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self, timeout: float = 30.0) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        assert self.process.stderr is not None
        return code, self.process.stderr.read().decode("utf-8")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def chats() -> Iterator[list[Chat]]:
    started: list[Chat] = []
    yield started
    for chat in started:
        chat.kill()


def start(chats: list[Chat], *args: str) -> Chat:
    chat = Chat(*args)
    chats.append(chat)
    return chat


@pytest.mark.parametrize("model", MODELS)
def test_two_plain_chats_talk_both_ways_and_end_cleanly(chats: list[Chat], model: str) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice", "--model", model)
    port = alice.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1)
    bob = start(
        chats, "--plain", "--port", "0", "--name", "bob", "--model", model,
        "--peer", f"127.0.0.1:{port}",
    )  # fmt: skip
    bob.expect("listening on")
    alice.expect(r"\* bob \(127\.0\.0\.1:\d+\) joined")
    bob.expect(r"\* alice \(127\.0\.0\.1:\d+\) joined")
    alice.say("你好, bob! 🙂")
    bob.expect(r"^\d\d:\d\d:\d\d #lobby alice: 你好, bob! 🙂$")
    bob.say("こんにちは alice")
    alice.expect(r"^\d\d:\d\d:\d\d #lobby bob: こんにちは alice$")
    alice.end_input()
    assert alice.wait() == (0, "")
    bob.expect(r"\* alice \(127\.0\.0\.1:\d+\) left$")
    bob.end_input()
    assert bob.wait() == (0, "")


def test_jsonl_mode_prints_one_json_object_per_event(chats: list[Chat]) -> None:
    alice = start(chats, "--jsonl", "--port", "0", "--name", "alice")
    ready = json.loads(alice.expect(r'"event": "ready"').string)
    port = ready["address"].rsplit(":", 1)[1]
    bob = start(chats, "--jsonl", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}")
    alice.expect(r'"event": "peer_joined"')
    bob.say("line one\twith a tab")
    received = json.loads(alice.expect(r'"event": "message_received"').string)
    assert received["nick"] == "bob" and received["text"] == "line one\twith a tab"
    delivered = json.loads(bob.expect(r'"event": "message_delivered"').string)
    assert delivered["message_id"] == 1 and delivered["elapsed"] >= 0
    bob.end_input()
    assert bob.wait() == (0, "")


def test_the_ready_lines_say_where_others_reach_us(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(r"^\d\d:\d\d:\d\d \* listening on 127\.0\.0\.1:(\d+) as alice").group(1)
    alice.expect(rf"^\d\d:\d\d:\d\d \* only this machine can reach you: 127\.0\.0\.1:{port} is")
    bob = start(chats, "--jsonl", "--port", "0", "--name", "bob")
    ready = json.loads(bob.expect(r'"event": "ready"').string)
    assert ready["reachable_at"] == [] and ready["shared_key"] is None
    for chat in (alice, bob):
        chat.end_input()
        assert chat.wait() == (0, "")


def test_a_key_file_beats_udpchat_key_and_the_ready_line_says_so(
    chats: list[Chat], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "chat.key"
    key.write_text("from the file\n")
    monkeypatch.setenv("UDPCHAT_KEY", "from the environment")
    alice = start(chats, "--plain", "--port", "0", "--key-file", str(key))
    alice.expect(r"\(thread model, shared key from --key-file, UDPCHAT_KEY ignored\);")
    bob = start(chats, "--jsonl", "--port", "0")
    assert json.loads(bob.expect(r'"event": "ready"').string)["shared_key"] == "UDPCHAT_KEY"
    for chat in (alice, bob):
        chat.end_input()
        assert chat.wait() == (0, "")


def test_end_of_input_waits_until_every_message_is_delivered(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(chats, "--plain", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}")
    for i in range(200):
        bob.say(f"burst {i}")
    bob.end_input()  # at once: bob must not quit before alice has everything
    assert bob.wait() == (0, "")
    for i in range(200):
        alice.expect(f"bob: burst {i}$")


def test_undeliverable_message_is_reported_and_sets_exit_status_1(chats: list[Chat]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        alice = start(
            chats, "--plain", "--port", "0", "--give-up", "0.5", "--peer", f"127.0.0.1:{port}"
        )
        alice.say("hello?")
        alice.end_input()
        alice.expect(r'\* message 1 "hello\?" to 127\.0\.0\.1:\d+ failed after 0\.\d s')
        code, stderr = alice.wait()
    assert code == 1 and stderr == ""


@pytest.mark.parametrize("model", MODELS)
def test_a_send_the_kernel_refuses_is_shown_at_once(chats: list[Chat], model: str) -> None:
    # The broadcast address of 127/8: refused by the kernel (EACCES) before it leaves.
    alice = start(chats, "--plain", "--port", "0", "--model", model, "--peer", "127.255.255.255")
    alice.expect(
        r"^\d\d:\d\d:\d\d \* could not send to 127\.255\.255\.255:9000: Permission denied$"
    )
    alice.end_input()
    assert alice.wait() == (0, "")


def test_peer_text_cannot_reach_the_terminal_raw(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(chats, "--plain", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}")
    bob.say("\x1b[2J\x1b]0;owned\x07 \u202eevil")
    line = alice.expect("bob: ").string
    assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
    assert r"\x1b[2J\x1b]0;owned\x07 \u202eevil" in line


def test_ctrl_c_says_bye_and_exits_without_a_traceback(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(chats, "--plain", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}")
    alice.expect("bob .* joined")
    bob.process.send_signal(signal.SIGINT)
    code, stderr = bob.wait()
    assert code == 130 and "Traceback" not in stderr
    assert "waiting" not in stderr  # nothing was pending: nothing to wait for
    alice.expect(r"bob \(127\.0\.0\.1:\d+\) left$")


@pytest.mark.parametrize("model", MODELS)
def test_a_chat_whose_output_nobody_reads_still_quits_on_ctrl_c(model: str) -> None:
    """Line mode prints on the runtime's thread: a full stdout pipe stalls the chat, but
    must not keep it from quitting."""
    chat = subprocess.Popen(
        [sys.executable, "-m", "udpchat", "--no-discovery", "--plain", "--bind", "127.0.0.1",
         "--port", "0", "--model", model],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert chat.stdout is not None
        port = int(LISTENING.search(chat.stdout.readline().decode()).group(1))  # type: ignore[union-attr]
        with create_runtime("thread", "bob", bind="127.0.0.1", peers=[("127.0.0.1", port)]) as bob:
            for i in range(1000):  # about 230 KB of output: far more than a pipe holds
                bob.send(f"{i} " + "x" * 200)
            deadline = time.monotonic() + 15
            while _queued_bytes(chat.stdout) < 60_000:  # the pipe is full: the chat waits
                assert time.monotonic() < deadline, "the chat's output never filled the pipe"
                time.sleep(0.05)  # polling a pipe's fill: there is nothing to wait on
            chat.send_signal(signal.SIGINT)
            assert chat.wait(timeout=10) == 130
    finally:
        chat.kill()
        chat.communicate(timeout=10)


def _queued_bytes(stream: object) -> int:
    """Bytes written into a pipe and not read yet."""
    queued = fcntl.ioctl(stream.fileno(), termios.FIONREAD, b"\0\0\0\0")  # type: ignore[attr-defined]
    return int.from_bytes(queued, sys.byteorder)


@pytest.mark.parametrize("model", MODELS)
def test_sigterm_quits_as_the_end_of_input_does(chats: list[Chat], model: str) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice", "--model", model)
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(
        chats, "--plain", "--port", "0", "--name", "bob", "--model", model,
        "--peer", f"127.0.0.1:{port}",
    )  # fmt: skip
    bob.expect("alice .* joined")
    bob.say("before the signal")
    alice.expect("bob: before the signal$")
    bob.process.send_signal(signal.SIGTERM)
    assert bob.wait() == (0, "")
    alice.expect(r"bob \(127\.0\.0\.1:\d+\) left$")  # it said BYE


def test_sigterm_waits_for_delivery_and_exits_1_when_a_message_fails(
    chats: list[Chat],
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        alice = start(
            chats, "--jsonl", "--port", "0", "--give-up", "1", "--peer", f"127.0.0.1:{port}"
        )
        alice.expect(r'"event": "ready"')
        alice.say("anyone?")
        alice.expect(r'"event": "message_sent"')
        alice.process.send_signal(signal.SIGTERM)
        failed = json.loads(alice.expect(r'"event": "delivery_failed"').string)
        assert failed["message_id"] == 1 and failed["elapsed"] >= 1.0
        code, stderr = alice.wait()
    assert code == 1 and stderr == ""


def test_invalid_utf8_input_is_sent_with_replacement_and_a_warning(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(chats, "--plain", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}")
    assert bob.process.stdin is not None
    bob.process.stdin.write("你好".encode("gbk") + b" gbk\n")
    bob.end_input()
    alice.expect("bob: \ufffd+ gbk$")
    code, stderr = bob.wait()
    assert code == 0 and "not valid UTF-8" in stderr


def test_jsonl_warns_of_invalid_utf8_and_reports_a_refused_message(chats: list[Chat]) -> None:
    alice = start(chats, "--jsonl", "--port", "0", "--name", "alice")
    alice.expect(r'"event": "ready"')
    assert alice.process.stdin is not None
    alice.process.stdin.write("你好".encode("gbk") + b" gbk\n")
    alice.end_input()
    refused = json.loads(alice.expect(r'"event": "message_refused"').string)
    assert refused["text"].endswith(" gbk") and refused["reason"] == "nobody else is in #lobby"
    code, stderr = alice.wait()
    assert code == 1
    assert "not valid UTF-8" in stderr and "not sent: nobody else is in #lobby" in stderr


def run_error(*args: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "udpchat", "--no-discovery", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    return result.returncode, result.stderr.decode("utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "abc"], "port must be a number from 0 to 65535, not 'abc'"),
        (["--port", "70000"], "port must be a number from 0 to 65535, not '70000'"),
        (["--discovery-port", "abc"], "--discovery-port must be a number from 1 to 65535"),
        (["--discovery-port", "0"], "--discovery-port must be a number from 1 to 65535"),
        (["--discovery-port", "65536"], "(the same for every chat), not '65536'"),
        (["--peer", "127.0.0.1:99999"], "port must be a number from 0 to 65535"),
        (["--peer", "127.0.0.1:0"], "peer port must be 1 to 65535"),
        (["--peer", "[::1"], "malformed peer address '[::1'"),
        (["--peer", ":9000"], "malformed peer address ':9000'"),
        (["--peer", "no-such-host.invalid"], "unknown host 'no-such-host.invalid'"),
        (["--peer", "::1"], "::1 has no address of the socket's family; try --bind ::"),
        (["--peer", "1.2.3"], "malformed peer address '1.2.3'"),
        (["--peer", "127.1:9000"], "malformed peer address '127.1:9000'"),
        (["--peer", "0x7f.1"], "malformed peer address '0x7f.1'"),
        (["--peer", "255.255.255.255"], "255.255.255.255 is a broadcast address"),
        (["--peer", "224.0.0.1:9000"], "224.0.0.1 is a multicast address"),
        (["--bind", "::", "--peer", "[ff02::1]:9000"], "ff02::1 is a multicast address"),
        (["--bind", "not-an-ip"], "--bind needs a numeric IP address, not 'not-an-ip'"),
        (["--bind", "192.0.2.1"], "192.0.2.1 is not an address of this machine"),
        (["--model", "fibers"], "unknown model 'fibers'; choose from"),
        (["--give-up", "-1"], "--give-up needs a number of seconds"),
        (["--keep", "soon"], "--keep needs a time from 0 to 365d, such as 90s, 30m, 12h or 7d"),
        (["--keep=-1h"], "--keep needs a time from 0 to 365d"),
        (["--keep", "400d"], "not '400d'"),
        (["--keep", ""], "not ''"),
        (["--keep", "nand"], "not 'nand'"),
        (["--name", "x" * 33], "--name must be 1 to 32 bytes"),
        (["--name", "a\x1bb"], "--name must be 1 to 32 bytes of UTF-8 without control"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--plain", "--jsonl"], "argument --jsonl: not allowed with argument --plain"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_status_2(args: list[str], message: str) -> None:
    code, stderr = run_error("--port", "0", *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("udpchat: error: ")
    assert message in stderr


def test_a_dual_stack_chat_on_the_ipv6_wildcard_takes_an_ipv4_peer(chats: list[Chat]) -> None:
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(
        chats, "--plain", "--bind", "::", "--port", "0", "--name", "bob",
        "--peer", f"127.0.0.1:{port}",
    )  # fmt: skip
    bob.expect(r"listening on \[::\]:\d+")
    bob.say("from the dual stack")
    alice.expect(r"bob: from the dual stack$")
    bob.expect(rf"\* alice \(127\.0\.0\.1:{port}\) joined #lobby$")  # shown as IPv4, not ::ffff:
    bob.end_input()
    assert bob.wait() == (0, "")


def test_help_mentions_the_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "udpchat", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "'udpchat bench' compares" in result.stdout


def test_port_in_use_is_a_one_line_error_suggesting_another_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        code, stderr = run_error("--bind", "127.0.0.1", "--port", port)
    assert code == 2 and stderr.count("\n") == 1
    assert f"UDP port {port} on 127.0.0.1 is already in use; choose another with --port" in stderr


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("model", MODELS)
def test_chats_started_with_no_peer_find_each_other(chats: list[Chat], model: str) -> None:
    discovery = free_udp_port()
    alice = Chat("--plain", "--port", "0", "--name", "alice", "--model", model,
                 discovery_port=discovery)  # fmt: skip
    bob = Chat("--plain", "--port", "0", "--name", "bob", "--model", model,
               discovery_port=discovery)  # fmt: skip
    chats += [alice, bob]
    alice.expect(rf"\* finding others on this machine \(announcements on UDP port {discovery}\)")
    alice.expect(r"\* bob .*joined")
    bob.expect(r"\* alice .*joined")
    alice.say("found you")
    bob.expect(r"alice: found you")


def test_default_port_taken_by_another_chat_falls_back_to_a_free_one_with_discovery(
    chats: list[Chat],
) -> None:
    discovery = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        try:
            taken.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            pass  # taken already, by someone else: the same case
        chat = Chat("--plain", "--name", "second", discovery_port=discovery)
        chats.append(chat)
        port = int(chat.expect(LISTENING.pattern).group(1))
    assert port != DEFAULT_PORT


def test_ready_says_whether_discovery_is_on(chats: list[Chat]) -> None:
    quiet = start(chats, "--plain", "--port", "0")
    quiet.expect(r"\* discovery off: chatting with peers named by --peer or /peer add")
    discovery = free_udp_port()
    scripted = Chat("--jsonl", "--port", "0", discovery_port=discovery)
    chats.append(scripted)
    ready = json.loads(scripted.expect(r'"event": "ready"').string)
    assert ready["discovery_port"] == discovery


def test_default_port_taken_without_discovery_is_still_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        try:
            taken.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            pass
        code, stderr = run_error("--bind", "127.0.0.1")
    assert code == 2 and f"UDP port {DEFAULT_PORT} on 127.0.0.1 is already in use" in stderr


def test_shared_key_chat_works_and_a_wrong_key_is_reported(
    chats: list[Chat], tmp_path: Path
) -> None:
    key = tmp_path / "chat.key"
    key.write_text("correct horse battery staple\n")
    alice = start(chats, "--plain", "--port", "0", "--name", "alice", "--key-file", str(key))
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(
        chats, "--plain", "--port", "0", "--name", "bob", "--peer", f"127.0.0.1:{port}",
        "--key-file", str(key),
    )  # fmt: skip
    bob.expect(r"\(thread model, shared key from --key-file\); end of input quits$")
    bob.say("秘密 message")
    alice.expect("bob: 秘密 message$")
    bob.end_input()
    assert bob.wait() == (0, "")
    mallory = Chat("--plain", "--port", "0", "--name", "mallory", "--peer", f"127.0.0.1:{port}")
    chats.append(mallory)
    mallory.say("let me in")
    alice.expect(r"from 127\.0\.0\.1:\d+ failed authentication \(not encrypted\): the peer")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--key-file", "/nonexistent/key"], {}, "cannot read --key-file /nonexistent/key"),
        (["--key-file", "EMPTY"], {}, "the shared key is empty"),
        ([], {"UDPCHAT_KEY": ""}, "the shared key is empty"),
        (["--key-file", "BLANK"], {}, "the shared key is empty (or only white space)"),
        ([], {"UDPCHAT_KEY": " \t "}, "the shared key is empty (or only white space)"),
        (["--key-file", "/dev/zero"], {}, "--key-file /dev/zero is not a regular file"),
        (["--key-file", "FIFO"], {}, "is not a regular file"),
        (["--key-file", "HUGE"], {}, "is over 4096 bytes; it should hold one passphrase"),
        (["--key-file", "/"], {}, "--key-file / is not a regular file"),
        (["--ask-key"], {}, "--ask-key needs a terminal; use --key-file or UDPCHAT_KEY"),
        (["--ask-key", "--key-file", "x"], {}, "not allowed with argument"),
    ],
)
def test_bad_shared_key_options_are_one_line_errors(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    files = {name: tmp_path / f"{name.lower()}.key" for name in ("EMPTY", "BLANK", "FIFO", "HUGE")}
    files["EMPTY"].write_bytes(b"\n")
    files["BLANK"].write_bytes(b"  \t \n")
    os.mkfifo(files["FIFO"])  # no writer: reading it would wait for ever
    files["HUGE"].write_bytes(b"x" * 100_000)
    args = [str(files[arg]) if arg in files else arg for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "udpchat", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        env={**os.environ, **env},
    )
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 2 and stderr.count("\n") == 1, stderr
    assert message in stderr


HIDE_PROMPT_TOOLKIT = """
import sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "prompt_toolkit":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
from udpchat.cli import main
sys.exit(main())
"""


def test_the_terminal_ui_without_prompt_toolkit_is_a_one_line_error() -> None:
    leader, follower = pty.openpty()  # a terminal, so that udpchat picks the terminal UI
    try:
        result = subprocess.run(
            [sys.executable, "-c", HIDE_PROMPT_TOOLKIT, "--bind", "127.0.0.1", "--port", "0"],
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    finally:
        os.close(follower)
        os.close(leader)
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("udpchat: error: the terminal UI needs prompt_toolkit")
    assert "pip install prompt_toolkit" in stderr and "--plain" in stderr


def _read_bytes_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The next line `process` writes to stdout, as bytes, newline included."""
    assert process.stdout is not None
    descriptor, line = process.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout} s (so far {line!r})"
        if select.select([descriptor], [], [], left)[0]:
            byte = os.read(descriptor, 1)
            assert byte, f"stdout closed after {line!r}"
            line += byte
    return line


PLAIN_TOOLS = [
    pytest.param(
        ["socat", "-", "UDP:127.0.0.1:{port}"],
        marks=pytest.mark.skipif(
            shutil.which("socat") is None,
            reason="socat is not installed (scripts/install-test-tools installs it as root)",
        ),
        id="socat",
    ),
    pytest.param(
        ["nc", "-u", "127.0.0.1", "{port}"],
        marks=pytest.mark.skipif(
            shutil.which("nc") is None,
            reason="nc is not installed (scripts/install-test-tools installs it as root)",
        ),
        id="nc",
    ),
]


@pytest.mark.parametrize("command", PLAIN_TOOLS)
@pytest.mark.parametrize(
    ("text", "encoding", "shown_as"),
    [
        ("hello from a plain tool", "utf-8", "utf-8"),
        ("你好 from a Windows tool", "gbk", "gb18030"),
    ],
)
def test_a_plain_udp_tool_chats_both_ways_as_a_raw_peer(
    chats: list[Chat], command: list[str], text: str, encoding: str, shown_as: str
) -> None:
    """The classic exercise's peer: a plain UDP tool (socat, nc -u), in UTF-8 or GBK. Its
    lines show as a raw peer's, and a reply reaches it as plain text in its encoding."""
    alice = start(chats, "--plain", "--port", "0", "--name", "alice")
    port = alice.expect(LISTENING.pattern).group(1)
    tool = subprocess.Popen(
        [part.format(port=port) for part in command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert tool.stdin is not None and tool.stdout is not None
        tool.stdin.write((text + "\n").encode(encoding))
        tool.stdin.flush()
        line = alice.expect(rf"@(127\.0\.0\.1:\d+) \(raw, {shown_as}\): {text}$")
        alice.say(f"/msg {line.group(1)} 收到, {text}")
        reply = _read_bytes_line(tool, 10.0)
        assert reply == f"收到, {text}\n".encode(encoding)
    finally:
        tool.kill()
        tool.wait()
    alice.end_input()
    assert alice.wait() == (0, "")


def test_room_key_file_keys_the_room_a_chat_starts_in(chats: list[Chat], tmp_path: Path) -> None:
    key = tmp_path / "room.key"
    key.write_text("only the core team\n")
    alice = start(chats, "--plain", "--port", "0", "--name", "alice", "--room", "core",
                  "--room-key-file", str(key))  # fmt: skip
    port = alice.expect(LISTENING.pattern).group(1)
    bob = start(chats, "--plain", "--port", "0", "--name", "bob", "--room", "core",
                "--room-key-file", str(key), "--peer", f"127.0.0.1:{port}")  # fmt: skip
    carol = start(chats, "--plain", "--port", "0", "--name", "carol", "--room", "core",
                  "--peer", f"127.0.0.1:{port}")  # fmt: skip
    joins = {
        alice.expect(r"\* (bob|carol) \(127\.0\.0\.1:\d+\) joined(.*)$").groups() for _ in "bc"
    }
    assert joins == {("bob", " #core"), ("carol", "")}  # carol: in no room alice can see
    carol.expect(r"\* alice \(127\.0\.0\.1:\d+\) joined$")
    bob.say("for the core team")
    alice.expect(r"^\d\d:\d\d:\d\d #core bob: for the core team$")
    carol.say("me too?")
    carol.end_input()
    code, stderr = carol.wait()
    assert code == 1 and "not sent: nobody else is in #core" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--room-key-file", "/nonexistent/room.key"], "cannot read --room-key-file"),
        (["--room-key-file", "/"], "--room-key-file / is not a regular file"),
        (["--room", "a b"], "--room 'a b': a room name holds letters"),
        (["--room", "~0123"], "--room '~0123': a room name holds letters"),
        (["--encoding", "latin-1"], "--encoding must be one of utf-8, gbk, gb18030, cp932, hex"),
        (["--line-end", "cr"], "--line-end must be lf, crlf or none"),
        (["--raw-peer", "127.0.0.1:9", "--key-file", "/dev/null"], "is not a regular file"),
        (["--ipmsg", "--port", "9000"], "--ipmsg listens on UDP port 2425"),
    ],
)
def test_bad_room_options_are_one_line(args: list[str], message: str) -> None:
    code, stderr = run_error(*args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_ipmsg_and_a_shared_key_do_not_mix(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("a passphrase for the LAN\n")
    key.chmod(0o600)
    code, stderr = run_error("--ipmsg", "--bind", "127.0.0.1", "--key-file", str(key))
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "--ipmsg and a shared key do not mix" in stderr


def test_ipmsg_on_a_taken_port_2425_is_one_line_naming_the_likely_owner() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        try:
            holder.bind(("127.0.0.1", 2425))
        except OSError:
            pass  # taken already, by whatever: the chat must say so all the same
        code, stderr = run_error("--ipmsg", "--bind", "127.0.0.1")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "UDP port 2425 is taken: another IP Messenger client (iptux, FeiQ)" in stderr
