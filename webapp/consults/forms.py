"""Consult request, answer and workflow forms."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DecimalField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from ..forms import AppForm
from ..models import Sex, Urgency, specialty_choices
from ..validation import DB_INT_MAX
from .services import CaseData, RecommendationData


class BoundedIntegerField(IntegerField):
    """An IntegerField whose value fits a database INTEGER.

    Python reads a number of any size, and WTForms' NumberRange then calls math.isnan() on it,
    which overflows (a 500) beyond about 1e308: such a number is refused while it is parsed.
    """

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None and not -DB_INT_MAX - 1 <= self.data <= DB_INT_MAX:
            self.data = None
            raise ValueError(self.gettext("The number is too large."))


def _int(label: Any, lo: int, hi: int, message: Any = None) -> BoundedIntegerField:
    # NumberRange fills %(min)s and %(max)s into its message (a literal "%", as for SpO₂, is "%%").
    message = message or _l("Between %(min)s and %(max)s.")
    return BoundedIntegerField(label, validators=[Optional(), NumberRange(lo, hi, message)])


class FiniteDecimalField(DecimalField):
    """A DecimalField that refuses NaN and infinities (a signalling NaN crashes NumberRange)."""

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None and not self.data.is_finite():
            self.data = None
            raise ValueError(self.gettext("Not a valid decimal value."))


class CaseForm(AppForm):
    specialty = SelectField(_l("Specialty needed"))
    urgency = RadioField(_l("Urgency"), default=Urgency.ROUTINE.value)
    patient_age_years = _int(_l("Age (years)"), 0, 130)
    patient_sex = SelectField(_l("Sex"))
    chief_complaint = StringField(_l("Chief complaint"), validators=[Length(max=300)])
    history = TextAreaField(_l("History"), validators=[Length(max=20000)])
    findings = TextAreaField(_l("Examination findings"), validators=[Length(max=20000)])
    current_treatment = TextAreaField(_l("Current treatment"), validators=[Length(max=10000)])
    question = TextAreaField(_l("Your question for the specialist"), validators=[Length(max=5000)])
    preferred_times = StringField(_l("When you and the patient can join a call"), validators=[Length(max=500)])
    bp_systolic = _int(_l("BP systolic"), 40, 300, _l("Between %(min)s and %(max)s mmHg."))
    bp_diastolic = _int(_l("BP diastolic"), 20, 200, _l("Between %(min)s and %(max)s mmHg."))
    heart_rate = _int(_l("Heart rate"), 20, 300, _l("Between %(min)s and %(max)s/min."))
    respiratory_rate = _int(_l("Respiratory rate"), 4, 80, _l("Between %(min)s and %(max)s/min."))
    temperature_c = FiniteDecimalField(_l("Temperature °C"), places=1, validators=[
        Optional(), NumberRange(30, 45, _l("Between %(min)s and %(max)s °C."))])
    spo2 = _int(_l("SpO₂ %"), 50, 100, _l("Between %(min)s and %(max)s %%."))
    weight_kg = FiniteDecimalField(_l("Weight kg"), places=1, validators=[
        Optional(), NumberRange(0.3, 400, _l("Between %(min)s and %(max)s kg."))])
    save = SubmitField(_l("Save draft"))
    send = SubmitField(_l("Send request"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Choices in the request's language (built per request, not at import time).
        choose = ("", _("Choose…"))
        self.specialty.choices = [choose, *specialty_choices()]
        self.urgency.choices = [(u.value, u.label) for u in Urgency]
        self.patient_sex.choices = [choose, *((s.value, s.label) for s in Sex)]

    def to_case(self) -> CaseData:
        return CaseData(
            specialty=self.specialty.data or None,
            urgency=Urgency(self.urgency.data or Urgency.ROUTINE.value),
            patient_age_years=self.patient_age_years.data,
            patient_sex=Sex(self.patient_sex.data) if self.patient_sex.data else None,
            chief_complaint=self.chief_complaint.data or "",
            history=self.history.data or "",
            findings=self.findings.data or "",
            current_treatment=self.current_treatment.data or "",
            question=self.question.data or "",
            preferred_times=self.preferred_times.data or "",
            bp_systolic=self.bp_systolic.data,
            bp_diastolic=self.bp_diastolic.data,
            heart_rate=self.heart_rate.data,
            respiratory_rate=self.respiratory_rate.data,
            temperature_c=self.temperature_c.data,
            spo2=self.spo2.data,
            weight_kg=self.weight_kg.data,
        )


class AttachmentForm(AppForm):
    file = FileField(_l("File"), validators=[FileRequired(_l("Choose a file to upload."))])
    description = StringField(_l("What it shows"), validators=[Length(max=200)])


class SlotForm(AppForm):
    slot = RadioField(_l("Time"), validate_choice=False)


class RescheduleForm(AppForm):
    slot = RadioField(_l("New time"), validate_choice=False)
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason for the new time.")),
                                                 Length(max=500)])


class AcceptForm(AppForm):
    slot = RadioField(_l("Consultation time"), validate_choice=False, default="")


class ReasonForm(AppForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=500)])


class RecommendationForm(AppForm):
    assessment = TextAreaField(_l("Assessment"), validators=[Length(max=20000)])
    plan = TextAreaField(_l("Recommended plan"), validators=[Length(max=20000)])
    refer_up = BooleanField(_l("Refer the patient to a higher-level hospital"))
    refer_reason = TextAreaField(_l("Reason for referral"), validators=[Length(max=5000)])
    follow_up = TextAreaField(_l("Follow-up"), validators=[Length(max=5000)])
    save = SubmitField(_l("Save draft"))
    sign = SubmitField(_l("Sign and send"))

    def to_data(self) -> RecommendationData:
        return RecommendationData(
            assessment=self.assessment.data or "", plan=self.plan.data or "",
            refer_up=bool(self.refer_up.data), refer_reason=self.refer_reason.data or "",
            follow_up=self.follow_up.data or "",
        )


class EmptyForm(AppForm):
    """A form with only the CSRF token, for one-click actions."""
