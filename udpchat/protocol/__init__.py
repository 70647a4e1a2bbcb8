"""The sans-I/O core of udpchat: wire format and protocol state, no I/O, no clock.

Nothing in this package imports socket, time, threading, multiprocessing or asyncio;
every method that needs the time takes `now` (monotonic seconds) from the caller.
"""

from .config import Config, MessageTransform, Stats
from .errors import (
    AuthenticationError,
    InvalidNick,
    LocalProtocolError,
    MessageTooLong,
    NoPeers,
    OutboxFull,
    ProtocolError,
    RejectReason,
    WireError,
)
from .events import (
    Address,
    DatagramRejected,
    DatagramsRefused,
    DeliveryFailed,
    Event,
    LeaveReason,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    SendFailed,
)
from .nick import validate_nick
from .notes import AckNote, Note, PeerNote, PongNote, RefusedNote
from .receiver import PeerInfo, Receiver
from .sender import Sender, TargetInfo, encode_text
from .session import ChatSession, PeerStatus, merge_peers
from .wire import MAX_DATAGRAM, MAX_MESSAGE_BYTES, MAX_NICK_BYTES

__all__ = [
    "MAX_DATAGRAM",
    "MAX_MESSAGE_BYTES",
    "MAX_NICK_BYTES",
    "AckNote",
    "Address",
    "AuthenticationError",
    "ChatSession",
    "Config",
    "DatagramRejected",
    "DatagramsRefused",
    "DeliveryFailed",
    "Event",
    "InvalidNick",
    "LeaveReason",
    "LocalProtocolError",
    "MessageDelivered",
    "MessageReceived",
    "MessageTooLong",
    "MessageTransform",
    "NoPeers",
    "Note",
    "OutboxFull",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "PeerNote",
    "PeerRenamed",
    "PeerStatus",
    "PongNote",
    "ProtocolError",
    "Receiver",
    "RefusedNote",
    "RejectReason",
    "SendFailed",
    "Sender",
    "Stats",
    "TargetInfo",
    "WireError",
    "encode_text",
    "merge_peers",
    "validate_nick",
]
