"""History in use (README "History"; docs/architecture.md, "History: the order of
writes"): what each model stores, when, and what the chat and `udpchat history` show of
it. The store itself is tested in tests/test_store.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import OpenRuntime, wait_for
from test_cli import Chat

from udpchat.protocol import (
    Event,
    HistoryFailed,
    MessageDelivered,
    MessageReceived,
)
from udpchat.runtimes import create_runtime
from udpchat.store import History


def stored_texts(path: Path) -> list[str]:
    history = History.open(path, primary=False)
    try:
        return [m.text for m in history.select()]
    finally:
        history.close()


def test_a_message_is_in_the_receivers_history_before_the_sender_sees_it_delivered(
    model: str, open_runtime: OpenRuntime, tmp_path: Path
) -> None:
    """Inbox before acknowledgement: when the sender's `✓` comes, the row is there."""
    path = tmp_path / "bob.sqlite3"
    in_file_at_delivery: list[list[str]] = []
    delivered = threading.Event()

    def on_alice_event(event: Event) -> None:
        if isinstance(event, MessageDelivered):
            in_file_at_delivery.append(stored_texts(path))
            delivered.set()

    bob = create_runtime(model, "bob", bind="127.0.0.1", port=0, history=path)
    bob.open()
    try:
        alice = create_runtime(
            model, "alice", bind="127.0.0.1", port=0, peers=[bob.local_address],
            on_event=on_alice_event,
        )  # fmt: skip
        alice.open()
        try:
            alice.send("你好 bob, kept on disk", to=[bob.local_address])
            assert delivered.wait(10), "no delivery within 10 s"
        finally:
            alice.close()
    finally:
        bob.close()
    assert in_file_at_delivery[0] == ["你好 bob, kept on disk"]


def test_an_unwritable_history_is_reported_once_and_the_chat_goes_on(
    model: str, open_runtime: OpenRuntime, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the history's folder should be\n")
    events: list[Event] = []
    got = threading.Event()

    def on_bob_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, MessageReceived):
            got.set()

    bob = create_runtime(
        model, "bob", bind="127.0.0.1", port=0, history=blocker / "history.sqlite3",
        on_event=on_bob_event,
    )  # fmt: skip
    bob.open()
    try:
        alice = open_runtime(model, "alice", peers=(bob.local_address,))
        wait_for(alice, lambda e: e.__class__.__name__ == "PeerJoined")
        alice.send("one")
        alice.send("two")
        assert got.wait(10)
        assert alice.wait_delivered(10)
    finally:
        bob.close()
    failures = [e for e in events if isinstance(e, HistoryFailed)]
    assert len(failures) == 1
    assert [e.text for e in events if isinstance(e, MessageReceived)] == ["one", "two"]


def alice_and_bob(chats: list[Chat], alice_file: Path, bob_file: Path) -> tuple[Chat, Chat]:
    """Two chats in line mode with these history files, once alice has seen bob join."""
    alice = Chat("--plain", "--port", "0", "--name", "alice", "--history", str(alice_file))
    chats.append(alice)
    port = alice.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1)
    bob = Chat(
        "--plain", "--port", "0", "--name", "bob", "--history", str(bob_file),
        "--peer", f"127.0.0.1:{port}",
    )  # fmt: skip
    chats.append(bob)
    alice.expect(r"\* bob \(127\.0\.0\.1:\d+\) joined")
    return alice, bob


def test_the_chat_and_udpchat_history_show_the_same_lines(tmp_path: Path) -> None:
    chats: list[Chat] = []
    try:
        bob_file = tmp_path / "bob.sqlite3"
        alice, bob = alice_and_bob(chats, tmp_path / "alice.sqlite3", bob_file)
        bob.expect(r"\* alice \(127\.0\.0\.1:\d+\) joined")
        alice.say("lunch at noon? 你好")
        bob.expect(r"#lobby alice: lunch at noon\? 你好$")
        bob.say("/msg alice yes, noon")
        alice.expect(r"@bob: yes, noon$")
        bob.say("/search noon")
        bob.expect(r"\* 2 messages hold 'noon'")
        alice.end_input()
        assert alice.wait()[0] == 0
        bob.end_input()
        assert bob.wait()[0] == 0
    finally:
        for chat in chats:
            chat.kill()
    shown = subprocess.run(
        [sys.executable, "-m", "udpchat", "history", "--history", str(bob_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    lines = shown.stdout.splitlines()
    assert shown.returncode == 0, shown.stderr
    assert len(lines) == 2
    assert lines[0].endswith("#lobby alice: lunch at noon? 你好")
    assert " @alice bob: yes, noon" in lines[1] and lines[1].rstrip().endswith("✓")


def test_no_history_keeps_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    chat = Chat("--plain", "--port", "0", "--name", "alice", "--no-history")
    try:
        chat.expect("listening on")
        chat.end_input()
        assert chat.wait()[0] == 0
    finally:
        chat.kill()
    assert not (tmp_path / "data").exists()


def test_two_chats_sharing_one_history_file_say_so_and_both_write_to_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    chats: list[Chat] = []
    try:
        alice, bob = alice_and_bob(chats, path, path)
        alice.say("one file, two terminals")
        bob.expect(r"#lobby alice: one file, two terminals$")
        alice.end_input()
        assert alice.wait() == (0, "")
        bob.end_input()
        code, stderr = bob.wait()
    finally:
        for chat in chats:
            chat.kill()
    assert code == 0
    assert f"another udpchat is using the history {path} too" in stderr
    assert stored_texts(path) == ["one file, two terminals"] * 2  # alice's, and bob's copy


def test_a_corrupt_history_file_is_left_alone_and_the_chat_runs(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    garbage = bytes(range(256)) * 16
    path.write_bytes(garbage)
    chat = Chat("--plain", "--port", "0", "--name", "alice", "--history", str(path))
    try:
        chat.expect("listening on")
        chat.end_input()
        code, stderr = chat.wait()
    finally:
        chat.kill()
    assert code == 0
    (line,) = stderr.strip().splitlines()
    assert line.startswith("udpchat: history off for this run:")
    assert path.read_bytes() == garbage
