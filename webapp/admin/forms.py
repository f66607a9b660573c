"""Coordinator forms."""

from __future__ import annotations

from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from ..forms import AppForm
from ..models import FacilityLevel


class FacilityForm(AppForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=160)])
    level = SelectField("Level", choices=[(lv.value, lv.label) for lv in FacilityLevel])
    region = StringField("Region", validators=[DataRequired(), Length(max=120)])


class PartnershipForm(AppForm):
    facility_id = SelectField("Facility", coerce=int)
    partner_id = SelectField("Partner hospital", coerce=int)


class AssignForm(AppForm):
    specialist_id = SelectField("Specialist", coerce=int)


class RejectForm(AppForm):
    note = TextAreaField("Reason", validators=[DataRequired("Give a reason."), Length(max=500)])


class SuspendForm(AppForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Give a reason."), Length(max=500)])
