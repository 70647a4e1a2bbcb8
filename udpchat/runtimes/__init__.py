"""The concurrency models, each a thin layer of I/O around the same protocol core.

`create_runtime(model, ...)` is the one way the CLI, the UI and the benchmark make one;
they use it only through the `ChatRuntime` interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..protocol import Address, Config
from .aio import AsyncioChat, AsyncioRuntime
from .base import DEFAULT_PORT, AddressError, ChatRuntime, bind_socket, resolve_peer
from .process import ProcessRuntime
from .thread import ThreadRuntime

MODELS = ("thread", "process", "asyncio")
"""Names accepted by `--model`, in the order the docs present them."""


def create_runtime(
    model: str,
    nick: str,
    *,
    bind: str = "0.0.0.0",
    port: int = 0,
    peers: Sequence[Address] = (),
    config: Config | None = None,
) -> ChatRuntime:
    """A runtime of the named model, not yet open. ValueError for an unknown model."""
    if model == "thread":
        return ThreadRuntime(nick, bind=bind, port=port, peers=peers, config=config)
    if model == "process":
        return ProcessRuntime(nick, bind=bind, port=port, peers=peers, config=config)
    if model == "asyncio":
        return AsyncioRuntime(nick, bind=bind, port=port, peers=peers, config=config)
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


__all__ = [
    "DEFAULT_PORT",
    "MODELS",
    "AddressError",
    "AsyncioChat",
    "AsyncioRuntime",
    "ChatRuntime",
    "ProcessRuntime",
    "ThreadRuntime",
    "bind_socket",
    "create_runtime",
    "resolve_peer",
]
