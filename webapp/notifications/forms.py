"""Forms of the notification pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import SelectMultipleField, TimeField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..forms import AppForm
from ..i18n import N_, translate
from . import texts

CHANNELS = {"email": N_("Email"), "webhook": N_("Webhook")}


def muted_choices() -> list[tuple[str, str]]:
    """Every channel and kind, in the current language: 'Email: A request is offered to you'."""
    return [(f"{c}:{k}", translate(N_("%(channel)s: %(kind)s"),
                                   {"channel": translate(name), "kind": texts.kind_label(k)}))
            for c, name in CHANNELS.items() for k in texts.KINDS]


class MarkReadForm(AppForm):
    """Mark one or all notifications read (CSRF only)."""


class PreferencesForm(AppForm):
    """Which events each channel leaves out, and quiet hours in the user's own zone."""

    muted = SelectMultipleField(
        _l("Do not send"), choices=[(f"{c}:{k}", f"{c}:{k}") for c in CHANNELS for k in texts.KINDS],
        option_widget=CheckboxInput(), widget=ListWidget(prefix_label=False), validators=[Optional()])
    quiet_start = TimeField(_l("Quiet from"), validators=[Optional()])
    quiet_end = TimeField(_l("Quiet until"), validators=[Optional()])

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.muted.choices = muted_choices()  # labels in the language of the request
