"""Discovery on real sockets, on loopback: the multicast interface is pinned to 127.0.0.1
(the runtimes do that for a chat bound there), so nothing leaves this machine.

Each test listens on a discovery port of its own, so a udpchat running on this machine
on the default port never hears the tests, nor they it.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest
from conftest import collect_messages, recorded, wait_for

from udpchat.protocol import PeerJoined
from udpchat.runtimes import MODELS, ChatRuntime, create_runtime
from udpchat.runtimes.sockets import AddressError

OpenChat = Callable[..., ChatRuntime]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def discovery_port() -> int:
    return free_port()


@pytest.fixture
def open_chat(discovery_port: int) -> Iterator[OpenChat]:
    with contextlib.ExitStack() as stack:

        def opener(model: str, nick: str, *, discovery: bool = True) -> ChatRuntime:
            runtime = recorded(
                create_runtime,
                model,
                nick,
                bind="127.0.0.1",
                port=0,
                discovery_port=discovery_port if discovery else None,
            )
            runtime.open()
            stack.callback(runtime.close)
            return runtime

        yield opener


def sees(runtime: ChatRuntime, nicks: set[str], timeout: float = 5.0) -> None:
    """Wait until `runtime` has reported every nick in `nicks` as joined."""
    left = set(nicks)
    while left:
        event = wait_for(runtime, lambda e: isinstance(e, PeerJoined), timeout)
        assert isinstance(event, PeerJoined)
        left.discard(event.nick)


MIXES = [pytest.param((m, m, m), id=m) for m in MODELS] + [
    pytest.param(tuple(MODELS), id="-".join(MODELS))
]


@pytest.mark.parametrize("models", MIXES)
def test_three_chats_with_no_peer_find_each_other_and_chat(
    models: tuple[str, str, str], open_chat: OpenChat
) -> None:
    nicks = ["ann", "ben", "cat"]
    chats = [open_chat(model, nick) for model, nick in zip(models, nicks, strict=True)]
    for chat, nick in zip(chats, nicks, strict=True):
        sees(chat, set(nicks) - {nick})
    chats[0].send("hello, everyone")
    assert collect_messages(chats[1], 1, timeout=10) == ["hello, everyone"]
    assert collect_messages(chats[2], 1, timeout=10) == ["hello, everyone"]
    assert chats[0].wait_delivered(timeout=10)
    for chat in chats:
        assert all(row.present for row in chat.peers())


@pytest.mark.parametrize("model", MODELS)
def test_a_chat_without_discovery_is_neither_found_nor_finds(
    model: str, open_chat: OpenChat
) -> None:
    hidden = open_chat(model, "hidden", discovery=False)
    first = open_chat(model, "first")
    second = open_chat(model, "second")
    sees(first, {"second"})  # announcements work; the hidden one was there all along
    sees(second, {"first"})
    assert [row.nick for row in first.peers() if row.present] == ["second"]
    assert hidden.peers() == []


@pytest.mark.parametrize("model", MODELS)
def test_a_discovery_port_taken_by_another_program_is_one_clear_error(
    model: str, discovery_port: int
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("0.0.0.0", discovery_port))  # without SO_REUSEADDR: exclusive
        runtime = create_runtime(
            model, "x", bind="127.0.0.1", port=0, discovery_port=discovery_port
        )
        with pytest.raises(AddressError, match="--no-discovery") as caught:
            runtime.open()
    assert "\n" not in str(caught.value)
