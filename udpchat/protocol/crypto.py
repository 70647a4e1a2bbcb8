"""Shared-key mode: sealing and opening datagrams (docs/protocol.md, "Shared-key mode").

With a key, every datagram travels as a SEALED datagram: the 12-byte header (kind 7),
an origin byte, a 64-bit counter and a 64-bit timestamp in clear and authenticated, then
the inner datagram's kind and body encrypted with ChaCha20-Poly1305. Rules:
- each datagram is sealed for its recipient: the associated data ends with the 8-byte
  session id of the peer it is for, which is not sent (the receiver puts its own there),
  so a datagram sealed for one peer fails authentication at any other. Only a HELLO to
  an address that has not answered yet, whose session is unknown, and an ANNOUNCE are
  sealed "to anyone" (origin 2, eight zero bytes in its place);
- the passphrase becomes a 32-byte master key once, with scrypt; each session's key is
  HKDF(master, "udpchat v1 session" + session id), so a key is never used by two runs;
- the nonce is (origin, counter): origin 0 is the send half, 1 the receive half (they may
  run in different processes and count separately); counters only grow, so within a
  session key no nonce repeats;
- a receiver keeps a 1024-wide replay window per (session, origin), updated only after a
  datagram has decrypted, and refuses a timestamp more than `max_skew` seconds from its
  own clock, which bounds replays after it restarts (it forgot its windows).
Failures raise AuthenticationError with a reason; the receive half counts them.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import AuthenticationError, RejectReason
from .rooms import ROOM_OVERHEAD, TAG_PREFIX
from .sealing import ANYONE, FOR_ANYONE
from .wire import HEADER, MAGIC, VERSION, Kind

SEALED = Kind.SEALED
_CLEAR = struct.Struct("!BQQ")  # origin, counter, timestamp (ms since the Unix epoch)
_AAD_SIZE = HEADER.size + _CLEAR.size
TAG_SIZE = 16
OVERHEAD = _CLEAR.size + 1 + TAG_SIZE
"""Bytes a sealed datagram adds to its inner one (the inner kind byte moves inside)."""
ORIGIN_SEND, ORIGIN_RECEIVE, ORIGIN_ANYONE = 0, 1, 2
"""Who sealed a datagram: our send half, our receive half, or our send half for whoever
is at an address (a HELLO only; it counts with the send half)."""
REPLAY_WINDOW = 1024
_SESSIONS_CACHED = 256
_SCRYPT_SALT = b"udpchat v1 shared key"


def derive_master_key(passphrase: bytes) -> bytes:
    """The 32-byte master key of a passphrase (scrypt, n=2^15, r=8, p=1; its cost at start
    is measured in docs/models.md, "Figures behind the design").

    The salt is fixed, since two peers must derive the same key with nothing exchanged;
    a long passphrase matters for that reason.
    """
    if not passphrase:
        raise ValueError("the shared key is empty")
    return Scrypt(salt=_SCRYPT_SALT, length=32, n=2**15, r=8, p=1).derive(passphrase)


def _session_cipher(master: bytes, session: bytes) -> ChaCha20Poly1305:
    info = b"udpchat v1 session " + session
    return ChaCha20Poly1305(HKDF(hashes.SHA256(), 32, None, info).derive(master))


class Sealer:
    """Seals the datagrams one half of our session sends."""

    def __init__(self, master: bytes, session: bytes, origin: int) -> None:
        self._cipher = _session_cipher(master, session)
        self._origin = origin
        self._counter = 0

    def seal(self, datagram: bytes, wall_ms: int, recipient: bytes) -> bytes:
        """The sealed form of a plaintext datagram produced by `wire.encode`, for the peer
        whose session is `recipient` (`ANYONE`: a HELLO to a peer not heard from yet)."""
        self._counter += 1
        origin = ORIGIN_ANYONE if recipient == ANYONE else self._origin
        header = datagram[:3] + bytes((SEALED,)) + datagram[4 : HEADER.size]
        clear = header + _CLEAR.pack(origin, self._counter, wall_ms)
        nonce = bytes((origin, 0, 0, 0)) + self._counter.to_bytes(8, "big")
        inner = datagram[3:4] + datagram[HEADER.size :]
        return clear + self._cipher.encrypt(nonce, inner, clear + recipient)


class RoomKey:
    """A room's own key (docs/protocol.md, "Keyed rooms"): who is a member, and the
    sealing of the room's lines, for the holders of the room's passphrase only.

    From the passphrase's master key (`derive_master_key`), HKDF with the room's name
    gives the room key, so one passphrase used for two rooms gives two keys."""

    def __init__(self, master: bytes, room: str) -> None:
        info = b"udpchat v2 room " + room.encode("utf-8")
        self._key = HKDF(hashes.SHA256(), 32, None, info).derive(master)
        self._cipher = ChaCha20Poly1305(self._key)

    def tag(self, session: bytes) -> str:
        """How the session `session` lists this room: `~` and 20 hex digits of
        HMAC-SHA256(room key, "member" + session). Bound to the session, so a tag copied
        into another session's list proves nothing."""
        digest = hmac.new(self._key, b"member" + session, "sha256").digest()
        return TAG_PREFIX + digest[:10].hex()

    def seal(self, text: bytes, associated: bytes) -> bytes:
        """A line's text sealed for one recipient: nonce, ciphertext and tag."""
        nonce = os.urandom(12)
        return nonce + self._cipher.encrypt(nonce, text, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """The text of a sealed line; AuthenticationError if it is not one."""
        if len(sealed) < ROOM_OVERHEAD:
            raise AuthenticationError(RejectReason.AUTHENTICATION_FAILED, "room")
        try:
            return self._cipher.decrypt(sealed[:12], sealed[12:], associated)
        except InvalidTag:
            raise AuthenticationError(RejectReason.AUTHENTICATION_FAILED, "room") from None


class _Window:
    """RFC 6479-style sliding window over 64-bit counters, REPLAY_WINDOW wide."""

    __slots__ = ("highest", "seen")

    def __init__(self) -> None:
        self.highest = 0
        self.seen = 0  # bit i: counter highest - i has been accepted

    def fresh(self, counter: int) -> bool:
        if counter > self.highest:
            return True
        offset = self.highest - counter
        return offset < REPLAY_WINDOW and not (self.seen >> offset) & 1

    def accept(self, counter: int) -> None:
        if counter > self.highest:
            self.seen = ((self.seen << (counter - self.highest)) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = counter
        else:
            self.seen |= 1 << (self.highest - counter)


class Opener:
    """Checks and opens sealed datagrams from any peer holding the same master key."""

    def __init__(self, master: bytes, max_skew: float) -> None:
        self._master = master
        self._max_skew_ms = int(max_skew * 1000)
        self._sessions: OrderedDict[bytes, tuple[ChaCha20Poly1305, list[_Window]]] = OrderedDict()

    def open(self, data: bytes, wall_ms: int, own_session: bytes) -> tuple[bytes, bool]:
        """The plaintext datagram inside `data`, and whether it was sealed for us (True)
        rather than for anyone (False: a HELLO or an ANNOUNCE). Raises
        AuthenticationError if it is not authentic (or was sealed for another peer), is
        replayed or is too old, or is sealed for anyone and is neither; nothing is
        remembered of a datagram that fails."""
        if len(data) < _AAD_SIZE + 1 + TAG_SIZE or data[2] != VERSION or data[3] != SEALED:
            raise AuthenticationError(
                RejectReason.NOT_SEALED if data[:2] == MAGIC else RejectReason.NOT_UDPCHAT
            )
        session = data[4 : HEADER.size]
        origin, counter, stamp = _CLEAR.unpack_from(data, HEADER.size)
        if origin > ORIGIN_ANYONE:
            raise AuthenticationError(RejectReason.AUTHENTICATION_FAILED)
        if abs(stamp - wall_ms) > self._max_skew_ms:
            raise AuthenticationError(RejectReason.CLOCK_SKEW)
        entry = self._sessions.get(session)
        if entry is None:
            entry = (_session_cipher(self._master, session), [_Window(), _Window()])
        window = entry[1][origin & 1]  # "to anyone" counts with the send half
        if not window.fresh(counter):
            raise AuthenticationError(RejectReason.REPLAYED)
        nonce = bytes((origin, 0, 0, 0)) + counter.to_bytes(8, "big")
        recipient = ANYONE if origin == ORIGIN_ANYONE else own_session
        try:
            inner = entry[0].decrypt(nonce, data[_AAD_SIZE:], data[:_AAD_SIZE] + recipient)
        except InvalidTag:
            raise AuthenticationError(RejectReason.AUTHENTICATION_FAILED) from None
        if origin == ORIGIN_ANYONE and inner[0] not in FOR_ANYONE:
            raise AuthenticationError(RejectReason.NOT_FOR_ANYONE)
        window.accept(counter)
        self._remember(session, entry)
        return MAGIC + bytes((VERSION,)) + inner[:1] + session + inner[1:], recipient != ANYONE

    def _remember(self, session: bytes, entry: tuple[ChaCha20Poly1305, list[_Window]]) -> None:
        # Only sessions that have proved the key are cached, so forgeries cannot push
        # real sessions (and their replay windows) out.
        self._sessions[session] = entry
        self._sessions.move_to_end(session)
        if len(self._sessions) > _SESSIONS_CACHED:
            # A forgotten session's windows go too; its datagrams then meet the
            # timestamp check, as after a restart.
            self._sessions.popitem(last=False)
