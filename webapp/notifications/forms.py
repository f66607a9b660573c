"""Forms of the notification pages."""

from __future__ import annotations

from wtforms import SelectMultipleField, TimeField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..forms import AppForm
from . import texts


class MarkReadForm(AppForm):
    """Mark one or all notifications read (CSRF only)."""


class PreferencesForm(AppForm):
    """Which events each channel leaves out, and quiet hours in the user's own zone."""

    muted = SelectMultipleField(
        "Do not send", choices=[(f"{c}:{k}", f"{c}: {texts.TITLES[k].split('{')[0] or k}… ({k})")
                                for c in ("email", "webhook") for k in texts.KINDS],
        option_widget=CheckboxInput(), widget=ListWidget(prefix_label=False), validators=[Optional()])
    quiet_start = TimeField("Quiet from", validators=[Optional()])
    quiet_end = TimeField("Quiet until", validators=[Optional()])
