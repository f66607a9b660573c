"""All models, imported so that Alembic and the app see every table."""

from .audit import AuditChainHead, AuditEvent
from .consult import (
    Attachment,
    Consult,
    ConsultMode,
    ConsultOffer,
    ConsultOpinion,
    ConsultParticipant,
    ConsultStatus,
    OfferStatus,
    ParticipantRole,
    Recommendation,
    Sex,
    Urgency,
)
from .facility import Facility, FacilityLevel, Partnership
from .notification import CHANNELS, Delivery, Notification, NotificationPreference
from .room import CallSession, Message, NoteSnapshot, NoteUpdate, ReadReceipt, RoomCounter
from .scheduling import (
    BLOCK_MINUTES,
    Appointment,
    AvailabilityException,
    AvailabilityWindow,
    BookedBlock,
    CalendarFeed,
)
from .session import PasswordReset, UserSession
from .types import utcnow
from .user import LANGUAGES, SPECIALTIES, AccountStatus, Role, User, specialty_choices, specialty_label

__all__ = [
    "BLOCK_MINUTES",
    "CHANNELS",
    "LANGUAGES",
    "SPECIALTIES",
    "AccountStatus",
    "Appointment",
    "Attachment",
    "AuditChainHead",
    "AuditEvent",
    "AvailabilityException",
    "AvailabilityWindow",
    "BookedBlock",
    "CalendarFeed",
    "CallSession",
    "Consult",
    "ConsultMode",
    "ConsultOffer",
    "ConsultOpinion",
    "ConsultParticipant",
    "ConsultStatus",
    "Delivery",
    "Facility",
    "FacilityLevel",
    "Message",
    "NoteSnapshot",
    "NoteUpdate",
    "Notification",
    "NotificationPreference",
    "OfferStatus",
    "ParticipantRole",
    "Partnership",
    "PasswordReset",
    "ReadReceipt",
    "Recommendation",
    "Role",
    "RoomCounter",
    "Sex",
    "Urgency",
    "User",
    "UserSession",
    "specialty_choices",
    "specialty_label",
    "utcnow",
]
