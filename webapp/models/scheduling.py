"""Specialists' weekly availability and booked appointments."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, PrimaryKeyConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .types import UTCDateTime, utcnow

if TYPE_CHECKING:
    from .consult import Consult

BLOCK_MINUTES = 15


class AvailabilityWindow(db.Model):
    """A weekly window, in the specialist's own time zone, when consults can be booked."""

    __tablename__ = "availability_windows"
    __table_args__ = (
        CheckConstraint("weekday >= 0 AND weekday <= 6", name="weekday_range"),
        CheckConstraint(
            "start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute",
            name="minute_range",
        ),
        # first_available reads the windows of the weekdays it scans, by start (a covering index)
        Index("ix_availability_windows_weekday_start", "weekday", "start_minute", "end_minute", "specialist_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    specialist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    weekday: Mapped[int] = mapped_column(Integer)  # 0 = Monday
    start_minute: Mapped[int] = mapped_column(Integer)  # minutes after local midnight
    end_minute: Mapped[int] = mapped_column(Integer)


class AvailabilityException(db.Model):
    """A dated change to the weekly pattern, in the specialist's own time zone.

    kind "leave": no slots on any day from first_day to last_day (leave, holidays);
    kind "extra": one-off extra hours on first_day from start_minute to end_minute.
    """

    __tablename__ = "availability_exceptions"
    __table_args__ = (
        CheckConstraint("kind IN ('leave', 'extra')", name="exception_kind"),
        CheckConstraint("first_day <= last_day", name="exception_days"),
        CheckConstraint(
            "kind = 'leave' OR (start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute"
            " AND first_day = last_day)",
            name="exception_hours",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    specialist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    first_day: Mapped[date] = mapped_column(Date)
    last_day: Mapped[date] = mapped_column(Date)
    start_minute: Mapped[int | None] = mapped_column(Integer)
    end_minute: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(120), default="")


class Appointment(db.Model):
    """A booked consult time. Overlaps are prevented by BookedBlock's primary key."""

    __tablename__ = "appointments"
    __table_args__ = (  # the reminder scan reads only unsent, live bookings, by time
        Index("ix_appointments_reminder_day_due", "starts_at",
              postgresql_where=text("reminded_day_at IS NULL AND cancelled_at IS NULL"),
              sqlite_where=text("reminded_day_at IS NULL AND cancelled_at IS NULL")),
        Index("ix_appointments_reminder_soon_due", "starts_at",
              postgresql_where=text("reminded_soon_at IS NULL AND cancelled_at IS NULL"),
              sqlite_where=text("reminded_soon_at IS NULL AND cancelled_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    specialist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    booked_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Why this booking ended: "rescheduled: <reason>" or the cancellation reason.
    end_reason: Mapped[str | None] = mapped_column(String(500))
    ended_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # When the 24 h / 15 min reminders were sent (claimed by the scan: set once, never again).
    reminded_day_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminded_soon_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    consult: Mapped[Consult] = relationship(viewonly=True)
    blocks: Mapped[list[BookedBlock]] = relationship(
        cascade="all, delete-orphan", back_populates="appointment"
    )


class BookedBlock(db.Model):
    """One 15-minute block of a specialist's time held by an appointment.

    The primary key (specialist, block start) makes the database itself refuse any
    two appointments of one specialist that overlap, on SQLite and PostgreSQL alike.
    """

    __tablename__ = "booked_blocks"
    __table_args__ = (PrimaryKeyConstraint("specialist_id", "block_start"),)

    specialist_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    block_start: Mapped[datetime] = mapped_column(UTCDateTime())
    appointment_id: Mapped[int] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), index=True
    )

    appointment: Mapped[Appointment] = relationship(back_populates="blocks")


class CalendarFeed(db.Model):
    """A user's private iCalendar feed: only the SHA-256 of its secret URL token is stored."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
