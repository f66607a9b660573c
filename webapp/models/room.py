"""The consult room: chat messages with per-consult sequence numbers, read receipts, notes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .consult import ParticipantRole
from .types import UTCDateTime, str_enum, utcnow

if TYPE_CHECKING:
    from .consult import Attachment
    from .user import User


class RoomCounter(db.Model):
    """The last chat sequence number handed out in a consult (one row per consult)."""

    __tablename__ = "room_counters"

    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class Message(db.Model):
    """A chat message, persisted before anyone is told about it."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("consult_id", "seq"),
        UniqueConstraint("consult_id", "sender_id", "client_id"),
        # the sender's order check: is there a stored message of this sender with client_seq >= n?
        Index("ix_messages_sender_order", "consult_id", "sender_id", "client_seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    client_id: Mapped[str] = mapped_column(String(64))
    # the sender's browser numbers its outbox 1, 2, 3 … per consult; None from older clients
    client_seq: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text, default="")
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("attachments.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the sender's participant role when writing it (a trainee's question stays marked as one);
    # None for messages stored before migration 0018 could tell
    sender_role: Mapped[ParticipantRole | None] = mapped_column(str_enum(ParticipantRole))

    sender: Mapped[User] = relationship()
    attachment: Mapped[Attachment | None] = relationship()


class ReadReceipt(db.Model):
    """How far each party has read a consult's chat."""

    __tablename__ = "read_receipts"

    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    last_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class NoteUpdate(db.Model):
    """One CRDT (Yjs) update to a consult's shared notes, with its author: the revision history."""

    __tablename__ = "note_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    update: Mapped[bytes] = mapped_column(LargeBinary)
    sections: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    author: Mapped[User] = relationship()


class NoteSnapshot(db.Model):
    """The merged notes document of a consult; fixed (signed) once the consult is signed off."""

    __tablename__ = "note_snapshots"

    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), primary_key=True)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    upto_update_id: Mapped[int] = mapped_column(Integer, default=0)
    signed_text: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class CallSession(db.Model):
    """One video call in a consult room: setup time, TURN relay, duration, quality for coordinators."""

    __tablename__ = "call_sessions"
    # One open call per consult: two doctors pressing Join at the same moment share one record
    __table_args__ = (
        Index("uq_call_sessions_open", "consult_id", unique=True,
              postgresql_where=text("ended_at IS NULL"), sqlite_where=text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    started_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    setup_ms: Mapped[int | None] = mapped_column(Integer)
    relayed: Mapped[bool | None] = mapped_column(Boolean)
    rtt_ms: Mapped[int | None] = mapped_column(Integer)
    packet_loss_pct: Mapped[float | None] = mapped_column(Float)
    bitrate_kbps: Mapped[int | None] = mapped_column(Integer)
    audio_only: Mapped[bool] = mapped_column(Boolean, default=False)

    @property
    def duration_seconds(self) -> int | None:
        if self.connected_at is None:
            return None
        end = self.ended_at or utcnow()
        return int((end - self.connected_at).total_seconds())
