"""The rooms domain's use cases under one name, for callers outside the package.

The code lives by responsibility (docs/architecture.md, "The rooms package"): access.py (entering
and opening the room), throttle.py (the chat's rate limit), send.py (the hot send path),
history.py (pages, backlog, resync), receipts.py (read receipts, roles in the room), wire.py
(a message's JSON form) and state.py (per-app state). Code inside the package imports those
modules; this module only re-exports their public names.
"""

from __future__ import annotations

from .access import (
    CLOSED,
    OPEN_ROOM,
    WRITABLE,
    RoomNotOpen,
    can_enter,
    check_open,
    consult_by_ref,
    enter_room,
    member_consult,
    opens_at,
)
from .history import (
    HEAD_MIN_GAP,
    SEQ_LIMIT,
    Backlog,
    Page,
    head,
    join_backlog,
    last_seq,
    latest_messages,
    messages_after,
    messages_before,
    messages_page_after,
)
from .receipts import mark_read, participants, read_receipts, readers_of, with_roles
from .send import (
    CLIENT_ID_RE,
    MAX_CLIENT_SEQ,
    REPLAY_MIN_WAIT_MS,
    FastPost,
    OutOfOrder,
    Posted,
    Sender,
    Sent,
    loaded_after_commit,
    post_message,
    post_message_fast,
    send_message,
)
from .throttle import TooManyMessages, check_rate
from .wire import to_wire

__all__ = [
    "CLIENT_ID_RE", "CLOSED", "HEAD_MIN_GAP", "MAX_CLIENT_SEQ", "OPEN_ROOM", "REPLAY_MIN_WAIT_MS", "SEQ_LIMIT",
    "WRITABLE", "Backlog", "FastPost", "OutOfOrder", "Page", "Posted", "RoomNotOpen", "Sender", "Sent",
    "TooManyMessages", "can_enter", "check_open", "check_rate", "consult_by_ref", "enter_room", "head",
    "join_backlog", "last_seq", "latest_messages", "loaded_after_commit", "mark_read", "member_consult",
    "messages_after", "messages_before", "messages_page_after", "opens_at", "participants", "post_message",
    "post_message_fast", "read_receipts", "readers_of", "send_message", "to_wire", "with_roles",
]
