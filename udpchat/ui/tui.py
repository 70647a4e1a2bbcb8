"""The terminal UI: one full-screen prompt_toolkit application over any `ChatRuntime`.

Top to bottom: the conversation on screen (`pane`: newest line at the bottom; PageUp and
PageDown scroll back), a one-line status bar, and the input line, which nothing that
arrives can touch. Each room and each direct conversation has its own pane; a message
for one not on screen only counts as unread in the status bar (and rings the terminal
bell when it is a direct message, unless `quiet`). Alt-1..9, Ctrl-N and Ctrl-P, and
/switch change the one on screen. Own messages show their delivery state in place at
the end of their line (`delivery`). This module is the application: layout, key
bindings, commands, events and quitting.

Rules:
- Text a peer controls (nicknames, messages, previews) passes through `escape` before it
  becomes a fragment, and only formatted text reaches prompt_toolkit, which owns the
  terminal: widths (CJK, emoji), colours (none under NO_COLOR), cursor movement.
- Events come through `on_event`, the runtime's callback, on the runtime's thread: it
  adds them to an inbox and wakes the event loop with `call_soon_threadsafe`, once per
  batch; nothing polls. Events from before the loop runs wait in the inbox.
- Quitting (/quit, Ctrl-D on an empty line, Ctrl-C, SIGINT, SIGTERM) is line mode's end
  of input: `wait_delivered` (bounded) in a helper thread while the screen stays live,
  then `close`, which says BYE. Asking again quits at once.
- Exit status: 0, or 1 when a message failed and was not resent, or was not confirmed
  delivered when the chat ended (quitting a second time does not wait). A message the
  runtime refuses (too long, no peers, full outbox) stays in the input line; nothing is
  lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.formatted_text.utils import fragment_list_to_text
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
    VerticalAlign,
    Window,
)
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from ..archive import Journal, conversation_of
from ..keyfile import KeyFileError, read_key_file
from ..protocol import (
    CANCELLED,
    Address,
    DatagramRejected,
    DeliveryFailed,
    Event,
    FileOffered,
    HistoryFailed,
    LocalProtocolError,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    RawMessageSent,
    SendFailed,
)
from ..protocol.plain import ENCODINGS
from ..runtimes import AddressError, ChatRuntime, resolve_peer
from ..store import StoredMessage
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
from .conversations import Conversation as Chat
from .conversations import Strangers, direct, find_peer, room, split_msg, suppressed_text
from .delivery import Deliveries, OwnMessage
from .format import (
    IPMSG_TEXT,
    STATE_MARKS,
    Names,
    deliveries,
    describe,
    discovery_text,
    escape,
    format_address,
    reach_text,
    ready_text,
    stored_line,
)
from .outbox import Outbox, Queue
from .pane import (
    PANE_STYLE,
    Conversation,
    Entry,
    GraphemeWindow,
    line_entry,
    message_fragments,
)


def _history_entries(stored: list[StoredMessage]) -> list[Entry]:
    """Messages of the history as the pane shows them: their own time (with the date
    when not today), ours with the mark of their outcome."""
    entries = []
    for message in stored:
        own = message.direction == "out"
        fragments, indent = message_fragments(
            message.nick or message.peer, message.text, own, wall=message.sent_at_ms / 1000
        )
        if own:
            mark = STATE_MARKS.get(message.state, "…")
            fragments.append(("class:state.delivered", f"  {mark}"))
        entries.append(Entry(fragments, indent))
    return entries


_REPLAYED = 50
"""Lines of the history a conversation opens with."""

EXIT_OK = 0
EXIT_UNDELIVERED = 1
_STYLE = [*PANE_STYLE, ("status", "reverse"), ("prompt", "bold")]


class TerminalUI:
    """Runs one chat in the terminal: make the runtime with `on_event`, open it, then
    `run(runtime)` returns the exit status."""

    def __init__(
        self,
        *,
        drain_timeout: float = 35.0,
        shared_key: str | None = None,
        quiet: bool = False,
        ipmsg: bool = False,
        journal: Journal | None = None,
        notes: Sequence[str] = (),
        instance: bytes = bytes(8),
        keep: float = 0.0,
    ) -> None:
        """`instance` and `keep`: this installation's id and how long a direct message
        waits for a peer that is away (`Config.instance`, `Config.keep`)."""
        self._shared_key = shared_key
        self._ipmsg_on = ipmsg
        self._journal = journal
        self._outbox = Outbox(journal, instance, keep)
        self._queue = Queue()
        """What waits for peers that are away (`/queue`, `/cancel N`)."""
        self._restored: dict[int, str] = {}
        """Messages with no line in a pane of this run -> their text: those sent again
        from the outbox at start, and those for peers known only to the history."""
        self._notes = tuple(notes)
        """Lines about this run to show after the ready lines (the history's state)."""
        """The history: our messages and their outcomes go there, each pane opens with
        its last lines, `/search` looks there; None without history."""
        self._nick_of: dict[Address, str] = {}
        """Each peer's nickname as it gives it (history names direct conversations so)."""
        self._quiet = quiet
        """No terminal bell for a direct message in a conversation not on screen."""
        """Where the shared key came from ("--key-file"); None: no key."""
        self.drain_timeout = drain_timeout
        self._nick = ""
        self._address = ""
        self._present: dict[Address, str] = {}
        self._strangers = Strangers()
        """Who is in which room; the limit on strangers' direct messages."""
        self._raw: dict[Address, str] = {}
        """Plain text peers we have heard from or written to, and their encodings."""
        self._ipmsg: dict[Address, str] = {}
        """IP Messenger users, and the encoding of their last message ("" before one)."""
        self._current = room("lobby")
        """Where a typed line goes: a room, or a direct conversation (`/query`)."""
        self._names = Names()
        self._deliveries = Deliveries()
        self._pending = 0
        self._quitting = False
        self._quit_hint = ""
        self._gave_up: int | None = None
        self._inbox: list[Event] = []
        self._inbox_lock = threading.Lock()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._panes: dict[Chat, Conversation] = {self._current: Conversation()}
        """Every conversation's pane, in the order they were opened (Alt-1..9)."""
        self._unread: dict[Chat, int] = {}
        self._history: list[str] = []
        self._history_index = 0
        self._draft = ""
        """What was typed before Up started walking the history."""
        self.input = Buffer(
            multiline=False,
            completer=CommandCompleter(
                self._peer_choices, lambda: sorted(self._deliveries.unresolved)
            ),
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

    # -- running ----------------------------------------------------------------

    def run(self, runtime: ChatRuntime) -> int:
        """Chat over the open `runtime` until the user quits; close it; return the exit
        status (0, or 1 if a message failed or was left unconfirmed)."""
        return asyncio.run(self.run_async(runtime))

    async def run_async(self, runtime: ChatRuntime, *, handle_signals: bool = True) -> int:
        """`run` on the running event loop. `handle_signals`: SIGINT and SIGTERM quit (only
        possible in the main thread)."""
        self.runtime = runtime
        self._nick = runtime.nick
        self._address = format_address(runtime.local_address)
        rooms = runtime.rooms
        if rooms:
            # The start-up lines belong to the first room's pane, whatever its name.
            self._panes = {room(rooms[0]): self._panes.pop(self._current)}
            self._current = room(rooms[0])
            self._replay(self.conversation, self._current)
            for name in rooms[1:]:
                self._pane(room(name))
        ready = ready_text(runtime.local_address, self._nick, runtime.model, self._shared_key)
        self._system(f"{ready} — /help lists commands, Ctrl-D quits")
        reach = reach_text(runtime.local_address)
        if reach is not None:
            self._system(reach)
        self._system(discovery_text(runtime.discovery_port, runtime.local_address))
        if self._ipmsg_on:
            self._system(IPMSG_TEXT)
        for note in self._notes:
            self._line(f"* {note}", "class:warning")
        self._resend_outbox()
        loop = asyncio.get_running_loop()
        with self._inbox_lock:
            self._loop = loop
            if self._inbox:  # events from before the loop ran
                self._wake_scheduled = True
                loop.call_soon(self._take_events)
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
            runtime.close()
            # Close settles nothing: what is still pending now was never confirmed.
            unconfirmed = runtime.pending()
            self._take_events(refresh=False)  # a failure reported while closing counts too
        if self._gave_up:
            print(f"udpchat: gave up waiting for {deliveries(self._gave_up)}", file=sys.stderr)
        elif unconfirmed:
            print(f"udpchat: quit with {deliveries(unconfirmed)} unconfirmed", file=sys.stderr)
        waiting = self._queue.farewell(self._outbox.keeps)
        if waiting is not None:
            print(f"udpchat: {waiting}", file=sys.stderr)
        lost = 0 if self._outbox.keeps else len(self._queue)
        failed = self._deliveries.unresolved or unconfirmed or lost
        return EXIT_UNDELIVERED if failed else EXIT_OK

    @property
    def conversation(self) -> Conversation:
        """The pane of the conversation on screen."""
        return self._panes[self._current]

    def _pane(self, where: Chat) -> Conversation:
        pane = self._panes.get(where)
        if pane is None:
            pane = self._panes[where] = Conversation()
            self._replay(pane, where)
        return pane

    def _history_name(self, where: Chat) -> str:
        if where.peer is None:
            return f"#{where.room}"
        nick = "" if where.peer in self._raw else self._nick_of.get(where.peer, "")
        return conversation_of("", where.peer, nick)

    def _replay(self, pane: Conversation, where: Chat) -> None:
        """Open a conversation with its last lines from the history, and a mark where
        this run starts."""
        journal = self._journal
        if journal is None:
            return
        name = self._history_name(where)
        stored = journal.recent(name, _REPLAYED)
        for entry in _history_entries(stored):
            pane.add(entry)
        if not stored:
            return
        pane.add(line_entry("── history above · this run starts here ──", "class:system"))
        oldest = [stored[0].id]

        def older() -> list[Entry]:
            """PageUp past the first line: the page of history before it."""
            earlier = journal.recent(name, _REPLAYED, before=oldest[0])
            if earlier:
                oldest[0] = earlier[0].id
            return _history_entries(earlier)

        pane.older = older

    def _switch_to(self, where: Chat) -> None:
        """Put `where`'s conversation on screen; lines typed go there from now on."""
        self._pane(where)
        self._current = where
        self._unread.pop(where, None)
        self._window.content = self.conversation
        self.app.invalidate()

    def _step(self, offset: int) -> None:
        """Ctrl-N, Ctrl-P: the next or previous conversation, in the order opened."""
        order = list(self._panes)
        self._switch_to(order[(order.index(self._current) + offset) % len(order)])

    def _go_to(self, number: int) -> None:
        """Alt-1..9: the conversation with that number in the order opened."""
        order = list(self._panes)
        if 1 <= number <= len(order):
            self._switch_to(order[number - 1])

    def transcript(self) -> str:
        """The pane on screen as plain text."""
        return self.conversation.text()

    def status_text(self) -> str:
        return fragment_list_to_text(self._status())

    def request_quit(self, *, interrupted: bool = False) -> None:
        """Quit as line mode ends: wait for delivery (bounded), then BYE. Twice: at once.
        `interrupted`: asked by Ctrl-C (the hint then says "Ctrl-C again")."""
        if self._quitting:
            self._exit()
            return
        self._quitting = True
        self._quit_hint = "Ctrl-C again to quit now" if interrupted else "Ctrl-C to quit now"
        pending = self.runtime.pending()
        if pending:
            self._system(f"waiting for {deliveries(pending)}… {self._quit_hint}")
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

    def on_event(self, event: Event) -> None:
        """The runtime's callback (on the runtime's thread): queue the event and wake the
        loop, once for any number of events queued before it runs."""
        with self._inbox_lock:
            self._inbox.append(event)
            if self._wake_scheduled or self._loop is None:
                return
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
        if isinstance(event, PeerJoined | MessageReceived) and event.nick:
            self._nick_of[event.peer] = event.nick
        elif isinstance(event, PeerRenamed):
            self._nick_of[event.peer] = event.new_nick
        if self._journal is not None and isinstance(
            event, MessageDelivered | DeliveryFailed | RawMessageSent
        ):
            failed = self._journal.outcome(event)
            if failed is not None:
                self._show(HistoryFailed(reason=failed))
        if isinstance(event, MessageReceived) and event.dialect == "raw":
            self._raw[event.peer] = event.encoding
        if isinstance(event, MessageReceived) and event.dialect == "ipmsg":
            self._ipmsg[event.peer] = event.encoding
        if isinstance(event, PeerJoined) and event.dialect == "ipmsg":
            self._ipmsg.setdefault(event.peer, "")
        if isinstance(event, FileOffered):
            text = describe(event, names=self._names)
            if text is not None:
                self._pane(direct(event.peer)).add(line_entry(text, "class:system"))
            return
        if isinstance(event, RawMessageSent):
            self._raw[event.peer] = event.encoding
            self._deliveries.raw_sent(event)
            return
        if isinstance(event, MessageReceived):
            name = self._names.of(event.peer, event.nick) or format_address(event.peer)
            where = room(event.room) if event.room else direct(event.peer)
            shown, suppressed = self._strangers.screen(event, self.runtime.rooms, time.monotonic())
            if suppressed:
                self._pane(where).add(
                    line_entry(suppressed_text(event.peer, name, suppressed), "class:warning")
                )
            if shown:
                self._add_message(name, event.text, where)
            return
        if isinstance(event, MessageHeld | MessageDelivered | DeliveryFailed):
            text = self._restored.get(event.message_id) or self._deliveries.text(event.message_id)
            self._queue.see(event, text or "")
        if isinstance(event, MessageHeld):
            if not self._deliveries.held(event):
                self._line(describe(event, {event.message_id: text or ""}) or "", "class:system")
            return
        if isinstance(event, MessageDelivered):
            restored = self._restored.pop(event.message_id, None)
            if restored is not None:
                name = self._names.of(event.peer, self._nick_of.get(event.peer, ""))
                self._system(f"✓ delivered to {name}: {escape(restored)} (it waited in the outbox)")
            self._deliveries.delivered(event)
            return
        if isinstance(event, DeliveryFailed):
            self._restored.pop(event.message_id, None)
            if event.reason == CANCELLED:
                self._deliveries.cancelled(event)
                return
            self._line(self._deliveries.failed(event), "class:error")
            return
        text = describe(event, names=self._names)
        self._strangers.see(event)
        if isinstance(event, PeerJoined):
            self._present[event.peer] = self._names.of(event.peer, event.nick)
        elif isinstance(event, MemberJoined | MemberLeft):
            pane = self._panes.get(room(event.room))
            if pane is None or event.room not in self.runtime.rooms:
                return  # a room we are not in: /rooms tells, the screen need not
            if text is not None:  # shown where it happened
                pane.add(line_entry(text, "class:system"))
                return
        elif isinstance(event, PeerLeft):
            self._present.pop(event.peer, None)
        elif isinstance(event, PeerRenamed):
            self._present[event.peer] = self._names.of(event.peer, event.new_nick)
        if text is not None:
            warning = isinstance(event, DatagramRejected | SendFailed)
            self._line(text, "class:warning" if warning else "class:system")

    def _refresh(self) -> None:
        """After anything that may have changed the runtime: pending count, redraw."""
        self._pending = self.runtime.pending()
        self._deliveries.settle(self._pending)
        self.app.invalidate()

    # -- the conversation -------------------------------------------------------

    def _line(self, text: str, style: str = "class:system") -> None:
        self.conversation.add(line_entry(text, style))

    def _system(self, text: str) -> None:
        self._line(f"* {text}")

    def _error(self, text: str) -> None:
        self._line(f"* {text}", "class:error")

    def _add_message(self, nick: str, text: str, where: Chat) -> None:
        fragments, indent = message_fragments(nick, text, own=False)
        self._pane(where).add(Entry(fragments, indent))
        if where != self._current:
            self._unread[where] = self._unread.get(where, 0) + 1
            if where.peer is not None and not self._quiet:
                self.app.output.bell()

    def _add_own(self, message_id: int, text: str, where: Chat) -> OwnMessage:
        fragments, indent = message_fragments(self._nick, text, own=True)
        expected = 1 if where.peer is not None else len(self._members(where.room))
        own = self._deliveries.add(message_id, text, fragments, indent, expected, where.room)
        self._pane(where).add(own)
        return own

    def _name_of(self, where: Chat) -> str:
        if where.peer is not None and where.peer in self._raw:
            return f"@{format_address(where.peer)} (raw, {self._raw[where.peer]})"
        if where.peer is not None and where.peer in self._ipmsg:
            label = where.label(self._names, self._present.get(where.peer, ""))
            encoding = self._ipmsg[where.peer]
            return f"{label} (IPMsg{', ' + encoding if encoding else ''})"
        if where.peer is not None:
            return where.label(self._names, self._present.get(where.peer, ""))
        return where.label()

    def _members(self, name: str) -> list[Address]:
        return self._strangers.members(name)

    # -- input ------------------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        """Enter. Returns True to keep the text in the input line (it was not sent)."""
        line = buffer.text
        if line.strip() and self._history[-1:] != [line]:
            self._history.append(line)
        self._history_index, self._draft = len(self._history), ""
        if self._quitting:
            if parse_input(line.strip()) == Command("quit", ""):
                self._exit()
                return False
            self._error("quitting: waiting for deliveries — Ctrl-C or /quit to quit now")
            return True
        parsed = parse_input(line)
        keep = False
        if isinstance(parsed, Command):
            self._run_command(parsed)
        elif parsed.strip():
            keep = not self._send(parsed)
        self._refresh()
        return keep

    def _send(self, text: str, where: Chat | None = None) -> bool:
        """Send `text` to `where` (by default the current conversation)."""
        current = where or self._current
        dialect = "raw" if current.peer in self._raw else "udpchat"
        if current.peer in self._ipmsg:
            dialect = "ipmsg"
        recipient = None
        if current.peer is not None and dialect == "udpchat" and self._journal is not None:
            # Its installation, for the outbox entry should it be away.
            rows = [r for r in self.runtime.peers() if r.peer == current.peer]
            recipient = rows[0] if rows else None
        default = current.peer is None and current.room == (self.runtime.rooms or ("",))[0]
        try:
            sent = self._outbox.send(
                self.runtime,
                text,
                to=current.peer,
                room=None if default else current.room,
                conversation=self._history_name(current),
                nick=self._nick,
                dialect=dialect,
                recipient=recipient,
            )
        except LocalProtocolError as error:
            self._error(f"not sent: {error} — the text is still in the input line")
            return False
        if current.peer is not None:
            self._strangers.answered(current.peer)
        self._add_own(sent.message_id, text, current)
        self._pane(current).follow()
        if sent.history_failed is not None:
            self._show(HistoryFailed(reason=sent.history_failed))
        return True

    def _resend_outbox(self) -> None:
        """What the outbox kept from earlier runs goes to the runtime again."""
        try:
            restored = self._outbox.resend(self.runtime)
        except LocalProtocolError as error:
            self._error(f"the outbox could not be sent again: {error}")
            return
        self._restored.update((message_id, queued.text) for message_id, queued in restored)
        if restored:
            many = "1 message" if len(restored) == 1 else f"{len(restored)} messages"
            self._system(f"{many} from an earlier run still to be delivered — /queue lists them")

    def _list_queue(self, _: str) -> None:
        self._lines(self._queue.lines())

    def _cancel(self, argument: str) -> None:
        found = self._queue.message_id(argument)
        if isinstance(found, str):
            self._error(found)
        elif not self.runtime.cancel(found):
            self._error("it is on its way already: too late to cancel")
        else:
            self._system("cancelled: it will not be sent")

    def _search(self, argument: str) -> None:
        text = argument.strip()
        if not text:
            self._error("usage: /search TEXT")
            return
        if self._journal is None:
            self._error("no history in this chat (--no-history)")
            return
        found = self._journal.search(text, limit=20)
        many = "1 message holds" if len(found) == 1 else f"{len(found)} messages hold"
        self._system(f"{many} {escape(text)!r} (newest first, at most 20):")
        for stored in found:
            self._line(f"  {stored_line(stored)}")

    def _run_command(self, command: Command) -> None:
        handlers: dict[str, Callable[[str], None]] = {
            "help": lambda _: self._lines(help_lines()),
            "peers": lambda _: self._lines(peers_lines(self.runtime.peers())),
            "stats": lambda _: self._lines(stats_lines(self.runtime.stats(), self.runtime.peers())),
            "model": self._model,
            "nick": self._set_nick,
            "peer": self._peer_command,
            "resend": self._resend,
            "join": self._join,
            "leave": self._leave,
            "rooms": lambda _: self._lines(self._rooms_lines()),
            "msg": self._msg,
            "query": self._query,
            "switch": self._switch,
            "raw": self._raw_command,
            "search": self._search,
            "queue": self._list_queue,
            "cancel": self._cancel,
            "encoding": self._encoding,
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

    def _join(self, argument: str) -> None:
        name, _, rest = argument.partition(" ")
        rest = rest.strip()
        if not name or (rest and not rest.startswith("--key-file ")):
            self._error("usage: /join NAME, or /join NAME --key-file FILE for a keyed room")
            return
        if rest:
            path = rest.removeprefix("--key-file ").strip()
            self.app.create_background_task(self._join_keyed(name, path))
            return
        self._joined(name, None)

    async def _join_keyed(self, name: str, path: str) -> None:
        """/join NAME --key-file FILE, the passphrase read and stretched (scrypt) off the
        event loop."""
        loop = asyncio.get_running_loop()
        try:
            key = await loop.run_in_executor(None, _room_key, path)
        except KeyFileError as error:
            self._error(f"not joined: {error}")
            self._refresh()
            return
        self._joined(name, key)
        self._refresh()

    def _joined(self, argument: str, key: bytes | None) -> None:
        try:
            name = self.runtime.join(argument, key)
        except (ValueError, LocalProtocolError) as error:
            self._error(f"not joined: {error}")
            return
        self._switch_to(room(name))
        members = len(self._members(name))
        who = f"{members} other{'s' if members != 1 else ''} here" if members else "nobody else yet"
        keyed = ", keyed: only holders of its passphrase see it" if key is not None else ""
        self._system(f"you joined #{name} ({who}{keyed}); lines you type go there")

    def _leave(self, argument: str) -> None:
        name = argument or self._current.room
        if not name:
            self._error("usage: /leave NAME (this is a direct conversation)")
            return
        try:
            left = self.runtime.leave(name)
        except (ValueError, LocalProtocolError) as error:
            self._error(f"not left: {error}")
            return
        self._system(f"you left #{left}")
        if self._current.room == left:
            rooms = self.runtime.rooms
            if rooms:
                self._switch_to(room(rooms[0]))
                self._system(f"lines you type go to #{rooms[0]}")
            else:
                self._system("you are in no room: /join one, or /msg someone")

    def _rooms_lines(self) -> list[str]:
        """/rooms: every room seen on the LAN, with its members (and whether we are in)."""
        ours = set(self.runtime.rooms)
        counts: dict[str, int] = dict.fromkeys(ours, 0)
        for rooms in self._strangers.rooms_of.values():
            for name in rooms:
                counts[name] = counts.get(name, 0) + 1
        lines = [f"{len(counts)} room{'s' if len(counts) != 1 else ''}:"]
        for name in sorted(counts):
            others = counts[name]
            total = others + (name in ours)
            mark = " (you are in)" if name in ours else ""
            lines.append(f"  #{name}  {total} member{'s' if total != 1 else ''}{mark}")
        return lines

    def _msg(self, argument: str) -> None:
        parsed = split_msg(argument)
        if parsed is None:
            self._error("usage: /msg NICK text")
            return
        found = find_peer(parsed[0], self.runtime.peers(), self._names)
        if isinstance(found, str):
            if not self._send_to_history_peer(parsed[0], parsed[1]):
                self._error(found)
            return
        peer = found
        if self._send(parsed[1], direct(peer)) and self._current.peer != peer:
            number = list(self._panes).index(direct(peer)) + 1
            self._system(f"sent to {self._name_of(direct(peer))} — Alt-{number} shows it")

    def _query(self, argument: str) -> None:
        if not argument:
            self._error("usage: /query NICK")
            return
        peer = self._find(argument)
        if peer is not None:
            self._switch_to(direct(peer))
            self._system(f"lines you type go to {self._name_of(self._current)} alone")

    def _switch(self, argument: str) -> None:
        name = argument.strip()
        if name.startswith("#") or name in self.runtime.rooms:
            wanted = name.removeprefix("#").lower()
            if wanted not in self.runtime.rooms:
                self._error(f"not in #{escape(wanted)} — /join {escape(wanted)}")
                return
            self._switch_to(room(wanted))
            return
        self._query(name)

    def _raw_command(self, argument: str) -> None:
        if not argument:
            self._error("usage: /raw HOST[:PORT] — talk to nc, socat or a network assistant")
            return
        self.app.create_background_task(self._open_raw(argument))

    async def _open_raw(self, target: str) -> None:
        """/raw, after resolving the name off the event loop."""
        bind = self.runtime.local_address[0]
        loop = asyncio.get_running_loop()
        try:
            addr = await loop.run_in_executor(None, resolve_peer, target, bind)
            self.runtime.add_raw_peer(addr)
        except (AddressError, ValueError, LocalProtocolError) as error:
            self._error(f"no raw conversation: {error}")
            self._refresh()
            return
        self._raw.setdefault(addr, "utf-8")
        self._switch_to(direct(addr))
        self._system(
            f"lines you type go to {format_address(addr)} as plain text (no receipts);"
            " /encoding to change how it is read and written"
        )
        self._refresh()

    def _encoding(self, argument: str) -> None:
        name, _, encoding = argument.strip().rpartition(" ")
        if not name and self._current.peer is not None:
            name = format_address(self._current.peer)
        if not encoding or not name:
            self._error(f"usage: /encoding [PEER] {'|'.join(ENCODINGS)}")
            return
        known = [addr for addr in self._raw if format_address(addr) == name.removeprefix("@")]
        peer = known[0] if known else self._find(name)
        if peer is None:
            return
        try:
            self.runtime.add_raw_peer(peer, encoding)
        except (ValueError, LocalProtocolError) as error:
            self._error(f"encoding not changed: {error}")
            return
        if peer in self._ipmsg:
            self._ipmsg[peer] = encoding
        else:
            self._raw[peer] = encoding
        self._system(f"{format_address(peer)} is read and written as {encoding}")

    def _send_to_history_peer(self, name: str, text: str) -> bool:
        """`/msg NAME text` to a udpchat peer not here in this run but known to the
        history: it waits in the outbox for that installation (shown in the system
        lines, as it has no pane yet). False when the history knows no one of that name."""
        try:
            sent = self._outbox.send_to_known(self.runtime, text, nick=self._nick, peer_nick=name)
        except LocalProtocolError as error:
            self._error(f"not sent: {error}")
            return True
        if sent is None:
            return False
        if isinstance(sent, str):
            self._error(sent)
            return True
        self._restored[sent.message_id] = text
        if sent.history_failed is not None:
            self._show(HistoryFailed(reason=sent.history_failed))
        return True

    def _find(self, name: str) -> Address | None:
        found = find_peer(name, self.runtime.peers(), self._names)
        if isinstance(found, str):
            self._error(found)
            return None
        return found

    def _peer_command(self, argument: str) -> None:
        action, _, target = argument.partition(" ")
        if action not in ("add", "del") or not target.strip():
            self._error("usage: /peer add HOST[:PORT] or /peer del HOST[:PORT]")
            return
        self.app.create_background_task(self._change_peer(action, target.strip()))

    async def _change_peer(self, action: str, target: str) -> None:
        """/peer add|del, after resolving the name off the event loop (DNS may be slow)."""
        bind = self.runtime.local_address[0]
        loop = asyncio.get_running_loop()
        try:
            addr = await loop.run_in_executor(None, resolve_peer, target, bind)
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
        number = int(argument)
        own = self._deliveries.get(number)
        if own is None:
            self._error(f"no message {number} to resend")
        elif not own.failed:
            state = "was resent and is on its way" if own.resent else "has not failed"
            self._error(f"message {number} {state}; nothing to resend")
        else:
            # Only to the peers it failed for; a failure with no peer (there was none
            # to send to) goes to whoever is there now.
            failed_for = [peer for peer in own.failed if peer is not None]
            try:
                new_id = self.runtime.send(own.text, to=failed_for or None, room=own.room or None)
            except LocalProtocolError as error:
                self._error(f"not resent: {error}")
                return
            # The same message, number and line: only its state changes.
            self._deliveries.resent(own, new_id)
            self._system(f"message {number} sent again")
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
        where = self._name_of(self._current)
        if self._current.room:
            members = len(self._members(self._current.room))
            where += f" ({members + 1} member{'s' if members else ''})"
        parts = [where]
        if len(self._panes) > 1:  # every conversation, by its Alt number
            listed = [
                f"{number}:{self._name_of(chat)}"
                + (f" {self._unread[chat]} new" if self._unread.get(chat) else "")
                for number, chat in enumerate(self._panes, 1)
            ]
            parts.append(" ".join(listed))
        parts += [escape(self._nick), self._address, self.runtime.model, peers]
        if self._shared_key is not None:
            parts.insert(3, "🔒 shared key")
        parts.append(f"{self._pending} pending")
        if self._quitting:
            parts.append(f"waiting for {deliveries(self._pending)}… {self._quit_hint}")
        elif self.conversation.anchor is not None:
            parts.append(f"scrolled back, {self.conversation.unseen} new below — PageDown")
        return [("class:status", " " + " · ".join(parts))]

    def _layout(self) -> Layout:
        # Drawn one cell per grapheme cluster, so that emoji sequences line up (pane.py).
        conversation = self._window = GraphemeWindow(self.conversation)
        status = GraphemeWindow(FormattedTextControl(self._status), height=1, style="class:status")
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
            self.request_quit(interrupted=event.key_sequence[0].key != "c-d")

        @bindings.add("c-n")
        def _next(event: KeyPressEvent) -> None:
            self._step(+1)

        @bindings.add("c-p")
        def _previous(event: KeyPressEvent) -> None:
            self._step(-1)

        for digit in "123456789":

            @bindings.add("escape", digit)
            def _go(event: KeyPressEvent) -> None:
                self._go_to(int(event.key_sequence[-1].key))

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

        @bindings.add(Keys.BracketedPaste)
        def _paste(event: KeyPressEvent) -> None:
            # A block copied by whole lines ends in a newline, which would become an empty
            # last line of the message (and push its delivery mark onto a line of its own).
            text = event.data.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
            self.input.insert_text(text)

        bindings.add("tab")(generate_completions)
        return bindings


def _room_key(path: str) -> bytes:
    """The master key of the passphrase in `path`, for a keyed room."""
    passphrase = read_key_file(path, "--key-file")
    if not passphrase.strip():
        raise KeyFileError(f"--key-file {path} holds no passphrase")
    from ..protocol.crypto import derive_master_key  # only for a keyed room

    return derive_master_key(passphrase)
