"""The weekly availability form."""

from __future__ import annotations

from wtforms import FieldList, Form, FormField, SelectField

from ..forms import AppForm
from .services import WEEKDAYS

QUARTERS = [("", "—")] + [(str(m), f"{m // 60:02d}:{m % 60:02d}") for m in range(0, 24 * 60 + 1, 15)]


class WindowForm(Form):
    weekday = SelectField("Day", choices=[("", "—")] + [(str(i), d) for i, d in enumerate(WEEKDAYS)])
    start = SelectField("From", choices=QUARTERS)
    end = SelectField("To", choices=QUARTERS)


class AvailabilityForm(AppForm):
    windows = FieldList(FormField(WindowForm), min_entries=14, max_entries=40)
