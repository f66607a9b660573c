"""Coordinator forms."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import DateField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from ..audit.log import AuditFilter
from ..forms import AppForm
from ..models import FacilityLevel


class FacilityForm(AppForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=160)])
    level = SelectField(_l("Level"), choices=[lv.value for lv in FacilityLevel])
    region = StringField(_l("Region"), validators=[DataRequired(), Length(max=120)])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.level.choices = [(lv.value, lv.label) for lv in FacilityLevel]  # in this request's language


class PartnershipForm(AppForm):
    facility_id = SelectField(_l("Facility"), coerce=int)
    partner_id = SelectField(_l("Partner hospital"), coerce=int)


class AssignForm(AppForm):
    specialist_id = SelectField(_l("Specialist"), coerce=int)


class RejectForm(AppForm):
    note = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=500)])


class SuspendForm(AppForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Give a reason.")), Length(max=500)])


class AuditFilterForm(AppForm):
    """The audit log's filters (a GET form: no CSRF token); choices are set by the view."""

    class Meta:
        csrf = False

    date_from = DateField(_l("From"), validators=[Optional()])
    date_to = DateField(_l("To"), validators=[Optional()])
    user = SelectField(_l("User"), choices=[("", _l("Anyone"))], default="")
    consult = StringField(_l("Consult reference"), validators=[Optional(), Length(max=64)])
    action = SelectField(_l("Action"), choices=[("", _l("Any action"))], default="")

    def validate_date_to(self, field) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError(_("The end date is before the start date."))

    def to_filter(self) -> AuditFilter:
        return AuditFilter(
            date_from=self.date_from.data, date_to=self.date_to.data,
            user_id=int(self.user.data) if self.user.data else None,
            consult_ref=(self.consult.data or "").strip() or None, action=self.action.data or None,
        )
