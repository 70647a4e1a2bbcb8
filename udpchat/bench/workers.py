"""The coordinator's handle on a peer process: start it, talk to it, end it.

Each peer is `sys.executable -m udpchat.bench.peer ...`, a real interpreter of its own
(two peers must not share one GIL). A reader thread turns its stdout into a queue of
JSON messages, so that every wait here has a timeout; its stderr goes to a temporary
file, shown in the error when the peer fails.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

_EXIT_TIMEOUT = 5.0
"""How long a peer may take to close its runtime and exit after `quit`."""


class PeerError(RuntimeError):
    """A peer did not answer in time, answered with an error, or died."""


class PeerProcess:
    """One running peer. Use it as a context manager: leaving it ends the process."""

    def __init__(
        self,
        model: str,
        *,
        cpus: list[int] | None = None,
        work: int = 0,
        history: bool = False,
        ready_timeout: float = 30.0,
    ) -> None:
        """`history`: the peer keeps a history (in a folder that goes with it)."""
        self.model = model
        command = [sys.executable, "-m", "udpchat.bench.peer", "--model", model]
        if cpus:
            command += ["--cpus", ",".join(map(str, cpus))]
        if work:
            command += ["--work", str(work)]
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        if history:
            self._folder = tempfile.TemporaryDirectory(prefix="udpchat-bench-")
            command += ["--history", f"{self._folder.name}/history.sqlite3"]
        # Closed by close(), which leaving the context (or a failed start) calls.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._messages: queue.SimpleQueue[tuple[float, dict[str, Any] | None]] = queue.SimpleQueue()
        started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="bench-reader", daemon=True)
        self._reader.start()
        try:
            arrived, ready = self._receive(ready_timeout)
        except PeerError:
            self.close()
            raise
        self.pid: int = ready["pid"]
        self.port: int = ready["port"]
        self.open_s: float = ready["open_s"]
        self.start_to_ready_s = arrived - started
        """From starting the interpreter to the runtime being open and reported."""

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, command: str, **arguments: Any) -> None:
        """Give the peer a command without waiting for its answer."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps({"cmd": command, **arguments}) + "\n")
            stdin.flush()
        except OSError as error:
            raise PeerError(self._describe(f"cannot send {command}: {error}")) from None

    def wait_armed(self, timeout: float) -> None:
        """Wait for the peer to say it is waiting (before the other side starts)."""
        self._expect("armed", timeout)

    def wait_reply(self, timeout: float) -> dict[str, Any]:
        """The answer to the last command; PeerError on error, timeout or death."""
        reply: dict[str, Any] = self._expect("reply", timeout)
        return reply

    def call(self, command: str, timeout: float, **arguments: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self.send(command, timeout=timeout, **arguments)
        return self.wait_reply(timeout + 5.0)

    def close(self) -> None:
        """Ask the peer to quit; kill it if it has not exited within a few seconds."""
        process = self.process
        if process.poll() is None:
            try:
                self.send("quit")
            except PeerError:
                pass
            try:
                process.wait(_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_EXIT_TIMEOUT)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        self._reader.join(_EXIT_TIMEOUT)
        self._stderr.close()
        if self._folder is not None:
            self._folder.cleanup()

    # -- helpers --------------------------------------------------------------

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours (a stray print); the protocol is JSON lines
                self._messages.put((time.monotonic(), message))
        except (OSError, ValueError):
            pass  # closed under us by close()
        self._messages.put((time.monotonic(), None))

    def _receive(self, timeout: float) -> tuple[float, dict[str, Any]]:
        try:
            arrived, message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise PeerError(self._describe(f"no answer within {timeout:.0f} s")) from None
        if message is None:
            self._messages.put((arrived, None))
            raise PeerError(self._describe("exited"))
        if "error" in message:
            raise PeerError(self._describe(str(message["error"])))
        return arrived, message

    def _expect(self, key: str, timeout: float) -> Any:
        _, message = self._receive(timeout)
        if key not in message:
            raise PeerError(self._describe(f"expected {key!r}, got {message}"))
        return message[key]

    def _describe(self, problem: str) -> str:
        tail = ""
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            tail = f" ({lines[-1]})" if lines else ""
        except (OSError, ValueError):
            pass
        return f"{self.model} peer: {problem}{tail}"
