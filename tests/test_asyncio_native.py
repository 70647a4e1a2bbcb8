"""The asyncio model as asyncio programs use it: `AsyncioChat` endpoints in one event loop.

Everything runs on 127.0.0.1 port 0. Every wait is bounded by `asyncio.wait_for`; nothing
sleeps for a fixed time. The last tests drive `AsyncioRuntime`, the same endpoint behind
the synchronous interface, where the generic suites (test_e2e, test_cli) do not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import pytest
import pytest_asyncio
from conftest import collect_messages, recorded, wait_for

from udpchat.protocol import (
    Address,
    Config,
    DeliveryFailed,
    Event,
    LeaveReason,
    MessageDelivered,
    MessageReceived,
    MessageTooLong,
    NoPeers,
    OutboxFull,
    PeerJoined,
    PeerLeft,
    wire,
)
from udpchat.runtimes import AddressError
from udpchat.runtimes.aio import AsyncioChat, AsyncioRuntime
from udpchat.runtimes.base import SendText
from udpchat.runtimes.thread import ThreadRuntime

TIMEOUT = 10.0
MESSAGES = 1000

OpenChat = Callable[..., Awaitable[AsyncioChat]]
E = TypeVar("E")


@pytest_asyncio.fixture
async def open_chat() -> AsyncIterator[OpenChat]:
    """Open `AsyncioChat`s on 127.0.0.1 port 0; all are closed at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def opener(
            nick: str, peers: tuple[Address, ...] = (), config: Config | None = None
        ) -> AsyncioChat:
            chat = AsyncioChat(nick, bind="127.0.0.1", port=0, peers=peers, config=config)
            return await stack.enter_async_context(chat)

        yield opener


async def wait_event(
    chat: AsyncioChat, kind: type[E], timeout: float = TIMEOUT, **fields: object
) -> E:
    """The first event of type `kind` with the given field values; fails after `timeout`."""

    async def first() -> E:
        while True:
            event = await chat.next_event()
            assert event is not None, "the chat closed"
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event

    try:
        return await asyncio.wait_for(first(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"no {kind.__name__} {fields or ''} within {timeout} s")


async def received_texts(chat: AsyncioChat, count: int, timeout: float = 60.0) -> list[str]:
    """Texts of the next `count` messages `chat` receives, in arrival order."""
    texts: list[str] = []

    async def collect() -> None:
        while len(texts) < count:
            event = await chat.next_event()
            assert event is not None, "the chat closed"
            if isinstance(event, MessageReceived):
                texts.append(event.text)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"only {len(texts)} of {count} messages within {timeout} s")
    return texts


async def connected_pair(open_chat: OpenChat) -> tuple[AsyncioChat, AsyncioChat]:
    """Alice, and Bob who was told of her; both have seen the other join."""
    alice = await open_chat("alice")
    bob = await open_chat("bob", peers=(alice.local_address,))
    await wait_event(alice, PeerJoined, nick="bob")
    await wait_event(bob, PeerJoined, nick="alice")
    return alice, bob


class Recorder(asyncio.DatagramProtocol):
    """A bound UDP endpoint that notes when each datagram arrived. It answers the first
    HELLO that asks for a reply, as a peer that then falls silent (a peer is sent DATA
    only once it has answered), and nothing else."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[tuple[float, wire.Datagram]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        record = wire.decode(data)
        self.arrivals.put_nowait((asyncio.get_running_loop().time(), record))
        if isinstance(record, wire.Hello) and record.wants_reply and not self.answered:
            self.answered = True
            assert self.transport is not None
            self.transport.sendto(
                wire.encode(wire.Hello(b"recorder", "mute", rooms=("lobby",))), addr
            )

    async def next_data(self, timeout: float = TIMEOUT) -> tuple[float, wire.Data]:
        """Arrival time and record of the next DATA datagram (HELLOs are skipped)."""

        async def first() -> tuple[float, wire.Data]:
            while True:
                when, record = await self.arrivals.get()
                if isinstance(record, wire.Data):
                    return when, record

        return await asyncio.wait_for(first(), timeout)


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[tuple[Recorder, Address]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        yield protocol, (host, port)
    finally:
        transport.close()


# -- two AsyncioChats in one loop ----------------------------------------------


@pytest.mark.asyncio
async def test_thousand_messages_each_way_arrive_once_and_in_order(open_chat: OpenChat) -> None:
    alice, bob = await connected_pair(open_chat)
    sent_by_alice = [f"a{i} 你好" for i in range(MESSAGES)]
    sent_by_bob = [f"b{i} 🙂" for i in range(MESSAGES)]
    for mine, theirs in zip(sent_by_alice, sent_by_bob, strict=True):
        alice.send(mine)
        bob.send(theirs)
    assert await received_texts(bob, MESSAGES) == sent_by_alice
    assert await received_texts(alice, MESSAGES) == sent_by_bob
    assert await alice.wait_delivered(60) and await bob.wait_delivered(60)
    for chat in (alice, bob):
        stats = chat.stats()
        assert stats.messages_received == MESSAGES  # the core counts every message it shows
        assert stats.messages_delivered == MESSAGES and stats.messages_failed == 0
        assert chat.pending() == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text",
    ["你好，世界。こんにちは、안녕하세요", "中文字" * 6667],
    ids=["cjk", "cjk-60kb-fragmented"],
)
async def test_text_arrives_byte_for_byte_even_when_fragments_cut_characters(
    open_chat: OpenChat, text: str
) -> None:
    alice, bob = await connected_pair(open_chat)
    message_id = alice.send(text)
    message = await wait_event(bob, MessageReceived)
    assert message.text == text and message.nick == "alice"
    delivered = await wait_event(alice, MessageDelivered, message_id=message_id)
    assert delivered.peer == bob.local_address
    # At most 1,168 bytes of text per datagram: 60,003 bytes take over 50.
    assert alice.stats().data_sent >= -(-len(text.encode("utf-8")) // 1168)


@pytest.mark.asyncio
async def test_peer_that_closes_is_reported_as_left_with_reason_bye(open_chat: OpenChat) -> None:
    alice, bob = await connected_pair(open_chat)
    await bob.aclose()
    left = await wait_event(alice, PeerLeft)
    assert left.reason is LeaveReason.BYE and left.nick == "bob" and left.peer == bob.local_address


@pytest.mark.asyncio
async def test_message_to_a_silent_socket_fails_after_the_give_up_time(
    open_chat: OpenChat,
) -> None:
    async with recorder() as (_, address):  # answers one HELLO, then nothing
        alice = await open_chat("alice", peers=(address,), config=Config(give_up_after=0.5))
        await wait_event(alice, PeerJoined)
        message_id = alice.send("anyone?")
        failed = await wait_event(alice, DeliveryFailed)
    assert failed.message_id == message_id and failed.elapsed >= 0.5
    assert alice.stats().retransmissions >= 1
    assert alice.pending() == 0
    assert await alice.wait_delivered(0.1)


@pytest.mark.asyncio
async def test_timer_is_rearmed_earlier_when_a_send_needs_it_sooner(open_chat: OpenChat) -> None:
    rto = 0.2
    async with recorder() as (silent, address):
        alice = await open_chat("alice", peers=(address,), config=Config(initial_rto=rto))
        hello_at, hello = await asyncio.wait_for(silent.arrivals.get(), TIMEOUT)
        assert isinstance(hello, wire.Hello)
        await wait_event(alice, PeerJoined)
        # Idle now: the only timer armed is the next PING, 15 s after the answer.
        assert alice._timer_at == alice._core.get_timer()
        alice.send("are you there?")
        first_at, first = await silent.next_data()
        again_at, again = await silent.next_data()
        # The retransmission follows the RTO, not the HELLO timer armed before the send.
        assert again.seq == first.seq == 0
        assert rto * 0.9 <= again_at - first_at < hello_at + 0.9 - first_at
        third_at, third = await silent.next_data()
        assert third.seq == 0 and third_at - again_at >= 2 * rto * 0.9  # backed off
    assert alice.stats().retransmissions >= 2


@pytest.mark.asyncio
async def test_chat_without_peers_arms_no_timer(open_chat: OpenChat) -> None:
    alice = await open_chat("alice")
    assert alice._timer is None and alice._core.get_timer() is None


@pytest.mark.asyncio
async def test_aclose_is_idempotent_closes_the_socket_and_ends_next_event(
    open_chat: OpenChat,
) -> None:
    alice = await open_chat("alice")
    transport, sock = alice._transport, alice._sock
    assert transport is not None and sock is not None
    await asyncio.gather(alice.aclose(), alice.aclose())
    await alice.aclose()
    assert transport.is_closing() and sock.fileno() == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(alice.local_address)  # the port is free again
    assert await asyncio.wait_for(alice.next_event(), 1.0) is None
    assert await asyncio.wait_for(alice.next_event(timeout=None), 1.0) is None


@pytest.mark.asyncio
async def test_a_waiting_consumer_is_woken_by_aclose(open_chat: OpenChat) -> None:
    alice = await open_chat("alice")
    waiting = asyncio.ensure_future(alice.next_event())
    await asyncio.sleep(0)  # let it start waiting
    await alice.aclose()
    assert await asyncio.wait_for(waiting, 1.0) is None


@pytest.mark.asyncio
async def test_transport_reads_into_64_kib_not_the_default_256(open_chat: OpenChat) -> None:
    alice = await open_chat("alice")
    assert getattr(alice._transport, "max_size", None) == 65536


@pytest.mark.asyncio
async def test_icmp_style_errors_are_ignored(open_chat: OpenChat) -> None:
    alice, bob = await connected_pair(open_chat)
    alice.error_received(ConnectionRefusedError(111, "Connection refused"))
    alice.send("still here")
    message = await wait_event(bob, MessageReceived)
    assert message.text == "still here"


@pytest.mark.asyncio
async def test_send_errors_are_raised_at_once(open_chat: OpenChat) -> None:
    alice = await open_chat("alice")
    with pytest.raises(NoPeers):
        alice.send("hello?")
    alice.add_peer(("127.0.0.1", 9))
    with pytest.raises(MessageTooLong):
        alice.send("x" * 65537)
    assert alice.pending() == 0


@pytest.mark.asyncio
async def test_events_go_to_the_sink_when_one_is_given(open_chat: OpenChat) -> None:
    alice = await open_chat("alice")
    seen: list[Event] = []
    joined = asyncio.Event()

    def sink(event: Event) -> None:
        seen.append(event)
        joined.set()

    chat = AsyncioChat("bob", bind="127.0.0.1", peers=(alice.local_address,), on_event=sink)
    async with chat:
        await asyncio.wait_for(joined.wait(), TIMEOUT)
        assert isinstance(seen[0], PeerJoined) and seen[0].nick == "alice"
        with pytest.raises(RuntimeError):
            await chat.next_event(timeout=0)


@pytest.mark.asyncio
async def test_port_in_use_is_the_one_line_address_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(AddressError, match=f"UDP port {port} on 127.0.0.1 is already in use"):
            async with AsyncioChat("alice", bind="127.0.0.1", port=port):
                pass


# -- with the thread model -----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("who_greets", ["asyncio", "thread"])
async def test_asyncio_and_thread_models_chat_both_ways(
    open_chat: OpenChat, who_greets: str
) -> None:
    threaded = recorded(ThreadRuntime, "tom", bind="127.0.0.1")
    threaded.open()
    try:
        if who_greets == "asyncio":
            chat = await open_chat("ada", peers=(threaded.local_address,))
        else:
            chat = await open_chat("ada")
            threaded.add_peer(chat.local_address)
        await wait_event(chat, PeerJoined, nick="tom")
        count = 200
        for i in range(count):
            chat.send(f"ada {i} 你好")
            threaded.send(f"tom {i} 🙂")
        assert await received_texts(chat, count) == [f"tom {i} 🙂" for i in range(count)]
        texts = await asyncio.to_thread(collect_messages, threaded, count, 30.0)
        assert texts == [f"ada {i} 你好" for i in range(count)]
        assert await chat.wait_delivered(30)
        assert await asyncio.to_thread(threaded.wait_delivered, 30)
    finally:
        await asyncio.to_thread(threaded.close)
    left = await wait_event(chat, PeerLeft)
    assert left.reason is LeaveReason.BYE and left.nick == "tom"


# -- AsyncioRuntime: the same endpoint behind the synchronous interface ------------


def _udpchat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("udpchat")]


def test_runtime_open_raises_address_error_in_the_caller_and_leaves_no_thread() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        runtime = AsyncioRuntime("alice", bind="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(AddressError, match="already in use"):
            runtime.open()
    assert not _udpchat_threads()
    runtime.close()  # harmless after a failed open


def test_runtime_send_errors_reach_the_caller() -> None:
    with AsyncioRuntime("alice", bind="127.0.0.1") as runtime:
        with pytest.raises(NoPeers):
            runtime.send("hello?")
        runtime.add_peer(("127.0.0.1", 9))
        with pytest.raises(MessageTooLong):
            runtime.send("你" * 30000)
        assert runtime.pending() == 0
        assert [status.peer for status in runtime.peers()] == [("127.0.0.1", 9)]


class ThreadsSeen:
    """Stands in for a chat's core and notes the thread of every call made to it."""

    def __init__(self, core: object) -> None:
        self._core = core
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._core, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.current_thread().name)
            return attribute(*args, **kwargs)

        return call


def test_runtime_touches_the_chat_only_on_the_loop_thread() -> None:
    with AsyncioRuntime("alice", bind="127.0.0.1") as alice:
        bob = recorded(AsyncioRuntime, "bob", bind="127.0.0.1", peers=(alice.local_address,))
        stack = contextlib.ExitStack()
        stack.enter_context(bob)
        seen = ThreadsSeen(bob._chat._core)
        bob._chat._core = seen  # type: ignore[assignment]
        bob.add_peer(alice.local_address)
        bob.set_nick("robert")
        bob.send("hello")
        with pytest.raises(NoPeers):
            bob.send("to nobody", to=[("127.0.0.1", 9)])
        assert bob.wait_delivered(TIMEOUT)
        assert bob.pending() == 0 and bob.stats().messages_delivered == 1
        assert [row.peer for row in bob.peers()] == [alice.local_address]
        stack.close()
    assert seen.threads == {"udpchat-asyncio"}


@contextlib.contextmanager
def loop_held(runtime: AsyncioRuntime) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Keep the runtime's loop busy until the block ends, so that whatever the caller hands
    it waits; `then(f)` runs f on the loop just before it is let go."""
    assert runtime._loop is not None
    holding, release = threading.Event(), threading.Event()
    last: list[Callable[[], None]] = []

    def hold() -> None:
        holding.set()
        release.wait(TIMEOUT)
        for function in last:
            function()

    runtime._loop.call_soon_threadsafe(hold)
    assert holding.wait(TIMEOUT)
    try:
        yield last.append
    finally:
        release.set()


class Batches:
    """Wraps `AsyncioChat.send_queued` and records the size of each batch it is given."""

    def __init__(self, chat: AsyncioChat) -> None:
        self.sizes: list[int] = []
        self._send_queued = chat.send_queued
        chat.send_queued = self  # type: ignore[method-assign]

    def __call__(self, messages: Iterable[SendText]) -> None:
        batch = list(messages)
        self.sizes.append(len(batch))
        self._send_queued(batch)


def test_runtime_send_to_everyone_queues_without_waiting_and_wakes_the_loop_once() -> None:
    with recorded(AsyncioRuntime, "alice", bind="127.0.0.1") as alice:
        bob = recorded(AsyncioRuntime, "bob", bind="127.0.0.1", peers=(alice.local_address,))
        with bob:
            wait_for(bob, lambda e: isinstance(e, PeerJoined))
            batches = Batches(bob._chat)
            with loop_held(bob):
                # The loop is busy: a send that waited for it would never return here.
                ids = [bob.send(f"m{i}") for i in range(50)]
                assert bob.pending() == 50
            assert ids == list(range(ids[0], ids[0] + 50))
            assert bob.wait_delivered(TIMEOUT)
            assert batches.sizes == [50]
            delivered = [wait_for(bob, lambda e: isinstance(e, MessageDelivered)) for _ in ids]
            assert sorted(cast(MessageDelivered, e).message_id for e in delivered) == ids
            assert collect_messages(alice, 50) == [f"m{i}" for i in range(50)]


def test_runtime_send_refuses_a_full_outbox_in_the_caller() -> None:
    alice = AsyncioRuntime("alice", bind="127.0.0.1", config=Config(max_pending=3))
    with alice:
        alice.add_peer(("127.0.0.1", 9))  # never answers
        with loop_held(alice):
            for i in range(3):
                alice.send(f"m{i}")
            with pytest.raises(OutboxFull):
                alice.send("one too many")
        assert alice.pending() == 3


def test_runtime_message_refused_after_it_was_queued_fails_with_no_peer() -> None:
    nobody = ("127.0.0.1", 9)
    alice = recorded(AsyncioRuntime, "alice", bind="127.0.0.1", peers=(nobody,))
    with alice:
        with loop_held(alice) as then:
            message_id = alice.send("to whoever is left")
            then(lambda: alice._chat.remove_peer(nobody))  # the last peer goes first
        failed = wait_for(alice, lambda e: isinstance(e, DeliveryFailed))
        assert failed == DeliveryFailed(
            message_id=message_id, peer=None, elapsed=0.0, reason="nobody else is in #lobby"
        )
        assert alice.pending() == 0


def test_runtime_takes_sends_from_several_threads_at_once() -> None:
    senders, each = 4, 250
    with (
        recorded(AsyncioRuntime, "alice", bind="127.0.0.1") as alice,
        AsyncioRuntime("bob", bind="127.0.0.1", peers=(alice.local_address,)) as bob,
    ):
        threads = [
            threading.Thread(target=lambda n=n: [bob.send(f"{n}:{i}") for i in range(each)])
            for n in range(senders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        texts = collect_messages(alice, senders * each, 30.0)
        assert bob.wait_delivered(TIMEOUT) and bob.stats().messages_delivered == senders * each
    assert sorted(texts) == sorted(f"{n}:{i}" for n in range(senders) for i in range(each))
    for n in range(senders):  # each thread's messages arrive in the order it sent them
        assert [t for t in texts if t.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(each)]


def test_runtime_close_is_idempotent_and_ends_the_loop_thread() -> None:
    seen: list[Event] = []
    runtime = AsyncioRuntime("alice", bind="127.0.0.1", on_event=seen.append)
    runtime.open()
    assert _udpchat_threads() == ["udpchat-asyncio"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tool:
        tool.sendto(b"not udpchat", runtime.local_address)
        runtime.close()  # how long it takes is measured by `udpchat bench`, not here
        runtime.close()
        after_close = len(seen)
        tool.sendto(b"not udpchat either", runtime.local_address)
    assert not _udpchat_threads()  # so nothing is left that could call on_event
    assert len(seen) == after_close


def test_runtime_open_and_close_leave_no_resource_warnings() -> None:
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("always")
        from udpchat.runtimes import AsyncioRuntime
        with AsyncioRuntime("alice", bind="127.0.0.1") as alice:
            for _ in range(3):
                with AsyncioRuntime("bob", bind="127.0.0.1", peers=(alice.local_address,)):
                    pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "unclosed" not in result.stderr, result.stderr
