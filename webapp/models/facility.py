"""Facilities in the tiers of care, and the partnerships that pair them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..i18n import N_, translate
from .types import UTCDateTime, str_enum, utcnow


class FacilityLevel(enum.StrEnum):
    VILLAGE_CLINIC = "village_clinic"
    TOWNSHIP_HEALTH_CENTRE = "township_health_centre"
    COUNTY_HOSPITAL = "county_hospital"
    REGIONAL_MEDICAL_CENTRE = "regional_medical_centre"
    TERTIARY_HOSPITAL = "tertiary_hospital"

    @property
    def label(self) -> str:
        """Translated by the code (docs/glossary.md: 村卫生室 … 三级医院)."""
        return translate({
            "village_clinic": N_("Village clinic"),
            "township_health_centre": N_("Township health centre"),
            "county_hospital": N_("County hospital"),
            "regional_medical_centre": N_("Regional medical centre"),
            "tertiary_hospital": N_("Tertiary hospital"),
        }[self.value])

    @property
    def rank(self) -> int:
        return list(FacilityLevel).index(self)


class Facility(db.Model):
    __tablename__ = "facilities"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(160), unique=True)
    level: Mapped[FacilityLevel] = mapped_column(str_enum(FacilityLevel, 40))
    region: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<Facility {self.id} {self.name}>"


class Partnership(db.Model):
    """A facility paired with the partner hospital that sends experts and takes referrals."""

    __tablename__ = "partnerships"
    __table_args__ = (
        UniqueConstraint("facility_id", "partner_id"),
        CheckConstraint("facility_id <> partner_id", name="not_self"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    partner_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    facility: Mapped[Facility] = relationship(foreign_keys=[facility_id])
    partner: Mapped[Facility] = relationship(foreign_keys=[partner_id])
