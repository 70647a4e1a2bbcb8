"""The sans-I/O core of udpchat: wire format and protocol state, no I/O, no clock.

Nothing in this package imports socket, time, threading, multiprocessing or asyncio;
every method that needs the time takes `now` (monotonic seconds) from the caller.
"""

from .config import Config, MessageTransform, Stats
from .errors import (
    AuthenticationError,
    InvalidNick,
    InvalidRoom,
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
    FileOffered,
    HistoryFailed,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    RawMessageSent,
    SendFailed,
    VersionMismatched,
)
from .nick import validate_nick
from .notes import AckNote, Note, PeerNote, PongNote, RefusedNote
from .receiver import PeerInfo, Receiver
from .rooms import DEFAULT_ROOM, MAX_ROOMS, validate_room
from .sender import CANCELLED, Outboxed, Sender, TargetInfo, encode_text
from .session import ChatSession, PeerStatus, merge_peers
from .wire import MAX_DATAGRAM, MAX_MESSAGE_BYTES, MAX_NICK_BYTES

__all__ = [
    "CANCELLED",
    "DEFAULT_ROOM",
    "MAX_DATAGRAM",
    "MAX_MESSAGE_BYTES",
    "MAX_NICK_BYTES",
    "MAX_ROOMS",
    "AckNote",
    "Address",
    "AuthenticationError",
    "ChatSession",
    "Config",
    "DatagramRejected",
    "DatagramsRefused",
    "DeliveryFailed",
    "Event",
    "FileOffered",
    "HistoryFailed",
    "InvalidNick",
    "InvalidRoom",
    "LeaveReason",
    "LocalProtocolError",
    "MemberJoined",
    "MemberLeft",
    "MessageDelivered",
    "MessageHeld",
    "MessageReceived",
    "MessageTooLong",
    "MessageTransform",
    "NoPeers",
    "Note",
    "OutboxFull",
    "Outboxed",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "PeerNote",
    "PeerRenamed",
    "PeerStatus",
    "PongNote",
    "ProtocolError",
    "RawMessageSent",
    "Receiver",
    "RefusedNote",
    "RejectReason",
    "SendFailed",
    "Sender",
    "Stats",
    "TargetInfo",
    "VersionMismatched",
    "WireError",
    "encode_text",
    "merge_peers",
    "validate_nick",
    "validate_room",
]
