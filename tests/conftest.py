"""Shared fixtures: runtimes of every model on 127.0.0.1 port 0, and event helpers.

Every wait here has a timeout; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest

from udpchat.protocol import Address, Config, Event, MessageReceived
from udpchat.runtimes import MODELS, ChatRuntime, create_runtime

OpenRuntime = Callable[..., ChatRuntime]

# The virtual LAN's `open_lan` fixture, for every module that runs hosts in namespaces.
pytest_plugins = ["lan"]


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_runtime() -> Iterator[OpenRuntime]:
    """Open runtimes on 127.0.0.1 port 0; all are closed at the end of the test."""
    with contextlib.ExitStack() as stack:

        def opener(
            model: str,
            nick: str,
            peers: tuple[Address, ...] = (),
            config: Config | None = None,
        ) -> ChatRuntime:
            runtime = create_runtime(
                model, nick, bind="127.0.0.1", port=0, peers=peers, config=config
            )
            runtime.open()
            stack.callback(runtime.close)
            return runtime

        yield opener


def wait_for(
    runtime: ChatRuntime, predicate: Callable[[Event], bool], timeout: float = 10.0
) -> Event:
    """The first event matching `predicate`; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = runtime.get_event(timeout=left)
        if event is not None and predicate(event):
            return event
    pytest.fail(f"no matching event within {timeout} s")


def collect_messages(runtime: ChatRuntime, count: int, timeout: float = 60.0) -> list[str]:
    """Texts of the next `count` messages received, in arrival order."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while len(texts) < count and (left := deadline - time.monotonic()) > 0:
        event = runtime.get_event(timeout=left)
        if isinstance(event, MessageReceived):
            texts.append(event.text)
    assert len(texts) == count, f"only {len(texts)} of {count} messages within {timeout} s"
    return texts
