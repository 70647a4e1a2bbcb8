"""The process model: the parent's one UDP socket shared by a receiving process and a
sending process, which talk through multiprocessing Pipes.

The core is split along its seam. The receiving process runs the receive half
(`Receiver`: decoding, duplicates, ordering, ACKs and PONGs, which it sends itself) and
passes its notes (ACK news, peers) to the sending process. The sending process runs the
send half (`Sender`: outbox, retransmission, probes). Both send their events to the
parent, where one thread reads the children's pipes and calls the caller's `on_event`.
What crosses a pipe is a small frozen dataclass (below), matched on its type.

Why Pipes: a one-way Pipe hop costs less than an mp.Queue hop (docs/models.md, "Figures
behind the runtimes"), and a Pipe needs no feeder thread and no semaphore, so nothing can
leak. `send()` to every peer is fire-and-forget (a request/response round trip per
message would cost many times a one-way hop): the parent checks what it can before
sending (the text's length, and the peers and outbox sizes that the sending process
publishes in shared memory), and the rare message the sending process still cannot queue
comes back as DeliveryFailed. `send(to=...)` waits for the sending process's answer: only
it knows which peers it has.

Lifetime: each child watches a lifeline pipe whose only writer is the parent, so when
the parent dies, even by SIGKILL, both children see end-of-file and exit (the sending
one after saying BYE). Children ignore SIGINT: Ctrl-C reaches the whole process group,
and shutting down is the parent's decision. Works under fork, spawn and forkserver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..protocol import (
    Address,
    Config,
    Event,
    LocalProtocolError,
    Outboxed,
    PeerStatus,
    Receiver,
    Sender,
    Stats,
    encode_text,
    merge_peers,
)
from ..protocol.plain import check_raw_peer
from . import base
from .base import (
    RuntimeBase,
    SendText,
    Transmitter,
    queue_message,
    quiet_addresses,
    refused,
)
from .sockets import read_queued

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..archive import Inbox
    from .base import RuntimeOptions

_JOIN_TIMEOUT = 0.5
_START_TIMEOUT = 30.0
_RPC_TIMEOUT = 5.0
# Slots of the status array the sending process publishes.
_ACTIVE, _PENDING, _DONE = 0, 1, 2


# -- what crosses the pipes -------------------------------------------------------------
# Parent to children: SendText (sending process only), Request, Stop.
# Children to parent: Ready, Events, Reply. Receiving to sending process: lists of notes.


@dataclass(frozen=True, slots=True)
class AddPeer:
    peer: Address


@dataclass(frozen=True, slots=True)
class RemovePeer:
    peer: Address


@dataclass(frozen=True, slots=True)
class Cancel:
    message_id: int
    """A message held for a peer that is away (`Sender.cancel`)."""


@dataclass(frozen=True, slots=True)
class SetNick:
    nick: str


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class RawPeerAdded:
    """To the receiving process: `peer` is a plain text peer, in `encoding` (None: as
    it says); the receiving process tells the sending one in a note."""

    peer: Address
    encoding: str | None


@dataclass(frozen=True, slots=True)
class RoomKeyHeld:
    """To the receiving process: hold this key for the keyed room (None: none)."""

    room: str
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


class Question(Enum):
    """A call that takes no argument."""

    STATS = "stats"
    """Either half's counters."""
    TARGETS = "targets"
    """The send half's peers (`Sender.targets`)."""
    PEERS = "peers"
    """The receive half's peers (`Receiver.peers`)."""
    ACTIVE_PEERS = "active peers"
    """How many peers a new message would go to."""
    DELIVERED = "delivered"
    """Answered (True) once nothing is pending: `wait_delivered`."""


Call = SendText | AddPeer | RemovePeer | SetNick | Join | Leave | Cancel | Question


@dataclass(frozen=True, slots=True)
class Request:
    """A call the parent waits for; `Reply` with the same `request_id` answers it."""

    request_id: int
    call: Call


@dataclass(frozen=True, slots=True)
class Stop:
    """End: the sending process says BYE first."""


@dataclass(frozen=True, slots=True)
class Unanswered:
    """Sending process to receiving process, through the parent: the peers it has just
    retransmitted to (`Sender.take_unanswered`, for `Receiver.suspect`)."""

    peers: list[Address]


@dataclass(frozen=True, slots=True)
class Ready:
    """The child is serving."""


@dataclass(frozen=True, slots=True)
class Events:
    """One flush's events, for the caller's `on_event`."""

    events: list[Event]

    def __reduce__(self) -> tuple[type[Events], tuple[list[Event]]]:
        return Events, (self.events,)  # as SendText, for one flush in every busy round


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a `Request`: a value, or a LocalProtocolError or ValueError to raise."""

    request_id: int
    value: object


# -- the parent ---------------------------------------------------------------------


class ProcessRuntime(RuntimeBase):
    """`ChatRuntime` with a receiving process and a sending process over one socket."""

    model = "process"

    def __init__(
        self, nick: str, *, start_method: str | None = None, **options: Unpack[RuntimeOptions]
    ) -> None:
        """`start_method`: how to start the children ("fork", "spawn", "forkserver");
        default: UDPCHAT_START_METHOD, else see `_context`."""
        super().__init__(nick, **options)
        Sender(b"\0" * 8, nick, Config())  # validates the nickname here, in the caller
        self._nick = nick
        self._rooms: tuple[str, ...] = self._config.rooms
        self._start_method = start_method or os.environ.get("UDPCHAT_START_METHOD") or None
        self._sock: socket.socket | None = None
        self._replies: dict[int, queue.SimpleQueue[object]] = {}
        self._request_ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._sends_issued = 0
        self._next_message_id = 1

    # -- ChatRuntime ----------------------------------------------------------

    @property
    def nick(self) -> str:
        return self._nick

    def open(self) -> None:
        self._sock = sock = self._bind_socket()
        listener = self._discovery.listener if self._discovery is not None else None
        config = dataclasses.replace(self._config, announce_to=self._announce_to)
        ctx, session = _context(self._start_method), os.urandom(8)
        self._status = ctx.RawArray("q", 3)
        lifeline_r, self._lifeline = ctx.Pipe(duplex=False)
        commands_r, self._commands = ctx.Pipe(duplex=False)
        control_r, self._control = ctx.Pipe(duplex=False)
        notes_r, notes_w = ctx.Pipe(duplex=False)
        self._from_receiver, receiver_events = ctx.Pipe(duplex=False)
        self._from_sender, sender_events = ctx.Pipe(duplex=False)
        self._receiver = ctx.Process(
            target=_receiver_main,
            args=(sock, listener, session, config, self._history),
            kwargs={
                "pipes": _Pipes(control_r, notes_w, receiver_events, lifeline_r, self._lifeline)
            },
            name="udpchat-receive",
            daemon=True,
        )
        self._sender = ctx.Process(
            target=_sender_main,
            args=(sock, session, self._nick, config, self._initial_peers, self._status),
            kwargs={
                "pipes": _Pipes(commands_r, notes_r, sender_events, lifeline_r, self._lifeline)
            },
            name="udpchat-send",
            daemon=True,
        )
        ready: dict[int, queue.SimpleQueue[bool]] = {
            id(conn): queue.SimpleQueue() for conn in (self._from_receiver, self._from_sender)
        }
        self._ready = ready
        self._receiver.start()
        self._sender.start()
        # The children have their own copies now; ours would keep the pipes from ever
        # reporting end-of-file.
        for end in (lifeline_r, commands_r, control_r, notes_r, notes_w):
            end.close()
        receiver_events.close()
        sender_events.close()
        self._reader = threading.Thread(
            target=self._read_children, name="udpchat-events", daemon=True
        )
        self._reader.start()
        for waiter in ready.values():
            try:
                waiter.get(timeout=_START_TIMEOUT)
            except queue.Empty:
                self.close()
                raise RuntimeError("the process model's children did not start") from None

    def close(self) -> None:
        if self._sock is None or self._closing:
            return
        self._closing = True
        # The receiving process first: it hands the sending process what its BYEs
        # acknowledge (docs/protocol.md, "BYE").
        for conn, process in ((self._control, self._receiver), (self._commands, self._sender)):
            try:
                with self._send_lock:  # the events thread may be forwarding to it
                    conn.send(Stop())
            except OSError:
                pass  # that child is gone already
            process.join(_JOIN_TIMEOUT)
        for process in (self._sender, self._receiver):
            if process.is_alive():
                process.terminate()
                process.join(_JOIN_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join(_JOIN_TIMEOUT)
        self._reader.join(_JOIN_TIMEOUT)
        for conn in (self._commands, self._control, self._lifeline):
            conn.close()
        self._sock.close()
        self._close_discovery()
        for waiter in list(self._replies.values()):
            waiter.put(None)  # wakes every call still waiting, wait_delivered included
        self._outlet.shut()

    def send(
        self,
        text: str,
        to: Sequence[Address] | None = None,
        *,
        room: str | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
        sent_at_ms: int | None = None,
    ) -> int:
        if self._sock is None or self._closing:
            raise RuntimeError("not open")
        encode_text(text)  # MessageTooLong, before anything crosses a pipe
        default = to is None and room is None and outboxed is None
        if default:
            self._check_room()
        with self._send_lock:
            message_id = self._next_message_id
            self._next_message_id += 1
            self._sends_issued += 1
            targets = base.as_targets(to)
            stamp = base.wall_clock_ms() if sent_at_ms is None else sent_at_ms
            message = SendText(message_id, text, stamp, targets, room, key, outboxed)
            if default:
                self._commands.send(message)
                return message_id
        # Only the sending process knows who is in a room or is a peer: its answer is
        # NoPeers if nobody is, as in the other models (OutboxFull if it is full).
        self._call(self._commands, message)
        return message_id

    def join(self, room: str, key: bytes | None = None) -> str:
        joined: str = self._call(self._commands, Join(room, key))
        self._tell_receiver(RoomKeyHeld(joined, key))
        if joined not in self._rooms:
            self._rooms += (joined,)
        return joined

    def leave(self, room: str) -> str:
        left: str = self._call(self._commands, Leave(room))
        self._tell_receiver(RoomKeyHeld(left, None))
        self._rooms = tuple(r for r in self._rooms if r != left)
        return left

    def _tell_receiver(self, message: RoomKeyHeld | RawPeerAdded) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            self._control.send(message)

    @property
    def rooms(self) -> tuple[str, ...]:
        return self._rooms

    def add_peer(self, addr: Address) -> None:
        self._call(self._commands, AddPeer(addr))

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        # Checked here, since the receiving process answers nothing.
        check_raw_peer(encoding, keyed=self._config.key is not None)
        self._tell_receiver(RawPeerAdded(addr, encoding))

    def remove_peer(self, addr: Address) -> None:
        self._call(self._commands, RemovePeer(addr))

    def cancel(self, message_id: int) -> bool:
        return bool(self._call(self._commands, Cancel(message_id), default=False))

    def set_nick(self, nick: str) -> None:
        self._call(self._commands, SetNick(nick))
        self._nick = nick

    def wait_delivered(self, timeout: float) -> bool:
        if self._closing:
            return self.pending() == 0
        return bool(self._call(self._commands, Question.DELIVERED, timeout=timeout, default=False))

    def pending(self) -> int:
        status = self._status
        return int(status[_PENDING]) + max(0, self._sends_issued - int(status[_DONE]))

    def stats(self) -> Stats:
        sent: Stats = self._call(self._commands, Question.STATS, default=Stats())
        received: Stats = self._call(self._control, Question.STATS, default=Stats())
        return sent + received

    def peers(self) -> list[PeerStatus]:
        targets = self._call(self._commands, Question.TARGETS, default=[])
        heard = self._call(self._control, Question.PEERS, default=[])
        return merge_peers(targets, heard, time.monotonic())

    # -- parent side plumbing -------------------------------------------------

    def _check_room(self) -> None:
        """NoPeers or OutboxFull, as far as the sending process's last status tells."""
        status = self._status
        with self._send_lock:
            unprocessed = self._sends_issued - status[_DONE]
        base.check_room(
            active=status[_ACTIVE],
            pending=status[_PENDING],
            queued=unprocessed,
            max_pending=self._config.max_pending,
            active_now=lambda: int(self._call(self._commands, Question.ACTIVE_PEERS, default=0)),
        )

    def _call(
        self,
        conn: Connection,
        call: Call,
        *,
        timeout: float = _RPC_TIMEOUT,
        default: Any = None,
    ) -> Any:
        """Ask a child and wait for its answer; re-raise an error it reports."""
        request_id = next(self._request_ids)
        answer: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._replies[request_id] = answer
        try:
            with self._send_lock:
                conn.send(Request(request_id, call))
            result = answer.get(timeout=timeout)
        except (OSError, queue.Empty):
            return default  # closed, or no answer in time
        finally:
            self._replies.pop(request_id, None)
        if isinstance(result, Exception):
            raise result
        return result

    def _read_children(self) -> None:
        """Hand what the children send to `on_event` and to the calls waiting for it."""
        live = [self._from_receiver, self._from_sender]
        while live:
            for conn in multiprocessing.connection.wait(live):
                assert isinstance(conn, Connection)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    live.remove(conn)
                    continue
                match message:
                    case Events(events):
                        self._outlet.publish(events)
                    case Reply(request_id, value):
                        waiter = self._replies.get(request_id)
                        if waiter is not None:
                            waiter.put(value)
                    case Ready():
                        self._ready[id(conn)].put(True)
                    case Unanswered():
                        with self._send_lock, contextlib.suppress(OSError):
                            self._control.send(message)
        for conn in (self._from_receiver, self._from_sender):
            conn.close()


def _context(method: str | None) -> Any:
    """The multiprocessing context to start the children with.

    `method` is the caller's choice (`start_method=` or UDPCHAT_START_METHOD). Without one,
    the platform's default, except that fork is not used once the parent runs other
    threads: a lock one of them holds at the fork stays held forever in the child (Python
    3.12 warns about it); forkserver forks from a clean, single-threaded server instead.
    Typed loosely: typeshed's BaseContext lacks the Process attribute real contexts have.
    """
    default = multiprocessing.get_context()
    if method is None and threading.active_count() > 1 and default.get_start_method() == "fork":
        method = "forkserver"
    return multiprocessing.get_context(method) if method else default


# -- the children -------------------------------------------------------------------


@dataclass(slots=True)
class _Pipes:
    """A child's ends of its pipes."""

    calls: Connection
    """From the parent: `Request`s and `Stop` (and, to the sending process, `SendText`)."""
    notes: Connection
    """Receive half to send half: written by the receiving process, read by the other."""
    events: Connection
    """To the parent: `Ready`, `Events`, `Reply`."""
    lifeline: Connection
    """End-of-file here means the parent is gone."""
    parent_end: Connection
    """The parent's end of the lifeline, closed first thing: under fork the child
    inherited it, under spawn it was handed a copy, and either would keep the lifeline
    from ever reporting the parent gone."""

    def close(self) -> None:
        for conn in (self.calls, self.notes, self.events, self.lifeline):
            conn.close()


def _child_setup(pipes: _Pipes) -> None:
    pipes.parent_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_parent(events: Connection) -> Callable[[list[Event]], None]:
    """A child's way to publish a flush's events: one message to the parent."""
    return lambda batch: events.send(Events(batch))


def _receiver_main(
    sock: socket.socket,
    listener: socket.socket | None,
    session: bytes,
    config: Config,
    history: Path | None,
    *,
    pipes: _Pipes,
) -> None:
    """Receiving process: sockets in, receive half, events onward, ACKs out (received
    messages stored first, with `history`)."""
    _child_setup(pipes)
    inbox = None
    if history is not None:
        from ..archive import Inbox  # this process's own connection to the history

        inbox = Inbox(history, chat_port=sock.getsockname()[1])
    try:
        receiver = Receiver(session, config, wall_offset=base.wall_offset())
        _receive_loop(sock, listener, receiver, pipes, inbox)
    finally:
        if inbox is not None:
            inbox.close()
        sock.close()
        if listener is not None:
            listener.close()
        pipes.close()


def _receive_loop(
    sock: socket.socket,
    listener: socket.socket | None,
    receiver: Receiver,
    pipes: _Pipes,
    inbox: Inbox | None,
) -> None:
    control, lifeline = pipes.calls, pipes.lifeline
    poller = select.poll()
    sockets = [sock] if listener is None else [sock, listener]
    for fd in [s.fileno() for s in sockets] + [control.fileno(), lifeline.fileno()]:
        poller.register(fd, select.POLLIN)
    # Events before ACKs: a message is acknowledged once the parent has it (it is in the
    # pipe), so that a receiving process killed in between never acknowledged a
    # message the chat did not get. The parent's close still waits for this flush.
    transmitter = Transmitter(
        sock.sendto,
        _to_parent(pipes.events),
        events_first=True,
        before=inbox.store if inbox is not None else None,
    )
    pipes.events.send(Ready())
    timer = receiver.get_timer()
    while True:
        wait_ms = None if timer is None else max(0, int((timer - time.monotonic()) * 1000) + 1)
        ready = {fd for fd, _ in poller.poll(wait_ms)}
        now = time.monotonic()
        if lifeline.fileno() in ready:
            return  # the parent is gone
        if control.fileno() in ready:
            try:
                message = control.recv()
            except EOFError:
                return
            match message:
                case Stop():
                    # What we received of each peer, for the sending process's BYEs.
                    pipes.notes.send([receiver.farewell()])
                    return
                case Request(request_id, Question.STATS):
                    pipes.events.send(Reply(request_id, receiver.stats))
                case Request(request_id, Question.PEERS):
                    pipes.events.send(Reply(request_id, receiver.peers()))
                case Unanswered(peers):
                    receiver.suspect(peers, now)
                case RoomKeyHeld(room, key):
                    receiver.set_room_key(room, key)
                case RawPeerAdded(peer, encoding):
                    receiver.add_raw_peer(peer, now, encoding)
        for readable in sockets:
            if readable.fileno() in ready:
                datagrams: list[tuple[bytes, Address]] = []
                read_queued(readable, datagrams)
                announced = readable is listener
                for data, source in datagrams:
                    receiver.receive_datagram(data, source, now, announced=announced)
        if timer is not None and timer <= now:
            receiver.handle_timer(now)
        flushed = base.flush(receiver, now)
        timer = flushed.timer
        # The notes go before the events: a command the parent sends after seeing an
        # event then finds the sending process told of what the event reports.
        _pass_notes(receiver, pipes.notes)
        transmitter.transmit(flushed)


def _pass_notes(receiver: Receiver, notes: Connection) -> None:
    batch = []
    while (note := receiver.next_note()) is not None:
        batch.append(note)
    if batch:
        notes.send(batch)


def _sender_main(
    sock: socket.socket,
    session: bytes,
    nick: str,
    config: Config,
    peers: list[Address],
    status: Any,
    *,
    pipes: _Pipes,
) -> None:
    """Sending process: calls and notes in, send half, DATA and probes out."""
    _child_setup(pipes)
    try:
        sender = Sender(session, nick, config, wall_offset=base.wall_offset())
        now = time.monotonic()
        for addr in peers:
            sender.add_peer(addr, now)
        _send_loop(sock, sender, status, pipes)
    finally:
        sock.close()
        pipes.close()


def _send_loop(sock: socket.socket, sender: Sender, status: Any, pipes: _Pipes) -> None:
    commands, notes, lifeline = pipes.calls, pipes.notes, pipes.lifeline
    outbox: list[object] = [Ready()]
    """What goes to the parent after this round's status is published."""
    drain_waiters: list[int] = []
    sends_done = 0
    stopping = False
    sources = [commands, notes, lifeline]
    transmitter = Transmitter(
        sock.sendto,
        _to_parent(pipes.events),
        quiet=quiet_addresses(sender.config.announce_to, sender.config),
    )
    while True:
        # A fresh clock: handling a backlog of queued sends can take longer than an RTO,
        # and stamping the window with the time we woke would make it all look overdue.
        now = time.monotonic()
        flushed = base.flush(sender, now)
        # The status first: a parent that has seen a delivery reads a pending count that
        # already counts it.
        status[_ACTIVE], status[_PENDING] = sender.active_peers(), sender.pending()
        status[_DONE] = sends_done
        transmitter.transmit(flushed)
        if sender.pending() == 0:
            outbox.extend(Reply(request_id, True) for request_id in drain_waiters)
            drain_waiters.clear()
        for message in outbox:
            pipes.events.send(message)
        outbox.clear()
        if stopping:
            return
        timer = flushed.timer
        timeout = None if timer is None else max(0.0, timer - time.monotonic())
        ready = multiprocessing.connection.wait(sources, timeout)
        now = time.monotonic()
        if lifeline in ready:
            stopping = True  # the parent is gone: say BYE and go
        if notes in ready and not _read_notes(notes, sender, now):
            sources.remove(notes)  # the receiving process has ended
        try:
            while commands in ready and commands.poll():
                message = commands.recv()
                # The receiving process writes a note before the event it goes with, so
                # a command the parent sent after seeing that event finds the note here.
                # Only a send with no peer yet, or a question, needs that: not every send
                # of a backlog of thousands.
                catch_up = not isinstance(message, SendText) or not sender.active_peers()
                if catch_up and notes in sources and not _read_notes(notes, sender, now):
                    sources.remove(notes)
                match message:
                    case SendText():
                        sends_done += 1
                        refusal = queue_message(sender, message, now)
                        if refusal is not None:
                            outbox.append(Events([refused(message, refusal)]))
                    case Request(request_id, SendText() as targeted):
                        sends_done += 1
                        outbox.append(Reply(request_id, queue_message(sender, targeted, now)))
                    case Request(request_id, Question.DELIVERED):
                        drain_waiters.append(request_id)
                    case Request(request_id, call):
                        outbox.append(Reply(request_id, _answer(sender, call, now)))
                    case Stop():
                        stopping = True
        except EOFError:
            stopping = True
        timer = sender.get_timer()
        if timer is not None and timer <= now:
            sender.handle_timer(now)
            unanswered = sender.take_unanswered()
            if unanswered:
                outbox.append(Unanswered(unanswered))
        if stopping:
            sender.close()


def _read_notes(notes: Connection, sender: Sender, now: float) -> bool:
    """Hand every note waiting in the pipe to the send half; False at end-of-file."""
    try:
        while notes.poll():
            for note in notes.recv():
                sender.handle_note(note, now)
    except EOFError:
        return False
    return True


def _answer(sender: Sender, call: Call, now: float) -> object:
    """Run one call from the parent; an error is returned for the parent to raise."""
    try:
        match call:
            case AddPeer(peer):
                sender.add_peer(peer, now)
            case RemovePeer(peer):
                sender.remove_peer(peer, now)
            case Cancel(message_id):
                return sender.cancel(message_id, now)
            case SetNick(nick):
                sender.set_nick(nick)
            case Join(room, key):
                return sender.join(room, now, key=key)
            case Leave(room):
                return sender.leave(room, now)
            case Question.STATS:
                return sender.stats
            case Question.TARGETS:
                return sender.targets()
            case Question.ACTIVE_PEERS:
                return sender.active_peers()
        return None
    except (LocalProtocolError, ValueError) as error:
        return error
