"""Clinician accounts and their roles."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import TYPE_CHECKING

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..i18n import N_, translate
from .types import UTCDateTime, str_enum, utcnow

if TYPE_CHECKING:
    from .facility import Facility


class Role(enum.StrEnum):
    RURAL_DOCTOR = "rural_doctor"
    SPECIALIST = "specialist"
    COORDINATOR = "coordinator"

    @property
    def label(self) -> str:
        """Translated by the code."""
        return translate({"rural_doctor": N_("Rural doctor"), "specialist": N_("Specialist"),
                          "coordinator": N_("Coordinator")}[self.value])


class AccountStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


# Specialty codes and their English names (msgids); shown translated by code (docs/glossary.md):
# use specialty_label(code) and specialty_choices(), never these values directly on a page.
SPECIALTIES: dict[str, str] = {
    "cardiology": N_("Cardiology"),
    "neurology": N_("Neurology"),
    "orthopaedics": N_("Orthopaedics"),
    "dermatology": N_("Dermatology"),
    "paediatrics": N_("Paediatrics"),
    "radiology": N_("Radiology"),
    "endocrinology": N_("Endocrinology"),
    "respiratory": N_("Respiratory medicine"),
    "obstetrics": N_("Obstetrics & gynaecology"),
    "general_surgery": N_("General surgery"),
    "oncology": N_("Oncology"),
    "psychiatry": N_("Psychiatry"),
    "nephrology": N_("Nephrology"),
    "gastroenterology": N_("Gastroenterology"),
    "ophthalmology": N_("Ophthalmology"),
    "infectious_disease": N_("Infectious disease"),
}

# Consultation languages a clinician speaks (for matching), each named in its own language.
LANGUAGES: dict[str, str] = {"zh-CN": "中文 (Chinese)", "en": "English"}


def specialty_label(code: str | None) -> str:
    """A specialty's name in the current language (the code itself if unknown)."""
    if not code:
        return ""
    return translate(SPECIALTIES[code]) if code in SPECIALTIES else code


def specialty_choices() -> list[tuple[str, str]]:
    """(code, name) pairs in the current language, for a form's select (call it per request)."""
    return [(code, translate(name)) for code, name in SPECIALTIES.items()]


def new_login_token() -> str:
    """A fresh random token identifying one generation of a user's sessions."""
    return secrets.token_urlsafe(32)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    status: Mapped[AccountStatus] = mapped_column(
        str_enum(AccountStatus), default=AccountStatus.PENDING, index=True
    )
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("facilities.id"), index=True)
    specialty: Mapped[str | None] = mapped_column(String(40), index=True)
    languages: Mapped[str] = mapped_column(String(60), default="zh-CN")
    licence_number: Mapped[str] = mapped_column(String(40))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    # The language Huizhen speaks to this user ("zh_CN" or "en"); None: the browser's, else the default.
    locale: Mapped[str | None] = mapped_column(String(8))
    # Flask-Login identifies sessions by this token: rotating it ends every session and
    # remember-me cookie of the user (logout, password change, suspension).
    login_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_login_token)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    review_note: Mapped[str | None] = mapped_column(String(500))
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    facility: Mapped[Facility | None] = relationship(foreign_keys=[facility_id])

    # Not a column: the key of the server-side session (UserSession) this request runs in.
    # Flask-Login stores it in the session and remember-me cookies (see auth.sessions).
    session_key = None

    def get_id(self) -> str:
        return self.session_key or self.login_token

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.status == AccountStatus.APPROVED

    @property
    def is_coordinator(self) -> bool:
        return self.role == Role.COORDINATOR

    @property
    def is_specialist(self) -> bool:
        return self.role == Role.SPECIALIST

    @property
    def is_rural_doctor(self) -> bool:
        return self.role == Role.RURAL_DOCTOR

    @property
    def specialty_label(self) -> str:
        return SPECIALTIES.get(self.specialty or "", "")

    @property
    def language_list(self) -> list[str]:
        return [code for code in self.languages.split(",") if code]

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role}>"
