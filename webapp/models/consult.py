"""Consult requests, the offers made to specialists, attachments and the signed answer."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..i18n import N_, translate
from .scheduling import Appointment
from .types import UTCDateTime, str_enum, utcnow
from .user import User, specialty_label


class ConsultStatus(enum.StrEnum):
    DRAFT = "draft"
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        """Translated by the code (docs/glossary.md)."""
        return translate({
            "draft": N_("Draft"),
            "requested": N_("Awaiting specialist"),
            "accepted": N_("Accepted"),
            "scheduled": N_("Scheduled"),
            "completed": N_("Answered"),
            "declined": N_("Declined by all"),
            "cancelled": N_("Cancelled"),
        }[self.value])


class Urgency(enum.StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"

    @property
    def label(self) -> str:
        """Translated by the code (docs/glossary.md: 常规 / 加急 / 急诊)."""
        return translate({"routine": N_("Routine"), "urgent": N_("Urgent"),
                          "emergency": N_("Emergency")}[self.value])


class Sex(enum.StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """Translated by the code."""
        return translate({"female": N_("Female"), "male": N_("Male"), "other": N_("Other"),
                          "unknown": N_("Unknown")}[self.value])


class OfferStatus(enum.StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


class ParticipantRole(enum.StrEnum):
    """A participant's part in a consult (docs/architecture.md, "Participants")."""

    REQUESTER = "requester"  # the rural doctor who asked
    LEAD_SPECIALIST = "lead_specialist"  # who accepted; signs the recommendation
    SPECIALIST = "specialist"  # a second or third specialist invited for an opinion
    TRAINEE = "trainee"  # observes to learn

    @property
    def label(self) -> str:
        """Translated by the code (docs/glossary.md)."""
        return translate({"requester": N_("Requesting doctor"), "lead_specialist": N_("Lead specialist"),
                          "specialist": N_("Invited specialist"), "trainee": N_("Trainee")}[self.value])


def new_reference() -> str:
    """An unguessable public reference used in every consult URL."""
    return secrets.token_urlsafe(12)


class Consult(db.Model):
    __tablename__ = "consults"
    __table_args__ = (
        CheckConstraint(
            "patient_age_years IS NULL OR (patient_age_years >= 0 AND patient_age_years <= 130)",
            name="age_range",
        ),
        Index("ix_consults_overdue_due", "urgency", "submitted_at",  # the response-target scan
              postgresql_where=text("status = 'requested' AND overdue_at IS NULL"),
              sqlite_where=text("status = 'requested' AND overdue_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(32), unique=True, default=new_reference)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    specialist_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[ConsultStatus] = mapped_column(
        str_enum(ConsultStatus), default=ConsultStatus.DRAFT, index=True
    )
    specialty: Mapped[str | None] = mapped_column(String(40))
    urgency: Mapped[Urgency] = mapped_column(str_enum(Urgency), default=Urgency.ROUTINE)

    # The case: a patient summary without needless identifiers.
    patient_age_years: Mapped[int | None] = mapped_column(Integer)
    patient_sex: Mapped[Sex | None] = mapped_column(str_enum(Sex))
    chief_complaint: Mapped[str] = mapped_column(String(300), default="")
    history: Mapped[str] = mapped_column(Text, default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    current_treatment: Mapped[str] = mapped_column(Text, default="")
    question: Mapped[str] = mapped_column(Text, default="")
    preferred_times: Mapped[str] = mapped_column(String(500), default="")

    # Vitals, each optional.
    bp_systolic: Mapped[int | None] = mapped_column(Integer)
    bp_diastolic: Mapped[int | None] = mapped_column(Integer)
    heart_rate: Mapped[int | None] = mapped_column(Integer)
    respiratory_rate: Mapped[int | None] = mapped_column(Integer)
    temperature_c: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    spo2: Mapped[int | None] = mapped_column(Integer)
    weight_kg: Mapped[Decimal | None] = mapped_column(Numeric(5, 1))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    # When the request missed its response-time target (set once by the scan; flags the queue).
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)

    requester: Mapped[User] = relationship(foreign_keys=[requester_id])
    specialist: Mapped[User | None] = relationship(foreign_keys=[specialist_id])
    assigned_by: Mapped[User | None] = relationship(foreign_keys=[assigned_by_id])
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="consult", order_by="Attachment.id"
    )
    offers: Mapped[list[ConsultOffer]] = relationship(
        back_populates="consult", order_by="ConsultOffer.rank"
    )
    appointment: Mapped[Appointment | None] = relationship(
        primaryjoin="and_(Appointment.consult_id == Consult.id, Appointment.cancelled_at.is_(None))",
        viewonly=True,
        uselist=False,
    )
    recommendation: Mapped[Recommendation | None] = relationship(
        back_populates="consult", uselist=False
    )
    # Second specialists' signed addenda, oldest first (never changed once written).
    opinions: Mapped[list[ConsultOpinion]] = relationship(
        back_populates="consult", order_by="ConsultOpinion.id"
    )
    # Every participation, past and present (consults.policy decides what each may do).
    participants: Mapped[list[ConsultParticipant]] = relationship(
        back_populates="consult", order_by="ConsultParticipant.id"
    )

    __mapper_args__ = {"version_id_col": version}

    @property
    def specialty_label(self) -> str:
        return specialty_label(self.specialty)

    @property
    def is_open(self) -> bool:
        return self.status in {ConsultStatus.REQUESTED, ConsultStatus.DECLINED}

    @property
    def has_vitals(self) -> bool:
        return any(
            value is not None
            for value in (self.bp_systolic, self.heart_rate, self.respiratory_rate,
                          self.temperature_c, self.spo2, self.weight_kg)
        )

    def __repr__(self) -> str:
        return f"<Consult {self.id} {self.status}>"


class ConsultOffer(db.Model):
    """A request offered to one eligible specialist, ranked partner hospital first."""

    __tablename__ = "consult_offers"
    __table_args__ = (UniqueConstraint("consult_id", "specialist_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    specialist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    is_partner: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[OfferStatus] = mapped_column(
        str_enum(OfferStatus), default=OfferStatus.OFFERED, index=True
    )
    decline_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    consult: Mapped[Consult] = relationship(back_populates="offers")
    specialist: Mapped[User] = relationship()


class Attachment(db.Model):
    """A validated file stored outside the web root under a server-generated name."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    stored_name: Mapped[str] = mapped_column(String(80), unique=True)
    original_name: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    page_count: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    consult: Mapped[Consult] = relationship(back_populates="attachments")
    uploaded_by: Mapped[User] = relationship()

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


class ConsultMode(enum.StrEnum):
    VIDEO = "video"
    WRITTEN = "written"


class Recommendation(db.Model):
    """The specialist's structured answer; read-only once signed."""

    __tablename__ = "recommendations"

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), unique=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    mode: Mapped[ConsultMode] = mapped_column(str_enum(ConsultMode), default=ConsultMode.VIDEO)
    assessment: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[str] = mapped_column(Text, default="")
    refer_up: Mapped[bool] = mapped_column(Boolean, default=False)
    refer_reason: Mapped[str] = mapped_column(Text, default="")
    follow_up: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    consult: Mapped[Consult] = relationship(back_populates="recommendation")
    author: Mapped[User] = relationship(foreign_keys=[author_id])

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    def signed_content(self) -> dict:
        """What the signature's hash covers (consults.signing)."""
        return {
            "consult": self.consult.ref, "author": self.author_id, "mode": self.mode.value,
            "assessment": self.assessment, "plan": self.plan, "refer_up": self.refer_up,
            "refer_reason": self.refer_reason, "follow_up": self.follow_up,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
        }


class ConsultOpinion(db.Model):
    """A second specialist's signed opinion: an addendum under the lead's recommendation.

    Written and signed at once and never changed (a further opinion is a new row); the hash taken
    at signing (consults.signing, as for the recommendation) shows that it was not altered.
    """

    __tablename__ = "consult_opinions"

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    content_sha256: Mapped[str] = mapped_column(String(64))

    consult: Mapped[Consult] = relationship(back_populates="opinions")
    author: Mapped[User] = relationship()

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    def signed_content(self) -> dict:
        """What the signature's hash covers (consults.signing)."""
        return {
            "kind": "opinion", "consult": self.consult.ref, "author": self.author_id, "text": self.text,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
        }


@event.listens_for(ConsultOpinion, "before_update")
@event.listens_for(ConsultOpinion, "before_delete")
def _opinions_are_immutable(mapper, connection, target: ConsultOpinion) -> None:
    raise ValueError("A signed opinion is never changed or deleted; add a new one.")


class ConsultParticipant(db.Model):
    """A user taking part in a consult with a role; `requester_id`/`specialist_id` are derived from these.

    Active: accepted (accepted_at set) and not removed. An invitation not yet answered has no
    accepted_at; one declined, a participant who left (removed_by is the user) or was removed has
    removed_at. At most one row per (consult, user) is not removed.
    """

    __tablename__ = "consult_participants"
    __table_args__ = (
        Index("uq_consult_participants_current", "consult_id", "user_id", unique=True,
              postgresql_where=text("removed_at IS NULL"), sqlite_where=text("removed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[ParticipantRole] = mapped_column(str_enum(ParticipantRole))
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # In the call: a trainee asked to speak, and the lead let them (migration 0017; policy.SPEAKER)
    hand_raised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    speech_allowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    consult: Mapped[Consult] = relationship(back_populates="participants")
    user: Mapped[User] = relationship(foreign_keys=[user_id])
    added_by: Mapped[User | None] = relationship(foreign_keys=[added_by_id])
    removed_by: Mapped[User | None] = relationship(foreign_keys=[removed_by_id])

    @property
    def is_active(self) -> bool:
        return self.accepted_at is not None and self.removed_at is None

    @property
    def is_invited(self) -> bool:
        """An invitation not yet accepted or declined."""
        return self.accepted_at is None and self.removed_at is None

    def __repr__(self) -> str:
        return f"<ConsultParticipant {self.consult_id}:{self.user_id} {self.role}>"
