"""The concurrency models, each a thin layer of I/O around the same protocol core.

`create_runtime(model, ...)` is the one way the CLI, the UI and the benchmark make one;
they use it only through the `ChatRuntime` interface. Only the chosen model's module is
imported: asyncio alone costs a chat start-up time and memory it has no use for in
another model (docs/models.md, "Figures behind the runtimes").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import ChatRuntime, EventCallback, RuntimeOptions
from .sockets import DEFAULT_PORT, AddressError, bind_socket, resolve_peer

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .aio import AsyncioChat, AsyncioRuntime
    from .process import ProcessRuntime
    from .thread import ThreadRuntime

_MODELS = {
    "thread": (".thread", "ThreadRuntime"),
    "process": (".process", "ProcessRuntime"),
    "asyncio": (".aio", "AsyncioRuntime"),
}
"""Each model, by the name `--model` takes: its module and its `ChatRuntime` class. The one
place a model is added; everything else (`--model`, the UI, the benchmark, the tests that
run over every model) finds it here."""

MODELS = tuple(_MODELS)
"""Names accepted by `--model`, in the order the docs present them."""

_CLASSES = {name: module for module, name in _MODELS.values()} | {"AsyncioChat": ".aio"}


def __getattr__(name: str) -> Any:
    """Import a model's module the first time one of its classes is asked for."""
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create_runtime(model: str, nick: str, **options: Unpack[RuntimeOptions]) -> ChatRuntime:
    """A runtime of the named model, not yet open. The options (`bind`, `port`, `peers`,
    `config`, `on_event`) are those of `base.Endpoint`; `on_event` is called with every
    event, under the contract stated in `base`. ValueError for an unknown model."""
    if model not in _MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    module, name = _MODELS[model]
    runtime: ChatRuntime = getattr(importlib.import_module(module, __name__), name)(nick, **options)
    return runtime


__all__ = [
    "DEFAULT_PORT",
    "MODELS",
    "AddressError",
    "AsyncioChat",
    "AsyncioRuntime",
    "ChatRuntime",
    "EventCallback",
    "ProcessRuntime",
    "RuntimeOptions",
    "ThreadRuntime",
    "bind_socket",
    "create_runtime",
    "resolve_peer",
]
