"""Coordinator forms."""

from __future__ import annotations

from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ..audit.log import AuditFilter
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


class AuditFilterForm(AppForm):
    """The audit log's filters (a GET form: no CSRF token); choices are set by the view."""

    class Meta:
        csrf = False

    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])
    user = SelectField("User", choices=[("", "Anyone")], default="")
    consult = StringField("Consult reference", validators=[Optional(), Length(max=64)])
    action = SelectField("Action", choices=[("", "Any action")], default="")

    def validate_date_to(self, field) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")

    def to_filter(self) -> AuditFilter:
        return AuditFilter(
            date_from=self.date_from.data, date_to=self.date_to.data,
            user_id=int(self.user.data) if self.user.data else None,
            consult_ref=(self.consult.data or "").strip() or None, action=self.action.data or None,
        )
