"""Reading a passphrase from a file (`--key-file`, `--room-key-file`, `/join --key-file`)."""

from __future__ import annotations

import os
import stat

MAX_KEY_FILE = 4096


class KeyFileError(ValueError):
    """A key file that cannot be used, with a one-line reason."""


def read_key_file(path: str, flag: str = "--key-file") -> bytes:
    """The passphrase in `path`: its first bytes, without the line end; KeyFileError
    (naming `flag`) for a file that cannot be read, is not regular, is too long or holds
    only white space.

    Only a regular file of at most MAX_KEY_FILE bytes is read. It is opened without
    blocking, so that a FIFO with no writer is refused rather than waited on.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise KeyFileError(f"cannot read {flag} {path}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise KeyFileError(f"{flag} {path} is not a regular file")
        data = os.read(descriptor, MAX_KEY_FILE + 1)
    except OSError as error:
        raise KeyFileError(f"cannot read {flag} {path}: {error.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(
            f"{flag} {path} is over {MAX_KEY_FILE} bytes; it should hold one passphrase"
        )
    return data.rstrip(b"\r\n")
