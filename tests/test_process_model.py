"""The process model's own duties: start methods, reaping, and a parent that dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import collect_messages, recorded, wait_for

from udpchat.protocol import LeaveReason, PeerJoined, PeerLeft
from udpchat.runtimes import ProcessRuntime, ThreadRuntime

START_METHODS = [
    m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()
]


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.05)  # polling a process table: there is nothing to wait on
    return False


@pytest.mark.parametrize("method", START_METHODS)
def test_each_start_method_chats_and_reaps_its_children(method: str) -> None:
    with recorded(ThreadRuntime, "bob", bind="127.0.0.1") as bob:
        runtime = ProcessRuntime(
            "alice", bind="127.0.0.1", peers=[bob.local_address], start_method=method
        )
        with runtime:
            children = [p.pid for p in multiprocessing.active_children()]
            assert len(children) >= 2
            wait_for(bob, lambda e: isinstance(e, PeerJoined))
            for i in range(100):
                runtime.send(f"{method} {i}")
            assert collect_messages(bob, 100) == [f"{method} {i}" for i in range(100)]
            assert runtime.wait_delivered(timeout=10)
        assert not multiprocessing.active_children()
        left = wait_for(bob, lambda e: isinstance(e, PeerLeft))
        assert isinstance(left, PeerLeft) and left.reason is LeaveReason.BYE


PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from udpchat.runtimes import ProcessRuntime
    runtime = ProcessRuntime("alice", bind="127.0.0.1", peers=[("127.0.0.1", {port})],
                             start_method="{method}")
    runtime.open()
    print(*[p.pid for p in multiprocessing.active_children()], flush=True)
    time.sleep(120)
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_children_exit_and_say_bye_when_the_parent_is_killed(
    method: str, how: signal.Signals
) -> None:
    with recorded(ThreadRuntime, "bob", bind="127.0.0.1") as bob:
        code = PARENT.format(port=bob.local_address[1], method=method)
        parent = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert parent.stdout is not None
            children = [int(pid) for pid in parent.stdout.readline().split()]
            assert len(children) == 2
            wait_for(bob, lambda e: isinstance(e, PeerJoined))
            parent.send_signal(how)
            parent.wait(timeout=10)
            assert wait_gone(children), "children outlived their parent"
            left = wait_for(bob, lambda e: isinstance(e, PeerLeft))
            assert isinstance(left, PeerLeft) and left.reason is LeaveReason.BYE
        finally:
            parent.kill()
            parent.wait(timeout=10)
            for stream in (parent.stdout, parent.stderr):
                if stream is not None:
                    stream.close()


def test_ctrl_c_to_the_whole_process_group_quits_cleanly() -> None:
    chat = subprocess.Popen(
        [sys.executable, "-m", "udpchat", "--model", "process", "--plain",
         "--bind", "127.0.0.1", "--port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert chat.stdout is not None
        assert b"listening on" in chat.stdout.readline()
        children = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-P", str(chat.pid)], capture_output=True, text=True, timeout=10
            ).stdout.split()
        ]
        os.killpg(chat.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, stderr = chat.communicate(timeout=15)
        assert chat.returncode == 130
        assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr
        assert wait_gone(children)
    finally:
        chat.kill()
        chat.communicate(timeout=10)


@pytest.mark.parametrize("method", START_METHODS)
def test_open_and_close_leave_no_resource_warnings(method: str) -> None:
    code = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("always")
        from udpchat.runtimes import ProcessRuntime
        for _ in range(3):
            with ProcessRuntime("alice", bind="127.0.0.1", start_method="{method}"):
                pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "leaked" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_fork_is_not_the_default_once_the_parent_runs_other_threads() -> None:
    from udpchat.runtimes.process import _context

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert _context(None).get_start_method() in ("forkserver", "spawn")
        assert _context("fork").get_start_method() == "fork"  # an explicit choice stands
    finally:
        stop.set()
        helper.join(timeout=5)
