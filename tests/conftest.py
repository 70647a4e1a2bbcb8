"""Shared fixtures: runtimes of every model on 127.0.0.1 port 0, and event helpers.

A runtime pushes its events to the callback it was made with; `recorded` makes one whose
callback records them in a queue of its own, which `wait_for`, `collect_messages` and
`next_event` read. Every wait here has a timeout; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import queue
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from udpchat.protocol import Address, Config, Event, MessageReceived
from udpchat.runtimes import MODELS, ChatRuntime, create_runtime

OpenRuntime = Callable[..., ChatRuntime]
R = TypeVar("R")


class EventLog:
    """A runtime's `on_event`: records every event, in order, for the test to read."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def __call__(self, event: Event) -> None:
        self._events.put(event)

    def next(self, timeout: float) -> Event | None:
        """The next event, waiting up to `timeout` seconds; None if none came."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


_LOGS: weakref.WeakKeyDictionary[Any, EventLog] = weakref.WeakKeyDictionary()


def recorded(make: Callable[..., R], *args: Any, **options: Any) -> R:
    """`make(*args, **options, on_event=...)` (a runtime class, or `create_runtime`), its
    events recorded for `wait_for`, `collect_messages` and `next_event`."""
    log = EventLog()
    runtime = make(*args, **options, on_event=log)
    _LOGS[runtime] = log
    return runtime


def next_event(runtime: object, timeout: float) -> Event | None:
    """The next event `runtime` reported, waiting up to `timeout` s; None if none came."""
    return _LOGS[runtime].next(timeout)


# The virtual LAN's `open_lan` fixture, for every module that runs hosts in namespaces.
pytest_plugins = ["lan"]


@pytest.fixture(autouse=True)
def private_xdg_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test, and every udpchat it starts, keeps its state (the instance id) and data
    in folders of its own, never in the user's."""
    root = tmp_path_factory.mktemp("xdg")
    for name in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(root / name.lower()))


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
            runtime = recorded(
                create_runtime, model, nick, bind="127.0.0.1", port=0, peers=peers, config=config
            )
            runtime.open()
            stack.callback(runtime.close)
            return runtime

        yield opener


def wait_for(runtime: object, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
    """The first event matching `predicate`; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = next_event(runtime, left)
        if event is not None and predicate(event):
            return event
    pytest.fail(f"no matching event within {timeout} s")


def collect_messages(runtime: object, count: int, timeout: float = 60.0) -> list[str]:
    """Texts of the next `count` messages received, in arrival order."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while len(texts) < count and (left := deadline - time.monotonic()) > 0:
        event = next_event(runtime, left)
        if isinstance(event, MessageReceived):
            texts.append(event.text)
    assert len(texts) == count, f"only {len(texts)} of {count} messages within {timeout} s"
    return texts
