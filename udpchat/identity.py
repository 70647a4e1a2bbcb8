"""This installation's instance id: 8 random bytes drawn on first use and kept in
`$XDG_STATE_HOME/udpchat/instance-id` (default `~/.local/state/udpchat/instance-id`),
so that every run of udpchat by this user on this machine announces the same one
(docs/protocol.md, ANNOUNCE).

The file holds the id as 16 hexadecimal digits and a newline, mode 0600 in a 0700
directory. A file that holds anything else is replaced; where the directory cannot be
written, the run uses a fresh id and keeps nothing (it never fails the chat).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

INSTANCE_BYTES = 8
_HEX = re.compile(rb"[0-9a-f]{16}\n?\Z")


def state_dir(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/udpchat`, or `~/.local/state/udpchat` when that is unset or not
    absolute (as the XDG Base Directory specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "udpchat"


def instance_id(directory: Path | None = None) -> bytes:
    """The instance id kept in `directory` (default `state_dir()`), created if needed."""
    path = (directory or state_dir()) / "instance-id"
    try:
        with open(path, "rb") as stored:
            text = stored.read(64)
        if _HEX.match(text):
            return bytes.fromhex(text[:16].decode("ascii"))
    except OSError:
        pass
    fresh = os.urandom(INSTANCE_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".instance-id.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(fresh.hex().encode("ascii") + b"\n")
        # Two chats starting at once each write their own file; the rename makes one of
        # them win whole, and the loser's run announces its own id until it restarts.
        os.replace(temporary, path)
    except OSError:
        pass
    return fresh
