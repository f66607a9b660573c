"""Consult request, answer and workflow forms."""

from __future__ import annotations

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
from ..models import SPECIALTIES, Sex, Urgency
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


def _int(label: str, lo: int, hi: int, unit: str = "") -> BoundedIntegerField:
    # NumberRange %-formats its message: a literal "%" (SpO₂) must be doubled.
    message = f"Between {lo} and {hi}{unit}.".replace("%", "%%")
    return BoundedIntegerField(label, validators=[Optional(), NumberRange(lo, hi, message)])


class FiniteDecimalField(DecimalField):
    """A DecimalField that refuses NaN and infinities (a signalling NaN crashes NumberRange)."""

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if self.data is not None and not self.data.is_finite():
            self.data = None
            raise ValueError(self.gettext("Not a valid decimal value."))


class CaseForm(AppForm):
    specialty = SelectField("Specialty needed", choices=[("", "Choose…")] + list(SPECIALTIES.items()))
    urgency = RadioField("Urgency", choices=[(u.value, u.label) for u in Urgency], default=Urgency.ROUTINE.value)
    patient_age_years = _int("Age (years)", 0, 130)
    patient_sex = SelectField("Sex", choices=[("", "Choose…")] + [(s.value, s.label) for s in Sex])
    chief_complaint = StringField("Chief complaint", validators=[Length(max=300)])
    history = TextAreaField("History", validators=[Length(max=20000)])
    findings = TextAreaField("Examination findings", validators=[Length(max=20000)])
    current_treatment = TextAreaField("Current treatment", validators=[Length(max=10000)])
    question = TextAreaField("Your question for the specialist", validators=[Length(max=5000)])
    preferred_times = StringField("When you and the patient can join a call", validators=[Length(max=500)])
    bp_systolic = _int("BP systolic", 40, 300, " mmHg")
    bp_diastolic = _int("BP diastolic", 20, 200, " mmHg")
    heart_rate = _int("Heart rate", 20, 300, "/min")
    respiratory_rate = _int("Respiratory rate", 4, 80, "/min")
    temperature_c = FiniteDecimalField("Temperature °C", places=1,
                                 validators=[Optional(), NumberRange(30, 45, "Between 30 and 45 °C.")])
    spo2 = _int("SpO₂ %", 50, 100, " %")
    weight_kg = FiniteDecimalField("Weight kg", places=1,
                             validators=[Optional(), NumberRange(0.3, 400, "Between 0.3 and 400 kg.")])
    save = SubmitField("Save draft")
    send = SubmitField("Send request")

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
    file = FileField("File", validators=[FileRequired("Choose a file to upload.")])
    description = StringField("What it shows", validators=[Length(max=200)])


class SlotForm(AppForm):
    slot = RadioField("Time", validate_choice=False)


class RescheduleForm(AppForm):
    slot = RadioField("New time", validate_choice=False)
    reason = TextAreaField("Reason", validators=[DataRequired("Give a reason for the new time."),
                                                 Length(max=500)])


class AcceptForm(AppForm):
    slot = RadioField("Consultation time", validate_choice=False, default="")


class ReasonForm(AppForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Give a reason."), Length(max=500)])


class RecommendationForm(AppForm):
    assessment = TextAreaField("Assessment", validators=[Length(max=20000)])
    plan = TextAreaField("Recommended plan", validators=[Length(max=20000)])
    refer_up = BooleanField("Refer the patient to a higher-level hospital")
    refer_reason = TextAreaField("Reason for referral", validators=[Length(max=5000)])
    follow_up = TextAreaField("Follow-up", validators=[Length(max=5000)])
    save = SubmitField("Save draft")
    sign = SubmitField("Sign and send")

    def to_data(self) -> RecommendationData:
        return RecommendationData(
            assessment=self.assessment.data or "", plan=self.plan.data or "",
            refer_up=bool(self.refer_up.data), refer_reason=self.refer_reason.data or "",
            follow_up=self.follow_up.data or "",
        )


class EmptyForm(AppForm):
    """A form with only the CSRF token, for one-click actions."""
