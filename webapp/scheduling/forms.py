"""The weekly availability form."""

from __future__ import annotations

from flask import request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    FieldList,
    Form,
    FormField,
    SelectField,
    StringField,
    SubmitField,
    ValidationError,
)
from wtforms.validators import DataRequired, Length, Optional

from ..forms import AppForm
from .services import WEEKDAYS

QUARTERS = [("", "—")] + [(str(m), f"{m // 60:02d}:{m % 60:02d}") for m in range(0, 24 * 60 + 1, 15)]
# Every window fits at least one consult, so a week holds at most 7 × 48 windows of 30 minutes.
MAX_WINDOWS = 7 * 48
BLANK_ROWS = 2


class WindowForm(Form):
    weekday = SelectField(_l("Day"), choices=[("", "—")] + [(str(i), _l(d)) for i, d in enumerate(WEEKDAYS)])
    start = SelectField(_l("From"), choices=QUARTERS)
    end = SelectField(_l("To"), choices=QUARTERS)
    remove = BooleanField(_l("Remove"))


class AvailabilityForm(AppForm):
    windows = FieldList(FormField(WindowForm), min_entries=1, max_entries=MAX_WINDOWS)
    add_row = SubmitField(_l("Add a row"))
    save = SubmitField(_l("Save availability"))

    def validate_windows(self, field: FieldList) -> None:
        """Lines are numbered as the page numbers them; a line far beyond that is not ours."""
        numbers = (key.split("-")[1] for key in request.form if key.startswith(f"{field.name}-"))
        if any(not n.isdigit() or int(n) >= MAX_WINDOWS for n in numbers):
            raise ValidationError(_("At most %(count)s lines.", count=MAX_WINDOWS))


class LeaveForm(AppForm):
    first_day = DateField(_l("First day"), validators=[DataRequired(_l("Give the first day."))])
    last_day = DateField(_l("Last day"), validators=[DataRequired(_l("Give the last day."))])
    note = StringField(_l("Note (optional)"), validators=[Optional(), Length(max=120)])


class ExtraHoursForm(AppForm):
    day = DateField(_l("Date"), validators=[DataRequired(_l("Give the date."))])
    start = SelectField(_l("From"), choices=QUARTERS[1:])
    end = SelectField(_l("To"), choices=QUARTERS[1:])
    note = StringField(_l("Note (optional)"), validators=[Optional(), Length(max=120)])
