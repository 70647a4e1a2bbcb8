"""`udpchat bench`: the concurrency models compared on the same tasks.

Layout: `cli` (options, progress bar, output), `runner` (rounds and their order),
`scenarios` (throughput, latency, CPU-bound over a pair of peers), `resources` (real
chats started and left idle), `peer` (the worker process a peer runs in), `baseline`
(the raw socket), `work` (the CPU work), `measure` (/proc readings), `stats`, `aggregate`
and `table` (from rounds to the report), `claims` (micro-benchmarks of common claims about
threads, processes and coroutines) and `plot` (the chart; needs matplotlib). See docs/models.md.
"""

from .cli import main

__all__ = ["main"]
