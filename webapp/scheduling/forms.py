"""The weekly availability form."""

from __future__ import annotations

from flask import request
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
    weekday = SelectField("Day", choices=[("", "—")] + [(str(i), d) for i, d in enumerate(WEEKDAYS)])
    start = SelectField("From", choices=QUARTERS)
    end = SelectField("To", choices=QUARTERS)
    remove = BooleanField("Remove")


class AvailabilityForm(AppForm):
    windows = FieldList(FormField(WindowForm), min_entries=1, max_entries=MAX_WINDOWS)
    add_row = SubmitField("Add a row")
    save = SubmitField("Save availability")

    def validate_windows(self, field: FieldList) -> None:
        """Lines are numbered as the page numbers them; a line far beyond that is not ours."""
        numbers = (key.split("-")[1] for key in request.form if key.startswith(f"{field.name}-"))
        if any(not n.isdigit() or int(n) >= MAX_WINDOWS for n in numbers):
            raise ValidationError(f"At most {MAX_WINDOWS} lines.")


class LeaveForm(AppForm):
    first_day = DateField("First day", validators=[DataRequired("Give the first day.")])
    last_day = DateField("Last day", validators=[DataRequired("Give the last day.")])
    note = StringField("Note (optional)", validators=[Optional(), Length(max=120)])


class ExtraHoursForm(AppForm):
    day = DateField("Date", validators=[DataRequired("Give the date.")])
    start = SelectField("From", choices=QUARTERS[1:])
    end = SelectField("To", choices=QUARTERS[1:])
    note = StringField("Note (optional)", validators=[Optional(), Length(max=120)])
