"""`udpchat history`, called as `history_cli.main([...])` (conftest points
$XDG_DATA_HOME, and so the default history, at a temporary folder)."""

from __future__ import annotations

import json
import stat
from datetime import datetime
from pathlib import Path

import pytest

from udpchat import history_cli
from udpchat.store import History, Received, default_path
from udpchat.ui import format as format_module

# Noon local time on two days, so that dates print the same in every time zone.
DAY_ONE = int(datetime(2026, 12, 4, 12, 0, 0).timestamp() * 1000)
DAY_TWO = int(datetime(2026, 12, 5, 12, 0, 0).timestamp() * 1000)


def write_history(path: Path) -> None:
    with History.open(path) as history:
        history.add_received(
            [
                Received(
                    "#lobby", "10.0.0.5:9000", "bob", "hello all", DAY_ONE, DAY_ONE, "udpchat"
                ),
                Received(
                    "@bob",
                    "10.0.0.5:9000",
                    "bob",
                    "psst, lunch?",
                    DAY_ONE + 19_000,
                    DAY_ONE + 19_000,
                    "udpchat",
                ),
                Received("@10.0.0.9:2425", "10.0.0.9:2425", "", "raw hi", DAY_TWO, DAY_TWO, "raw"),
            ]
        )
        row = history.add_sent("@bob", "me", "yes, lunch", DAY_TWO + 1_000)
        history.set_delivery(row, "10.0.0.5:9000", "delivered", DAY_TWO + 1_100)
        failed = history.add_sent("#lobby", "me", "anyone?", DAY_TWO + 2_000)
        history.set_delivery(failed, "10.0.0.5:9000", "failed", DAY_TWO + 9_000)
        history.add_sent("#lobby", "me", "still there?", DAY_TWO + 3_000)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    made = tmp_path / "history.sqlite3"
    write_history(made)
    return made


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = history_cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_messages_print_oldest_first_with_the_state_of_ours(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, err = run(capsys, "--history", str(path))
    assert (status, err) == (0, "")
    assert lines == [
        "2026-12-04 12:00:00 #lobby bob: hello all",
        "2026-12-04 12:00:19 @bob bob: psst, lunch?",
        "2026-12-05 12:00:00 @10.0.0.9:2425 10.0.0.9:2425: raw hi",
        "2026-12-05 12:00:01 @bob me: yes, lunch  ✓",
        "2026-12-05 12:00:02 #lobby me: anyone?  ✗ failed",
        "2026-12-05 12:00:03 #lobby me: still there?  …",
    ]


def test_filters_pick_room_nick_text_and_date(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def texts(*argv: str) -> list[str]:
        status, lines, _ = run(capsys, "--history", str(path), *argv)
        assert status == 0
        return [line.split(": ", 1)[1] for line in lines]

    assert texts("--room", "lobby") == ["hello all", "anyone?  ✗ failed", "still there?  …"]
    assert texts("--room", "#lobby", "--search", "ANY") == ["anyone?  ✗ failed"]
    assert texts("--with", "bob") == ["hello all", "psst, lunch?", "yes, lunch  ✓"]
    assert texts("--with", "@bob", "--since", "2026-12-05") == ["yes, lunch  ✓"]
    assert texts("--since", "2026-12-05T12:00:02") == ["anyone?  ✗ failed", "still there?  …"]
    assert texts("--since", "2026-12-04T12:00") == texts()
    assert texts("--search", "nothing like it") == []


def test_control_characters_from_peers_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.sqlite3"
    with History.open(path) as history:
        history.add_received(
            [
                Received(
                    "#lobby",
                    "10.0.0.5:9000",
                    "e\x1bvil",
                    "\x1b[2Jgone\u202e\nnext",
                    1,
                    2,
                    "udpchat",
                )
            ]
        )
    status, lines, _ = run(capsys, "--history", str(path))
    assert status == 0
    assert len(lines) == 1
    assert lines[0].endswith(" #lobby e\\x1bvil: \\x1b[2Jgone\\u202e\\x0anext")
    assert "\x1b" not in lines[0]


def test_jsonl_prints_every_field_and_iso_times(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run(capsys, "--history", str(path), "--jsonl", "--with", "bob")
    assert status == 0
    records = [json.loads(line) for line in lines]
    assert [record["text"] for record in records] == ["hello all", "psst, lunch?", "yes, lunch"]
    first = records[0]
    assert first["event"] == "stored_message"
    assert {key: first[key] for key in ("conversation", "direction", "nick", "state")} == {
        "conversation": "#lobby",
        "direction": "in",
        "nick": "bob",
        "state": "shown",
    }
    assert first["sent_at"].startswith("2026-12-04T12:00:00.000")
    assert first["sent_at_ms"] == DAY_ONE
    assert first["received_at_ms"] == DAY_ONE
    assert records[2]["received_at"] is None
    assert records[2]["state"] == "delivered"
    assert set(first) >= {"id", "peer", "dialect", "received_at", "time"}


def test_jsonl_keeps_non_ascii_text_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.sqlite3"
    with History.open(path) as history:
        history.add_received(
            [Received("#lobby", "10.0.0.5:9000", "李", "你好\u202e", 1, 2, "ipmsg")]
        )
    _, [line], _ = run(capsys, "--history", str(path), "--jsonl")
    assert '"text": "你好\\u202e"' in line
    assert json.loads(line)["text"] == "你好\u202e"


def test_export_writes_a_private_file_and_never_overwrites(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.jsonl"
    status, lines, _ = run(capsys, "--history", str(path), "--export", str(target))
    assert (status, lines) == (0, [f"exported 6 messages to {target}"])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    exported = target.read_text(encoding="utf-8").splitlines()
    _, printed, _ = run(capsys, "--history", str(path), "--jsonl")
    assert exported == printed

    status, lines, err = run(capsys, "--history", str(path), "--export", str(target))
    assert (status, lines) == (2, [])
    assert (
        err == f"udpchat history: error: {target} exists; udpchat history will not overwrite it\n"
    )
    assert target.read_text(encoding="utf-8").splitlines() == exported


@pytest.mark.parametrize(
    "since", ["yesterday", "2026-13-01", "2026-12-04 12:00", "2026-12-04T25:00", "04/12/2026"]
)
def test_a_bad_since_is_one_line_and_status_2(
    path: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    status, lines, err = run(capsys, "--history", str(path), "--since", since)
    assert (status, lines) == (2, [])
    assert err.startswith("udpchat history: error: argument --since: ")
    assert "YYYY-MM-DD" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--room", "lobby", "--with", "bob"],
        ["--jsonl", "--export", "x.jsonl"],
        ["--colour"],
        ["surplus"],
    ],
)
def test_usage_errors_are_one_line_and_status_2(
    path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, lines, err = run(capsys, "--history", str(path), *argv)
    assert (status, lines) == (2, [])
    assert err.startswith("udpchat history: error: ")
    assert err.count("\n") == 1


def test_no_history_yet_is_said_and_nothing_is_created(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, lines, err = run(capsys)
    assert (status, lines, err) == (0, [f"no history yet at {default_path()}"], "")
    assert not default_path().exists()
    assert not default_path().parent.exists()


def test_the_default_history_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    write_history(default_path())
    status, lines, _ = run(capsys, "--room", "lobby")
    assert status == 0
    assert len(lines) == 3


def test_a_missing_history_named_on_the_command_line_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.sqlite3"
    status, _, err = run(capsys, "--history", str(missing))
    assert (status, err) == (2, f"udpchat history: error: no history file at {missing}\n")
    assert not missing.exists()


def test_a_file_that_is_not_a_history_is_an_error_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("dear diary " * 500)
    status, _, err = run(capsys, "--history", str(bogus))
    assert status == 2
    assert err.startswith("udpchat history: error: ")
    assert "is not a SQLite database" in err
    assert err.count("\n") == 1
    assert bogus.read_text() == "dear diary " * 500


def test_reading_does_not_change_the_history(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    run(capsys, "--history", str(path), "--search", "lunch")
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, _ = run(capsys, "--help")
    assert status == 0
    assert lines[0].startswith("usage: udpchat history")


def test_iso_times_carry_milliseconds_and_zone() -> None:
    stamp = format_module._iso((DAY_ONE + 42) / 1000)
    assert stamp.startswith("2026-12-04T12:00:00.042")
    assert stamp[-5] in "+-"
