"""The process model: the parent's one UDP socket shared by a receiving process and a
sending process, which talk through multiprocessing Pipes.

The core is split along its seam. The receiving process runs the receive half
(`Receiver`: decoding, duplicates, ordering, ACKs and PONGs, which it sends itself) and
passes its notes (ACK news, peers) to the sending process. The sending process runs the
send half (`Sender`: outbox, retransmission, probes). Both send their events to the
parent, where one thread reads the children's pipes and calls the caller's `on_event`.

Why Pipes: a one-way Pipe hop costs 3.0 µs here against 4.5 µs for an mp.Queue
(`docs/models.md`), and a Pipe needs no feeder thread and no semaphore, so nothing can
leak. `send()` is fire-and-forget (a request/response round trip would cost 53 µs per
message): the parent checks what it can before sending (the text's length, and the
peers and outbox sizes that the sending process publishes in shared memory), and the
rare message the sending process still cannot queue comes back as DeliveryFailed.

Lifetime: each child watches a lifeline pipe whose only writer is the parent, so when
the parent dies, even by SIGKILL, both children see end-of-file and exit (the sending
one after saying BYE). Children ignore SIGINT: Ctrl-C reaches the whole process group,
and shutting down is the parent's decision. Works under fork, spawn and forkserver.
"""

from __future__ import annotations

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
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ..protocol import (
    Address,
    Config,
    DeliveryFailed,
    Event,
    LocalProtocolError,
    NoPeers,
    OutboxFull,
    PeerStatus,
    Receiver,
    Sender,
    Stats,
    encode_text,
    merge_peers,
)
from . import base
from .base import RuntimeBase, Transmitter
from .sockets import read_queued

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .base import RuntimeOptions

_JOIN_TIMEOUT = 0.5
_START_TIMEOUT = 30.0
_RPC_TIMEOUT = 5.0
# Slots of the status array the sending process publishes.
_ACTIVE, _PENDING, _DONE = 0, 1, 2


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
        self._start_method = start_method or os.environ.get("UDPCHAT_START_METHOD") or None
        self._sock: socket.socket | None = None
        self._replies: dict[int, queue.SimpleQueue[Any]] = {}
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
            args=(sock, session, self._config, control_r, notes_w, receiver_events),
            kwargs={"lifeline": lifeline_r, "parent_end": self._lifeline},
            name="udpchat-receive",
            daemon=True,
        )
        self._sender = ctx.Process(
            target=_sender_main,
            args=(sock, session, self._nick, self._config, self._initial_peers),
            kwargs={
                "commands": commands_r,
                "notes": notes_r,
                "events": sender_events,
                "status": self._status,
                "lifeline": lifeline_r,
                "parent_end": self._lifeline,
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
        for conn, process in ((self._commands, self._sender), (self._control, self._receiver)):
            try:
                conn.send(("stop",))
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
        for waiter in list(self._replies.values()):
            waiter.put(None)  # wakes every call still waiting, wait_delivered included
        self._outlet.shut()

    def send(self, text: str, to: Sequence[Address] | None = None) -> int:
        if self._sock is None or self._closing:
            raise RuntimeError("not open")
        encode_text(text)  # MessageTooLong, before anything crosses a pipe
        status = self._status
        # The snapshot can lag: we may have seen a PeerJoined whose note the sending
        # process has not read yet. Only a "no" is worth a round trip to confirm.
        if status[_ACTIVE] == 0 and not self._call(self._commands, "active_peers", default=0):
            raise NoPeers("no peer to send to")
        with self._send_lock:
            unprocessed = self._sends_issued - status[_DONE]
            if status[_PENDING] + unprocessed * status[_ACTIVE] >= self._config.max_pending:
                raise OutboxFull(
                    f"outbox full: {status[_PENDING]} messages are waiting for delivery"
                )
            message_id = self._next_message_id
            self._next_message_id += 1
            self._sends_issued += 1
            self._commands.send(
                ("send", message_id, text, base.wall_clock_ms(), base.as_targets(to))
            )
        return message_id

    def add_peer(self, addr: Address) -> None:
        self._call(self._commands, "add_peer", addr)

    def remove_peer(self, addr: Address) -> None:
        self._call(self._commands, "remove_peer", addr)

    def set_nick(self, nick: str) -> None:
        self._call(self._commands, "set_nick", nick)
        self._nick = nick

    def wait_delivered(self, timeout: float) -> bool:
        """True once nothing is pending; False on timeout, or at once after `close`."""
        if self._closing:
            return False
        return bool(self._call(self._commands, "drain", timeout=timeout, default=False))

    def pending(self) -> int:
        status = self._status
        return int(status[_PENDING]) + max(0, self._sends_issued - int(status[_DONE]))

    def stats(self) -> Stats:
        sent: Stats = self._call(self._commands, "stats", default=Stats())
        received: Stats = self._call(self._control, "stats", default=Stats())
        return sent + received

    def peers(self) -> list[PeerStatus]:
        targets = self._call(self._commands, "targets", default=[])
        heard = self._call(self._control, "peers", default=[])
        return merge_peers(targets, heard, time.monotonic())

    # -- parent side plumbing -------------------------------------------------

    def _call(
        self,
        conn: Connection,
        name: str,
        *args: object,
        timeout: float = _RPC_TIMEOUT,
        default: Any = None,
    ) -> Any:
        """Ask a child and wait for its answer; re-raise an error it reports."""
        request = next(self._request_ids)
        answer: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._replies[request] = answer
        try:
            with self._send_lock:
                conn.send((name, request, *args))
            result = answer.get(timeout=timeout)
        except (OSError, queue.Empty):
            return default  # closed, or no answer in time
        finally:
            self._replies.pop(request, None)
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
                kind = message[0]
                if kind == "events":
                    self._outlet.publish(message[1])
                elif kind == "reply":
                    waiter = self._replies.get(message[1])
                    if waiter is not None:
                        waiter.put(message[2])
                elif kind == "ready":
                    self._ready[id(conn)].put(True)
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


# -- the children ---------------------------------------------------------------


def _child_setup(parent_end: Connection) -> None:
    # Under fork we inherited the parent's end of the lifeline; under spawn we were
    # handed a copy. Either way it must go, or the lifeline never reports the parent gone.
    parent_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_parent(events: Connection) -> Callable[[list[Event]], None]:
    """A child's way to publish events: one message to the parent per flush."""
    return lambda batch: events.send(("events", batch))


def _receiver_main(
    sock: socket.socket,
    session: bytes,
    config: Config,
    control: Connection,
    notes: Connection,
    events: Connection,
    *,
    lifeline: Connection,
    parent_end: Connection,
) -> None:
    """Receiving process: socket in, receive half, ACKs out, notes and events onward."""
    _child_setup(parent_end)
    try:
        receiver = Receiver(session, config, wall_offset=base.wall_offset())
        _receive_loop(sock, receiver, control, notes, events, lifeline)
    finally:
        for resource in (sock, control, notes, events, lifeline):
            resource.close()


def _receive_loop(
    sock: socket.socket,
    receiver: Receiver,
    control: Connection,
    notes: Connection,
    events: Connection,
    lifeline: Connection,
) -> None:
    poller = select.poll()
    for fd in (sock.fileno(), control.fileno(), lifeline.fileno()):
        poller.register(fd, select.POLLIN)
    transmitter = Transmitter(sock.sendto, _to_parent(events))
    events.send(("ready",))
    timer = receiver.get_timer()
    while True:
        wait_ms = None if timer is None else max(0, int((timer - time.monotonic()) * 1000) + 1)
        ready = {fd for fd, _ in poller.poll(wait_ms)}
        now = time.monotonic()
        if lifeline.fileno() in ready:
            return  # the parent is gone
        if control.fileno() in ready:
            try:
                request = control.recv()
            except EOFError:
                return
            if request[0] == "stop":
                return
            answer = receiver.stats if request[0] == "stats" else receiver.peers()
            events.send(("reply", request[1], answer))
        if sock.fileno() in ready:
            datagrams: list[tuple[bytes, Address]] = []
            read_queued(sock, datagrams)
            for data, source in datagrams:
                receiver.receive_datagram(data, source, now)
        if timer is not None and timer <= now:
            receiver.handle_timer(now)
        flushed = base.flush(receiver, now)
        timer = flushed.timer
        # The notes go before the events: a command the parent sends after seeing an
        # event then finds the sending process told of what the event reports.
        _pass_notes(receiver, notes)
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
    *,
    commands: Connection,
    notes: Connection,
    events: Connection,
    status: Any,
    lifeline: Connection,
    parent_end: Connection,
) -> None:
    """Sending process: commands and notes in, send half, DATA and probes out."""
    _child_setup(parent_end)
    try:
        sender = Sender(session, nick, config, wall_offset=base.wall_offset())
        _send_loop(sock, sender, peers, commands, notes, events, status, lifeline)
    finally:
        for resource in (sock, commands, notes, events, lifeline):
            resource.close()


def _send_loop(
    sock: socket.socket,
    sender: Sender,
    peers: list[Address],
    commands: Connection,
    notes: Connection,
    events: Connection,
    status: Any,
    lifeline: Connection,
) -> None:
    now = time.monotonic()
    for addr in peers:
        sender.add_peer(addr, now)
    outbox: list[tuple[Any, ...]] = [("ready",)]
    """What goes to the parent after this round's status is published."""
    drain_waiters: list[int] = []
    sends_done = 0
    stopping = False
    sources = [commands, notes, lifeline]
    transmitter = Transmitter(sock.sendto, _to_parent(events))
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
            outbox.extend(("reply", request, True) for request in drain_waiters)
            drain_waiters.clear()
        for message in outbox:
            events.send(message)
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
                request = commands.recv()
                # The receiving process writes a note before the event it goes with, so
                # a command the parent sent after seeing that event finds the note here.
                # Only a send with no peer yet, or a question, needs that: not every send
                # of a backlog of thousands.
                catch_up = request[0] != "send" or not sender.active_peers()
                if catch_up and notes in sources and not _read_notes(notes, sender, now):
                    sources.remove(notes)
                if request[0] == "send":
                    sends_done += 1
                    refusal = _queue_message(sender, request, now)
                    if refusal is not None:
                        outbox.append(("events", [refusal]))
                elif request[0] == "stop":
                    stopping = True
                elif request[0] == "drain":
                    drain_waiters.append(request[1])
                else:
                    outbox.append(("reply", request[1], _answer(sender, request, now)))
        except EOFError:
            stopping = True
        timer = sender.get_timer()
        if timer is not None and timer <= now:
            sender.handle_timer(now)
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


def _queue_message(sender: Sender, request: tuple[Any, ...], now: float) -> Event | None:
    """Hand one message to the send half; a DeliveryFailed if it cannot take it."""
    _, message_id, text, sent_at_ms, to = request
    try:
        sender.send_message(text, now, sent_at_ms=sent_at_ms, to=to, message_id=message_id)
    except LocalProtocolError as error:
        return DeliveryFailed(message_id=message_id, peer=None, elapsed=0.0, reason=str(error))
    return None


def _answer(sender: Sender, request: tuple[Any, ...], now: float) -> object:
    """Run one request from the parent; an error is returned for the parent to raise."""
    name, _, *args = request
    try:
        if name == "add_peer":
            sender.add_peer(args[0], now)
        elif name == "remove_peer":
            sender.remove_peer(args[0], now)
        elif name == "set_nick":
            sender.set_nick(args[0])
        elif name == "stats":
            return sender.stats
        elif name == "targets":
            return sender.targets()
        elif name == "active_peers":
            return sender.active_peers()
        return None
    except (LocalProtocolError, ValueError) as error:
        return error
