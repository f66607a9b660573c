"""The weekly availability form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import FieldList, Form, FormField, SelectField

from .services import WEEKDAYS

QUARTERS = [("", "—")] + [(str(m), f"{m // 60:02d}:{m % 60:02d}") for m in range(0, 24 * 60 + 1, 15)]


class WindowForm(Form):
    weekday = SelectField("Day", choices=[("", "—")] + [(str(i), d) for i, d in enumerate(WEEKDAYS)])
    start = SelectField("From", choices=QUARTERS)
    end = SelectField("To", choices=QUARTERS)


class AvailabilityForm(FlaskForm):
    windows = FieldList(FormField(WindowForm), min_entries=14, max_entries=40)
