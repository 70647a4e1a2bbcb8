"""The `udpchat` command: parse arguments, open a runtime, run the terminal UI or line mode.

The terminal UI runs when standard input and output are both terminals and neither
`--plain` nor `--jsonl` is given; otherwise line mode.

Every error a user can cause (a bad flag value, a malformed or unknown peer, a port in
use) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from . import __version__
from .identity import instance_id
from .keyfile import KeyFileError, read_key_file
from .protocol import (
    DEFAULT_ROOM,
    MAX_NICK_BYTES,
    MAX_ROOMS,
    Config,
    InvalidRoom,
    validate_room,
)
from .protocol.ipmsg import PORT as IPMSG_PORT
from .protocol.plain import ENCODINGS
from .protocol.wire import DISCOVERY_PORT
from .runtimes import (
    DEFAULT_PORT,
    MODELS,
    AddressError,
    ChatRuntime,
    create_runtime,
    resolve_peer,
)
from .runtimes.sockets import PortInUse, family_of, parse_port
from .ui.format import escape
from .ui.lines import LineMode

if TYPE_CHECKING:
    from .archive import Journal
    from .ui.tui import TerminalUI

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line; the message is shown as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="udpchat",
        description="Chat over UDP with people on the same LAN (or terminals on one machine).",
        epilog=(
            "Chats on one LAN (or one machine) find each other: just run 'udpchat' in each. "
            "Where announcements cannot reach, name a peer: 'udpchat --peer 192.168.1.20'. "
            "'udpchat bench' compares the three concurrency models (udpchat bench --help)."
        ),
    )
    parser.add_argument(
        "--model",
        default="thread",
        metavar="MODEL",
        help=f"concurrency model: {', '.join(MODELS)} (default: thread)",
    )
    parser.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="local IP to listen on")
    parser.add_argument(
        "--port",
        metavar="N",
        help=(
            f"local UDP port (default: {DEFAULT_PORT}, or a free one if that is taken and"
            " discovery is on; 0 picks a free one)"
        ),
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help=f"someone to chat with (repeatable; default port {DEFAULT_PORT})",
    )
    parser.add_argument("--name", metavar="NICK", help="your nickname (default: your user name)")
    parser.add_argument(
        "--raw-peer",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help=(
            "a plain UDP tool to chat with (nc -u, socat, a network assistant): lines go to"
            " it as plain text; repeatable"
        ),
    )
    parser.add_argument(
        "--encoding",
        metavar="ENC",
        help=(
            f"how plain UDP peers are read and written: {', '.join(ENCODINGS)} (default:"
            " UTF-8, else GB18030, guessed per peer)"
        ),
    )
    parser.add_argument(
        "--line-end",
        default="lf",
        metavar="END",
        help="what ends each line sent to a plain UDP tool: lf (default), crlf or none",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help=(
            "the history file (default: $XDG_DATA_HOME/udpchat/history.sqlite3);"
            " 'udpchat history --help' reads it"
        ),
    )
    parser.add_argument(
        "--no-history", action="store_true", help="keep no history of this chat on disk"
    )
    parser.add_argument(
        "--ipmsg",
        action="store_true",
        help=(
            "also chat with IP Messenger, FeiQ and iptux users on the LAN (the chat then"
            " listens on UDP port 2425, theirs)"
        ),
    )
    parser.add_argument(
        "--room",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            f"the room to chat in (default: {DEFAULT_ROOM}); repeat to be in several, the"
            " first is where line mode's lines go"
        ),
    )
    parser.add_argument(
        "--no-discovery",
        action="store_true",
        help="do not announce this chat on the LAN nor look for others (use --peer)",
    )
    parser.add_argument(
        "--discovery-port",
        default=str(DISCOVERY_PORT),
        metavar="N",
        help=f"UDP port where chats announce themselves (default: {DISCOVERY_PORT})",
    )
    parser.add_argument(
        "--room-key-file",
        metavar="FILE",
        help=(
            "key the room you start in (the first --room) with the passphrase in FILE: only"
            " chats with the same passphrase see its lines and you in it"
        ),
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no terminal bell for a direct message in a conversation not on screen",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--plain",
        action="store_true",
        help="line mode: one line in is one message, one event out is one line",
    )
    mode.add_argument("--jsonl", action="store_true", help="line mode printing JSON objects")
    parser.add_argument(
        "--give-up",
        default="30",
        metavar="SECONDS",
        help="how long to retry a message before reporting it failed (default: 30)",
    )
    parser.add_argument(
        "--keep",
        default="7d",
        metavar="TIME",
        help=(
            "how long a direct message waits for a peer that is away, in the history's"
            " outbox, also across restarts: 90s, 30m, 12h, 7d (default: 7d); 0 keeps none"
        ),
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--key-file",
        metavar="FILE",
        help="shared-key mode: encrypt and authenticate with the passphrase in FILE",
    )
    key.add_argument(
        "--ask-key",
        action="store_true",
        help="shared-key mode: type the passphrase (not echoed); or set UDPCHAT_KEY",
    )
    parser.add_argument("--version", action="version", version=f"udpchat {__version__}")
    return parser


"""Largest key file read: a passphrase is a line, and reading a device or a huge file
whole would exhaust memory."""


def _shared_key(args: argparse.Namespace) -> tuple[bytes, str] | None:
    """The master key from --key-file, --ask-key or UDPCHAT_KEY, and where it came from
    (for the ready line); None without a key.

    The passphrase is never taken from the command line, where `ps` would show it. A flag
    beats the environment: with --key-file or --ask-key, UDPCHAT_KEY is ignored, and the
    ready line says so.
    """
    if args.key_file is not None:
        passphrase = _read_key_file(args.key_file)
        source = "--key-file"
    elif args.ask_key:
        if not _is_terminal(sys.stdin):
            raise UsageError("--ask-key needs a terminal; use --key-file or UDPCHAT_KEY")
        passphrase = getpass.getpass("shared key: ").encode("utf-8")
        source = "--ask-key"
    elif "UDPCHAT_KEY" in os.environ:
        passphrase = os.environb[b"UDPCHAT_KEY"]
        source = "UDPCHAT_KEY"
    else:
        return None
    if not passphrase.strip():
        raise UsageError(f"the shared key is empty (or only white space): {source}")
    if source != "UDPCHAT_KEY" and "UDPCHAT_KEY" in os.environ:
        source += ", UDPCHAT_KEY ignored"
    from .protocol.crypto import derive_master_key  # imported only in shared-key mode

    return derive_master_key(passphrase), source


def _read_key_file(path: str, flag: str = "--key-file") -> bytes:
    try:
        return read_key_file(path, flag)
    except KeyFileError as error:
        raise UsageError(str(error)) from None


def _nick(name: str | None) -> str:
    if name is None:
        try:
            name = getpass.getuser()
        except Exception:
            name = "anonymous"
        name = name.encode("utf-8")[:MAX_NICK_BYTES].decode("utf-8", "ignore") or "anonymous"
    name = name.strip()
    if not 1 <= len(name.encode("utf-8")) <= MAX_NICK_BYTES or escape(name) != name:
        raise UsageError(
            f"--name must be 1 to {MAX_NICK_BYTES} bytes of UTF-8 without control characters"
        )
    return name


def _rooms(names: Sequence[str]) -> tuple[str, ...]:
    rooms: list[str] = []
    for name in names or [DEFAULT_ROOM]:
        try:
            room = validate_room(name)
        except InvalidRoom as error:
            raise UsageError(f"--room {name!r}: {error}") from None
        if room not in rooms:
            rooms.append(room)
    if len(rooms) > MAX_ROOMS:
        raise UsageError(f"at most {MAX_ROOMS} --room options")
    return tuple(rooms)


LINE_ENDS = {"lf": "\n", "crlf": "\r\n", "none": ""}


def _line_end(name: str) -> str:
    if name not in LINE_ENDS:
        raise UsageError(f"--line-end must be lf, crlf or none, not {name!r}")
    return LINE_ENDS[name]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 86400:
        raise UsageError(f"--give-up needs a number of seconds from 0.1 to 86400, not {text!r}")
    return value


_KEEP_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_KEEP_MAX = 365 * 86400


def _keep(text: str) -> float:
    """--keep: a number with an optional unit (s, m, h, d), at most a year."""
    number, unit = text.strip().lower(), ""
    if number[-1:] in ("s", "m", "h", "d"):
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * _KEEP_UNITS[unit]
    except ValueError:
        value = -1.0
    if not 0 <= value <= _KEEP_MAX:
        raise UsageError(
            f"--keep needs a time from 0 to 365d, such as 90s, 30m, 12h or 7d, not {text!r}"
        )
    return value


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and chat; return the exit status. Raises UsageError or AddressError."""
    args = build_parser().parse_args(argv)
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; choose from {', '.join(MODELS)}")
    nick = _nick(args.name)
    rooms = _rooms(args.room)
    give_up = _seconds(args.give_up)
    keep = _keep(args.keep)
    port = parse_port(args.port if args.port is not None else str(DEFAULT_PORT))
    if args.ipmsg:
        if args.port is not None and port != IPMSG_PORT:
            raise UsageError(
                f"--ipmsg listens on UDP port {IPMSG_PORT}, where IP Messenger clients send"
                " and answer; leave out --port"
            )
        port = IPMSG_PORT
    text = args.discovery_port
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(
            f"--discovery-port must be a number from 1 to 65535 (the same for every chat),"
            f" not {text!r}"
        )
    discovery_port = None if args.no_discovery else int(text)
    family_of(args.bind)  # a bad --bind is reported before any peer
    peers = [resolve_peer(text, args.bind) for text in args.peer]
    raw_peers = [resolve_peer(text, args.bind) for text in args.raw_peer]
    if args.encoding is not None and args.encoding not in ENCODINGS:
        raise UsageError(f"--encoding must be one of {', '.join(ENCODINGS)}, not {args.encoding!r}")
    if args.history is not None and args.no_history:
        raise UsageError("--history and --no-history do not go together")
    in_terminal = _is_terminal(sys.stdin) and _is_terminal(sys.stdout)
    ui_class = _terminal_ui_class() if in_terminal and not (args.plain or args.jsonl) else None
    shared_key = _shared_key(args)
    key_source = shared_key[1] if shared_key else None
    room_keys: tuple[tuple[str, bytes], ...] = ()
    if args.room_key_file is not None:
        passphrase = _read_key_file(args.room_key_file, "--room-key-file")
        if not passphrase.strip():
            raise UsageError(f"--room-key-file {args.room_key_file} holds no passphrase")
        from .protocol.crypto import derive_master_key  # only for a keyed room

        room_keys = ((rooms[0], derive_master_key(passphrase)),)
    config = Config(
        give_up_after=give_up,
        key=shared_key[0] if shared_key else None,
        instance=instance_id(),
        rooms=rooms,
        room_keys=room_keys,
        raw_encoding=args.encoding,
        raw_line_end=_line_end(args.line_end),
        ipmsg=args.ipmsg and not shared_key,
        keep=keep,
    )
    if raw_peers and config.key is not None:
        raise UsageError("--raw-peer and a shared key do not mix: plain text is not authenticated")
    if args.ipmsg and config.key is not None:
        raise UsageError("--ipmsg and a shared key do not mix: IP Messenger is not authenticated")
    journal, history_notes = _open_history(args)
    ui: TerminalUI | LineMode
    if ui_class is not None:
        ui = ui_class(
            drain_timeout=give_up + 5,
            shared_key=key_source,
            quiet=args.quiet,
            ipmsg=args.ipmsg,
            journal=journal,
            notes=history_notes,
            instance=config.instance,
            keep=config.keep,
        )
    else:
        for note in history_notes:
            print(f"udpchat: {note}", file=sys.stderr)
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        ui = LineMode(
            jsonl=args.jsonl,
            drain_timeout=give_up + 5,
            stdin=stdin,
            shared_key=key_source,
            ipmsg=args.ipmsg,
            journal=journal,
            instance=config.instance,
            keep=config.keep,
        )

    def runtime_on(port: int) -> ChatRuntime:
        runtime = create_runtime(
            args.model,
            nick,
            bind=args.bind,
            port=port,
            peers=peers,
            config=config,
            on_event=ui.on_event,
            discovery_port=discovery_port,
            history=journal.history.path if journal and journal.history else None,
        )
        runtime.open()
        for addr in raw_peers:
            runtime.add_raw_peer(addr, args.encoding)
        return runtime

    try:
        runtime = runtime_on(port)
    except PortInUse:
        if args.ipmsg:
            raise AddressError(
                f"UDP port {IPMSG_PORT} is taken: another IP Messenger client (iptux, FeiQ)"
                " or a udpchat with --ipmsg runs on this machine, and only one can have it"
            ) from None
        # The default port is taken (another chat on this machine): with discovery the
        # others find us on any port, so take a free one rather than fail.
        if args.port is not None or discovery_port is None:
            raise
        runtime = runtime_on(0)
    try:
        return ui.run(runtime)
    finally:
        runtime.close()
        if journal is not None:
            journal.close()


def _open_history(args: argparse.Namespace) -> tuple[Journal | None, list[str]]:
    """The history this chat keeps, or None (`--no-history`, or it cannot be opened),
    and the lines to tell the user about it (why it is off; that another chat shares
    it). The chat runs without history rather than not at all."""
    if args.no_history:
        return None, []
    from .archive import Journal  # sqlite3 only for a chat that keeps history
    from .store import History, HistoryError, default_path

    path = Path(args.history) if args.history is not None else default_path()
    try:
        history = History.open(path)
    except HistoryError as error:
        return None, [f"history off for this run: {error}"]
    notes = []
    if history.shared:
        notes.append(f"another udpchat is using the history {path} too; both write to it")
    return Journal(history), notes


def _terminal_ui_class() -> type[TerminalUI]:
    """The terminal UI, imported only now: prompt_toolkit costs start-up time that line
    mode does not pay, and line mode works without it."""
    try:
        from .ui.tui import TerminalUI
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in ("prompt_toolkit", "wcwidth"):
            raise
        raise UsageError(
            f"the terminal UI needs {missing}, which is not installed: install it with"
            f" 'pip install {missing}' (./scripts/chat does), or use --plain"
        ) from None
    return TerminalUI


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # a closed stream
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: errors become one line and exit status 2."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["history"]:
        from .history_cli import main as history_main  # reading the history only

        return history_main(arguments[1:])
    if arguments[:1] == ["bench"]:
        # Imported only here, so that starting a chat does not load the benchmark.
        from .bench.cli import main as bench_main

        return bench_main(arguments[1:])
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    # SIGTERM ends a chat the way Ctrl-C does (BYE, no traceback), until the terminal UI
    # or line mode takes it over to quit as at the end of input.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(argv)
    except (UsageError, AddressError) as error:
        print(f"udpchat: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
