"""`udpchat history`: read the chat history from the command line.

It only reads: the file is opened read-only (`History.open(..., readonly=True)`), so a
missing history is reported rather than created, and a chat running meanwhile is not
disturbed. Messages are printed oldest first, one a line, in local time; peer text
goes through `escape`, as everywhere udpchat prints it. `--jsonl` prints (and
`--export` writes) one JSON object a message instead, in the shape of the chat's own
`--jsonl` lines.

Every error is one line on stderr, `udpchat history: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn, TextIO

from .store import History, HistoryError, NoHistoryYet, StoredMessage, default_path
from .ui.format import escape, stored_line, stored_record

PROG = "udpchat history"
EXIT_USAGE = 2


_SINCE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


class UsageError(Exception):
    """A mistake on the command line or a history that cannot be read; one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _since(text: str) -> int:
    """`--since` as ms since the epoch: a local date, or a local date and time."""
    for layout in _SINCE_FORMATS:
        try:
            moment = datetime.strptime(text, layout)
        except ValueError:
            continue
        return int(moment.timestamp() * 1000)  # naive: local time
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (local time)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Show the messages of the chat history, oldest first.",
        epilog=f"The history is kept in {default_path()} unless --history says otherwise.",
    )
    parser.add_argument("--history", metavar="PATH", help="the history file to read")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--room", metavar="ROOM", help="only the room ROOM ('lobby' or '#lobby')")
    which.add_argument(
        "--with",
        dest="nick",
        metavar="NICK",
        help="only the direct conversation with NICK, and NICK's messages in rooms",
    )
    parser.add_argument("--search", metavar="TEXT", help="only messages holding TEXT (any case)")
    parser.add_argument(
        "--since",
        metavar="DATE",
        type=_since,
        help="only messages sent from DATE on: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], local time",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--jsonl", action="store_true", help="one JSON object per message")
    output.add_argument(
        "--export", metavar="FILE", help="write the messages to FILE as JSON lines (a new file)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """`udpchat history ARGS` (`argv` without "history"): the exit status."""
    try:
        return _run(list(argv), sys.stdout)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0


def _run(argv: list[str], out: TextIO) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.history) if args.history is not None else default_path()
    try:
        history = History.open(path, readonly=True)
    except NoHistoryYet as error:
        if args.history is not None and not path.exists():
            raise UsageError(f"no history file at {path}") from None
        print(error, file=out)
        return 0
    except HistoryError as error:
        raise UsageError(str(error)) from None
    with history:
        room = args.room
        if room is not None and not room.startswith("#"):
            room = f"#{room}"
        nick = args.nick[1:] if args.nick is not None and args.nick.startswith("@") else args.nick
        messages = history.select(
            conversation=room, nick=nick, search=args.search, since_ms=args.since
        )
        try:
            if args.export is not None:
                count = _export(messages, Path(args.export))
                print(f"exported {count} messages to {escape(args.export)}", file=out)
                return 0
            for message in messages:
                print(stored_record(message) if args.jsonl else stored_line(message), file=out)
        except HistoryError as error:
            raise UsageError(str(error)) from None
    return 0


def _export(messages: Iterator[StoredMessage], path: Path) -> int:
    """Write `messages` to the new file `path` (0600: the history is private) as JSON
    lines; how many. An existing file is never overwritten."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; udpchat history will not overwrite it") from None
    except OSError as error:
        raise UsageError(f"cannot create {path}: {error.strerror}") from None
    count = 0
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            for message in messages:
                out.write(stored_record(message) + "\n")
                count += 1
    except (OSError, HistoryError) as error:
        path.unlink()  # ours, and incomplete
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise UsageError(f"cannot write {path}: {reason}") from None
    return count
