"""The terminal UI: one full-screen prompt_toolkit application over any `ChatRuntime`.

Top to bottom: the conversation (newest line at the bottom; PageUp and PageDown scroll
back), a one-line status bar, and the input line, which nothing that arrives can touch.
Own messages show their delivery state in place at the end of their line: "…" while
pending, "✓ 0.4 ms" once delivered (the slowest peer's round trip), "✗ failed after
30.0 s — /resend 7" when given up.

Rules:
- Text a peer controls (nicknames, messages, previews) passes through `escape` before it
  becomes a fragment, and only formatted text reaches prompt_toolkit, which owns the
  terminal: widths (CJK, emoji), colours (none under NO_COLOR), cursor movement.
- Events come from `runtime.get_event()` in one pump thread that blocks there and hands
  batches to the event loop with `call_soon_threadsafe`; nothing polls. `get_event`
  returns None once the runtime is closed and drained, which ends the pump.
- Quitting (/quit, Ctrl-D on an empty line, Ctrl-C, SIGINT, SIGTERM) is line mode's end
  of input: `wait_delivered` (bounded) in a helper thread while the screen stays live,
  then `close`, which says BYE. Asking again quits at once.
- Exit status: 0, or 1 when a message failed and was not resent. A message the runtime
  refuses (too long, no peers, full outbox) stays in the input line; nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Point
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.formatted_text.utils import (
    fragment_list_to_text,
    fragment_list_width,
    split_lines,
)
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import (
    BufferControl,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    UIContent,
    UIControl,
    VerticalAlign,
    Window,
)
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from ..protocol import (
    Address,
    DatagramRejected,
    DeliveryFailed,
    Event,
    LocalProtocolError,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
)
from ..runtimes import AddressError, ChatRuntime, resolve_peer
from .commands import (
    MODEL_DESCRIPTIONS,
    Command,
    CommandCompleter,
    help_lines,
    nick_problem,
    parse_input,
    peers_lines,
    stats_lines,
    unknown_command,
)
from .format import clock, describe, duration, escape, format_address

EXIT_OK = 0
EXIT_UNDELIVERED = 1
SCROLLBACK = 5000
"""Messages and system lines kept; older ones are dropped in chunks of a tenth."""
WRAP_INDENT = 6
"""A long line continues under its text, past the "HH:MM " column."""
_OWN_REMEMBERED = 10_000
"""Own messages whose state (and text, for /resend) is kept."""
_PALETTE = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)
"""Nickname colours: the 16-colour set minus black, white and greys, so every terminal
theme shows them."""
_STYLE = [
    ("time", "ansibrightblack"),
    ("system", "ansibrightblack"),
    ("warning", "ansiyellow"),
    ("error", "ansired bold"),
    ("own", "bold"),
    ("state.pending", "ansibrightblack"),
    ("state.delivered", "ansigreen"),
    ("state.failed", "ansired bold"),
    ("status", "reverse"),
    ("prompt", "bold"),
    *((f"nick.{index}", colour) for index, colour in enumerate(_PALETTE)),
]


def nick_style(nick: str) -> str:
    """The same colour for the same nickname, in every run and on every machine."""
    return f"class:nick.{zlib.crc32(nick.encode('utf-8', 'replace')) % len(_PALETTE)}"


_TOKEN = re.compile(r"\s+|\S+")


def wrap(row: StyleAndTextTuples, width: int) -> list[StyleAndTextTuples]:
    """Break one row into screen lines of at most `width` columns.

    Lines break between words when they can, and anywhere inside a word longer than a
    line (or a run of CJK, which has no spaces). Continuation lines start under the text,
    past the time. A delivery state ("✓ 1.2 ms") is never broken.
    """
    indent = WRAP_INDENT if width > 3 * WRAP_INDENT else 0
    lines: list[StyleAndTextTuples] = [[]]
    column = 0

    def new_line() -> None:
        nonlocal column
        lines.append([("", " " * indent)] if indent else [])
        column = indent

    for fragment in row:
        style, text = fragment[0], fragment[1]
        tokens = [text] if "class:state" in style else _TOKEN.findall(text)
        for token in tokens:
            size = get_cwidth(token)
            if column + size <= width:
                lines[-1].append((style, token))
                column += size
            elif token.isspace():
                new_line()  # the break replaces the spaces
            elif size <= width - indent and column > indent:
                new_line()
                lines[-1].append((style, token))
                column += size
            else:
                piece = ""
                for char in token:
                    char_size = get_cwidth(char)
                    if column + char_size > width and column > indent:
                        lines[-1].append((style, piece))
                        new_line()
                        piece = ""
                    piece += char
                    column += char_size
                lines[-1].append((style, piece))
    return lines


class _Entry:
    """One item of the conversation (a message or a system line): one row per line of
    text, wrapped into screen lines for the current width."""

    def __init__(self, fragments: StyleAndTextTuples, indent: int = 0) -> None:
        # A tab is the one control character `escape` lets through; prompt_toolkit would
        # draw it as "^I", so it becomes spaces here.
        fragments = [(fragment[0], fragment[1].replace("\t", "    ")) for fragment in fragments]
        self.rows = [list(line) for line in split_lines(fragments)]
        for row in self.rows[1:]:
            row.insert(0, ("", " " * indent))
        self._wrapped: tuple[int, list[StyleAndTextTuples]] = (0, [])

    def row(self, index: int) -> StyleAndTextTuples:
        return self.rows[index]

    def lines(self, width: int) -> list[StyleAndTextTuples]:
        """The screen lines of this entry at `width` columns (computed once per width)."""
        if self._wrapped[0] != width:
            rows = (self.row(index) for index in range(len(self.rows)))
            self._wrapped = (width, [line for row in rows for line in wrap(row, width)])
        return self._wrapped[1]

    def changed(self) -> None:
        self._wrapped = (0, [])


class _OwnMessage(_Entry):
    """A message we sent; its last row ends with its delivery state, kept current."""

    def __init__(
        self, message_id: int, text: str, fragments: StyleAndTextTuples, indent: int, peers: int
    ) -> None:
        super().__init__(fragments, indent)
        self.message_id = message_id
        self.text = text
        self.expected = max(1, peers)
        """Peers present when it was sent; the runtime does not say whom it went to."""
        self.delivered: dict[Address, float] = {}
        self.failed: dict[Address | None, float] = {}
        self.complete = False
        """Set when the runtime has nothing pending: no further delivery will come."""
        self.resent_as: int | None = None
        self._marker = self._render_marker()

    def row(self, index: int) -> StyleAndTextTuples:
        row = self.rows[index]
        return row + self._marker if index == len(self.rows) - 1 else row

    def changed(self) -> None:
        self._marker = self._render_marker()
        super().changed()

    @property
    def settled(self) -> bool:
        return bool(self.failed) or self.complete or len(self.delivered) >= self.expected

    def _render_marker(self) -> StyleAndTextTuples:
        delivered = len(self.delivered)
        if self.failed:
            after = f"failed after {max(self.failed.values()):.1f} s"
            if self.resent_as is not None:
                text = f"✗ {after}, resent as {self.resent_as}"
            else:
                text = f"✗ {after} — /resend {self.message_id}"
            if delivered:
                text = f"✓ {delivered} · {text}"
            return [("", "  "), ("class:state.failed", text)]
        if not delivered:
            return [("", "  "), ("class:state.pending", "…")]
        slowest = duration(max(self.delivered.values()))
        if not self.settled:
            return [("", "  "), ("class:state.pending", f"… ✓ {delivered} of {self.expected}")]
        text = f"✓ {slowest}" if delivered == 1 else f"✓ {delivered} peers · {slowest}"
        return [("", "  "), ("class:state.delivered", text)]


class _Conversation(UIControl):
    """The conversation pane: entries wrapped to the window, drawn bottom-up.

    It scrolls by itself rather than through the window: each frame holds the screen
    lines that fit above the bottom entry (the newest, or while scrolled back the
    `anchor` entry, so that arriving messages do not move what is being read), and only
    those are wrapped. Its height follows its content, so a short conversation sits just
    above the status bar.
    """

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.anchor: int | None = None
        self.unseen = 0
        """Entries added while scrolled back."""
        self._width, self._height = 80, 24
        """The size of the last frame, for paging between frames."""

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        if self.anchor is not None:
            self.unseen += 1
        excess = len(self.entries) - SCROLLBACK
        if excess >= SCROLLBACK // 10:
            del self.entries[:excess]
            if self.anchor is not None:
                self.anchor = max(0, self.anchor - excess)

    def follow(self) -> None:
        self.anchor = None
        self.unseen = 0

    def page_up(self) -> None:
        """Show the page above; the entry at the top stays in view, at the bottom."""
        bottom = self._bottom()
        top, _ = self._top_for(bottom)
        if top < bottom:
            self.anchor = top
        elif top > 0:  # one entry taller than the window
            self.anchor = top - 1

    def page_down(self) -> None:
        """Show the page below; the entry at the bottom stays in view, at the top."""
        if self.anchor is None:
            return
        bottom = self.anchor
        used = self._entry_height(bottom)
        while bottom + 1 < len(self.entries):
            height = self._entry_height(bottom + 1)
            if used + height > self._height and bottom > self.anchor:
                break
            bottom += 1
            used += height
        if bottom >= len(self.entries) - 1:
            self.follow()
        else:
            self.anchor = bottom

    def text(self) -> str:
        """The whole pane as plain text, unwrapped (for tests and debugging)."""
        return "\n".join(
            fragment_list_to_text(entry.row(index))
            for entry in self.entries
            for index in range(len(entry.rows))
        )

    def create_content(self, width: int, height: int | None) -> UIContent:
        self._width = max(1, width)
        if height is not None:
            self._height = max(1, height)
        lines: list[StyleAndTextTuples] = []
        if self.entries:
            bottom = self._bottom()
            top, skip = self._top_for(bottom)
            for entry in self.entries[top : bottom + 1]:
                lines += entry.lines(self._width)
            del lines[:skip]

        return UIContent(
            get_line=lines.__getitem__,
            line_count=len(lines),
            cursor_position=Point(x=0, y=max(len(lines) - 1, 0)),
            show_cursor=False,
        )

    def preferred_height(
        self,
        width: int,
        max_available_height: int,
        wrap_lines: bool,
        get_line_prefix: Callable[[int, int], object] | None,
    ) -> int | None:
        self._width = max(1, width)
        height = 0
        for number in range(len(self.entries) - 1, -1, -1):
            height += self._entry_height(number)
            if height >= max_available_height:
                return max_available_height
        return height

    def is_focusable(self) -> bool:
        return False

    def _bottom(self) -> int:
        last = len(self.entries) - 1
        return last if self.anchor is None else min(self.anchor, last)

    def _top_for(self, bottom: int) -> tuple[int, int]:
        """The first entry in view when `bottom` is the last, and how many of its lines
        fall off the top, at the last frame's size."""
        used = 0
        for number in range(bottom, -1, -1):
            used += self._entry_height(number)
            if used >= self._height:
                return number, used - self._height
        return 0, 0

    def _entry_height(self, number: int) -> int:
        return len(self.entries[number].lines(self._width))


class TerminalUI:
    """Runs one chat in the terminal over an open runtime; `run()` returns the exit status."""

    def __init__(self, runtime: ChatRuntime, *, drain_timeout: float = 35.0) -> None:
        self.runtime = runtime
        self.drain_timeout = drain_timeout
        self._nick = runtime.nick
        self._address = format_address(runtime.local_address)
        self._present: dict[Address, str] = {}
        self._own: OrderedDict[int, _OwnMessage] = OrderedDict()
        self._unsettled: dict[int, _OwnMessage] = {}
        self._unresolved: set[int] = set()
        """Failed messages not resent: they make the exit status 1."""
        self._pending = 0
        self._quitting = False
        self._gave_up: int | None = None
        self._inbox: list[Event] = []
        self._inbox_lock = threading.Lock()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: threading.Thread | None = None
        self.conversation = _Conversation()
        self._history: list[str] = []
        self._history_index = 0
        self._draft = ""
        """What was typed before Up started walking the history."""
        self.input = Buffer(
            multiline=False,
            completer=CommandCompleter(self._peer_choices, lambda: sorted(self._unresolved)),
            complete_while_typing=False,
            accept_handler=self._accept,
        )
        self.app: Application[None] = Application(
            layout=self._layout(),
            key_bindings=self._key_bindings(),
            style=Style(_STYLE),
            full_screen=True,
            mouse_support=False,
            enable_page_navigation_bindings=False,
            color_depth=ColorDepth.MONOCHROME if os.environ.get("NO_COLOR") else None,
        )
        self._system(
            f"listening on {self._address} as {escape(self._nick)} ({runtime.model} model)"
            " — /help lists commands, Ctrl-D quits"
        )

    # -- running ----------------------------------------------------------------

    def run(self) -> int:
        """Chat until the user quits; return the exit status (0, or 1 if a message failed)."""
        return asyncio.run(self.run_async())

    async def run_async(self, *, handle_signals: bool = True) -> int:
        """`run` on the running event loop. `handle_signals`: SIGINT and SIGTERM quit (only
        possible in the main thread)."""
        loop = asyncio.get_running_loop()
        with self._inbox_lock:
            self._loop = loop
        self._pump = threading.Thread(target=self._pump_events, name="udpchat-ui", daemon=True)
        self._pump.start()
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            # SIGWINCH reports resizes there; polling the size would wake an idle chat
            # twice a second.
            self.app.terminal_size_polling_interval = None
        restore_sigterm = self._catch_sigterm(loop) if handle_signals else None
        try:
            await self.app.run_async(handle_sigint=handle_signals and in_main_thread)
        finally:
            if restore_sigterm is not None:
                restore_sigterm()
            with self._inbox_lock:
                self._loop = None
            self.runtime.close()
            self._pump.join(timeout=2.0)
            self._take_events(refresh=False)  # a failure reported while closing counts too
        if self._gave_up:
            print(f"udpchat: gave up waiting for {self._gave_up} deliveries", file=sys.stderr)
        return EXIT_UNDELIVERED if self._unresolved else EXIT_OK

    def transcript(self) -> str:
        """The conversation pane as plain text."""
        return self.conversation.text()

    def status_text(self) -> str:
        return fragment_list_to_text(self._status())

    def request_quit(self) -> None:
        """Quit as line mode ends: wait for delivery (bounded), then BYE. Twice: at once."""
        if self._quitting:
            self._exit()
            return
        self._quitting = True
        pending = self.runtime.pending()
        if pending:
            self._system(f"waiting for {pending} deliveries… Ctrl-C again to quit now")
        threading.Thread(
            target=self._wait_for_delivery, name="udpchat-ui-quit", daemon=True
        ).start()

    def _wait_for_delivery(self) -> None:
        delivered = self.runtime.wait_delivered(self.drain_timeout)
        self._call_in_loop(self._done_waiting, delivered)

    def _done_waiting(self, delivered: bool) -> None:
        if not delivered:
            self._gave_up = self.runtime.pending()
        self._exit()

    def _exit(self) -> None:
        if self.app.is_running and not self.app.is_done:
            self.app.exit()

    def _catch_sigterm(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None] | None:
        """SIGTERM quits as Ctrl-C does (the CLI's own handler would raise inside the loop)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        try:
            loop.add_signal_handler(signal.SIGTERM, self.request_quit)
        except (NotImplementedError, RuntimeError, ValueError):
            return None

        def restore() -> None:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

        return restore

    # -- events -----------------------------------------------------------------

    def _pump_events(self) -> None:
        """Pump thread: block in get_event, wake the loop once per batch."""
        while (event := self.runtime.get_event()) is not None:
            with self._inbox_lock:
                self._inbox.append(event)
                if self._wake_scheduled or self._loop is None:
                    continue
                self._wake_scheduled = True
                loop = self._loop
            try:
                loop.call_soon_threadsafe(self._take_events)
            except RuntimeError:
                pass  # the loop is closed: run_async takes what is left

    def _call_in_loop(self, function: Callable[[bool], None], argument: bool) -> None:
        with self._inbox_lock:
            loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(function, argument)
            except RuntimeError:
                pass

    def _take_events(self, refresh: bool = True) -> None:
        with self._inbox_lock:
            events, self._inbox = self._inbox, []
            self._wake_scheduled = False
        for event in events:
            self._show(event)
        if refresh:
            self._refresh()

    def _show(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self._add_message(event.nick, event.text)
            return
        if isinstance(event, MessageDelivered):
            own = self._own.get(event.message_id)
            if own is not None:
                own.delivered[event.peer] = event.elapsed
                own.changed()
            return
        if isinstance(event, DeliveryFailed):
            self._unresolved.add(event.message_id)
            own = self._own.get(event.message_id)
            if own is not None:
                own.failed[event.peer] = event.elapsed
                own.changed()
            text = describe(event, {event.message_id: own.text} if own else None)
            self._line(f"{text} — /resend {event.message_id}", "class:error")
            return
        if isinstance(event, PeerJoined):
            self._present[event.peer] = event.nick
        elif isinstance(event, PeerLeft):
            self._present.pop(event.peer, None)
        elif isinstance(event, PeerRenamed):
            self._present[event.peer] = event.new_nick
        text = describe(event)
        if text is not None:
            warning = isinstance(event, DatagramRejected)
            self._line(text, "class:warning" if warning else "class:system")

    def _refresh(self) -> None:
        """After anything that may have changed the runtime: pending count, redraw."""
        self._pending = self.runtime.pending()
        if self._pending == 0:
            # No delivery is outstanding, so a message delivered to fewer peers than were
            # present has reached everyone it was sent to.
            for own in self._unsettled.values():
                if own.delivered:
                    own.complete = True
                    own.changed()
        for message_id in [key for key, own in self._unsettled.items() if own.settled]:
            del self._unsettled[message_id]
        self.app.invalidate()

    # -- the conversation -------------------------------------------------------

    def _line(self, text: str, style: str = "class:system") -> None:
        stamp = clock(seconds=False)
        self.conversation.add(_Entry([("class:time", f"{stamp} "), (style, text)], len(stamp) + 3))

    def _system(self, text: str) -> None:
        self._line(f"* {text}")

    def _error(self, text: str) -> None:
        self._line(f"* {text}", "class:error")

    def _message_fragments(self, nick: str, text: str, own: bool) -> tuple[StyleAndTextTuples, int]:
        prefix: StyleAndTextTuples = [
            ("class:time", f"{clock(seconds=False)} "),
            (nick_style(nick) + (" class:own" if own else ""), escape(nick) or "?"),
            ("", ": "),
        ]
        body = escape(text, keep_newlines=True)
        return [*prefix, ("", body)], min(fragment_list_width(prefix), 24)

    def _add_message(self, nick: str, text: str) -> None:
        fragments, indent = self._message_fragments(nick, text, own=False)
        self.conversation.add(_Entry(fragments, indent))

    def _add_own(self, message_id: int, text: str) -> _OwnMessage:
        fragments, indent = self._message_fragments(self._nick, text, own=True)
        own = _OwnMessage(message_id, text, fragments, indent, len(self._present))
        self._own[message_id] = self._unsettled[message_id] = own
        if len(self._own) > _OWN_REMEMBERED:
            self._own.popitem(last=False)
        self.conversation.add(own)
        return own

    # -- input ------------------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        """Enter. Returns True to keep the text in the input line (it was not sent)."""
        line = buffer.text
        if line.strip() and self._history[-1:] != [line]:
            self._history.append(line)
        self._history_index, self._draft = len(self._history), ""
        if self._quitting:
            if line.strip() == "/quit":
                self._exit()
                return False
            self._error("quitting: waiting for deliveries — Ctrl-C again to quit now")
            return True
        parsed = parse_input(line)
        keep = False
        if isinstance(parsed, Command):
            self._run_command(parsed)
        elif parsed.strip():
            keep = not self._send(parsed)
        self._refresh()
        return keep

    def _send(self, text: str) -> bool:
        try:
            message_id = self.runtime.send(text)
        except LocalProtocolError as error:
            self._error(f"not sent: {error} — the text is still in the input line")
            return False
        self._add_own(message_id, text)
        self.conversation.follow()
        return True

    def _run_command(self, command: Command) -> None:
        handlers: dict[str, Callable[[str], None]] = {
            "help": lambda _: self._lines(help_lines()),
            "peers": lambda _: self._lines(peers_lines(self.runtime.peers())),
            "stats": lambda _: self._lines(stats_lines(self.runtime.stats(), self.runtime.peers())),
            "model": self._model,
            "nick": self._set_nick,
            "peer": self._peer_command,
            "resend": self._resend,
            "quit": lambda _: self.request_quit(),
        }
        handler = handlers.get(command.name)
        if handler is None:
            self._error(unknown_command(command.name))
        else:
            handler(command.argument)

    def _lines(self, lines: list[str]) -> None:
        self._system("\n".join(lines))

    def _model(self, _: str) -> None:
        model = self.runtime.model
        self._system(f"model: {model} ({MODEL_DESCRIPTIONS.get(model, 'unknown')})")

    def _set_nick(self, name: str) -> None:
        problem = nick_problem(name)
        if problem is None:
            try:
                self.runtime.set_nick(name)
            except (ValueError, LocalProtocolError) as error:
                problem = str(error)
        if problem is not None:
            self._error(f"nickname not changed: {problem}")
            return
        self._nick = name
        self._system(f"you are now {escape(name)}")

    def _peer_command(self, argument: str) -> None:
        action, _, target = argument.partition(" ")
        if action not in ("add", "del") or not target.strip():
            self._error("usage: /peer add HOST[:PORT] or /peer del HOST[:PORT]")
            return
        self.app.create_background_task(self._change_peer(action, target.strip()))

    async def _change_peer(self, action: str, target: str) -> None:
        """/peer add|del, after resolving the name off the event loop (DNS may be slow)."""
        family = socket.AF_INET6 if ":" in self.runtime.local_address[0] else socket.AF_INET
        loop = asyncio.get_running_loop()
        try:
            addr = await loop.run_in_executor(None, resolve_peer, target, family)
        except AddressError as error:
            self._error(f"peer not {'added' if action == 'add' else 'removed'}: {error}")
            self._refresh()
            return
        if action == "add":
            self.runtime.add_peer(addr)
            self._system(f"added {format_address(addr)}; it joins when it answers")
        elif all(row.peer != addr for row in self.runtime.peers()):
            self._error(f"{format_address(addr)} is not a peer — /peers lists them")
        else:
            self.runtime.remove_peer(addr)
            self._present.pop(addr, None)
            self._system(f"removed {format_address(addr)}")
        self._refresh()

    def _resend(self, argument: str) -> None:
        if not argument.isdigit():
            self._error("usage: /resend N, N from a failed message's “/resend N” hint")
            return
        message_id = int(argument)
        own = self._own.get(message_id)
        if own is None:
            self._error(f"no message {message_id} to resend")
        elif not own.failed:
            self._error(f"message {message_id} has not failed; nothing to resend")
        elif own.resent_as is not None:
            self._error(f"message {message_id} was already resent as {own.resent_as}")
        else:
            try:
                new_id = self.runtime.send(own.text)
            except LocalProtocolError as error:
                self._error(f"not resent: {error}")
                return
            own.resent_as = new_id
            own.changed()
            self._unresolved.discard(message_id)
            self._add_own(new_id, own.text)
            self.conversation.follow()

    def _walk_history(self, step: int) -> None:
        """Up and Down: move within a message of several lines, else through the history.

        (Our own history rather than the Buffer's, which is reloaded only at the next
        frame and so misses an Up typed right after Enter.)
        """
        if self.input.complete_state:  # the completion menu is open: move in it
            if step < 0:
                self.input.complete_previous()
            else:
                self.input.complete_next()
            return
        document = self.input.document
        if step < 0 and document.cursor_position_row > 0:
            self.input.cursor_up()
            return
        if step > 0 and document.cursor_position_row < document.line_count - 1:
            self.input.cursor_down()
            return
        index = self._history_index + step
        if not 0 <= index <= len(self._history):
            return
        if self._history_index == len(self._history):
            self._draft = self.input.text
        self._history_index = index
        text = self._history[index] if index < len(self._history) else self._draft
        self.input.document = Document(text, len(text))

    def _peer_choices(self) -> list[str]:
        return [format_address(addr) for addr in self._present]

    # -- layout -----------------------------------------------------------------

    def _status(self) -> StyleAndTextTuples:
        names = [escape(nick) or format_address(addr) for addr, nick in self._present.items()]
        if not names:
            peers = "no peers"
        elif len(names) <= 3:
            peers = ", ".join(names)
        else:
            peers = f"{len(names)} peers"
        parts = [escape(self._nick), self._address, self.runtime.model, peers]
        parts.append(f"{self._pending} pending")
        if self._quitting:
            parts.append(f"waiting for {self._pending} deliveries… Ctrl-C again to quit now")
        elif self.conversation.anchor is not None:
            parts.append(f"scrolled back, {self.conversation.unseen} new below — PageDown")
        return [("class:status", " " + " · ".join(parts))]

    def _layout(self) -> Layout:
        conversation = Window(
            self.conversation,
            wrap_lines=True,
            dont_extend_height=True,
            always_hide_cursor=True,
        )
        status = Window(FormattedTextControl(self._status), height=1, style="class:status")
        entry = Window(
            BufferControl(self.input),
            height=Dimension(min=1, max=8),
            dont_extend_height=True,
            wrap_lines=True,
            get_line_prefix=lambda line, wrapped: [("class:prompt", "> " if line == 0 else "  ")],
        )
        body = HSplit([conversation, status, entry], align=VerticalAlign.BOTTOM)
        menu = Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))
        return Layout(FloatContainer(body, floats=[menu]), focused_element=entry)

    def _key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        input_empty = Condition(lambda: not self.input.text)

        @bindings.add("c-c")
        @bindings.add(Keys.SIGINT)
        @bindings.add("c-d", filter=input_empty)
        def _quit(event: KeyPressEvent) -> None:
            self.request_quit()

        @bindings.add("pageup")
        def _page_up(event: KeyPressEvent) -> None:
            self.conversation.page_up()

        @bindings.add("pagedown")
        def _page_down(event: KeyPressEvent) -> None:
            self.conversation.page_down()

        @bindings.add("up")
        def _up(event: KeyPressEvent) -> None:
            self._walk_history(-1)

        @bindings.add("down")
        def _down(event: KeyPressEvent) -> None:
            self._walk_history(+1)

        @bindings.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            self.input.insert_text("\n")

        bindings.add("tab")(generate_completions)
        return bindings
