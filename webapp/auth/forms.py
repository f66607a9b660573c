"""Sign-in, registration and password forms."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import available_timezones

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from ..forms import AppForm
from ..models import LANGUAGES, Role, specialty_choices

PASSWORD_HELP = _l("At least 10 characters.")
PASSWORDS_DIFFER = _l("The passwords differ.")


@lru_cache
def timezone_choices() -> list[tuple[str, str]]:
    """Every IANA zone a clinician may live in, China's first."""
    zones = sorted(z for z in available_timezones()
                   if "/" in z and not z.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/")))
    first = ["Asia/Shanghai", "Asia/Urumqi", "Asia/Hong_Kong"]
    return [(z, z.replace("_", " ")) for z in first + [z for z in zones if z not in first]]


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class LoginForm(AppForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])
    remember = BooleanField(_l("Keep me signed in on this device"))


class RegistrationForm(AppForm):
    full_name = StringField(_l("Full name"), validators=[DataRequired(), Length(max=120)])
    email = EmailField(_l("Work email"),
                       validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(min=10, max=200)],
                             description=PASSWORD_HELP)
    confirm = PasswordField(_l("Repeat password"),
                            validators=[DataRequired(), EqualTo("password", PASSWORDS_DIFFER)])
    role = SelectField(_l("I am a"), choices=[(Role.RURAL_DOCTOR.value, _l("Rural doctor (I request consults)")),
                                              (Role.SPECIALIST.value, _l("Specialist (I answer consults)"))])
    facility_id = SelectField(_l("Facility"), coerce=int, validators=[DataRequired(_l("Choose your facility."))])
    specialty = SelectField(_l("Specialty (specialists)"), validators=[Optional()])
    languages = MultiCheckboxField(_l("Consultation languages"), choices=list(LANGUAGES.items()),
                                   default=["zh-CN"], validators=[DataRequired(_l("Choose at least one language."))])
    licence_number = StringField(_l("Medical licence number"), validators=[DataRequired(), Length(max=40)])
    timezone = SelectField(_l("Time zone"), default="Asia/Shanghai")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timezone.choices = timezone_choices()
        self.specialty.choices = [("", _l("—"))] + specialty_choices()  # in this request's language


class PasswordChangeForm(AppForm):
    current_password = PasswordField(_l("Current password"), validators=[DataRequired()])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(min=10, max=200)],
                                 description=PASSWORD_HELP)
    confirm = PasswordField(_l("Repeat new password"),
                            validators=[DataRequired(), EqualTo("new_password", PASSWORDS_DIFFER)])


class ForgotPasswordForm(AppForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(AppForm):
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(min=10, max=200)],
                                 description=PASSWORD_HELP)
    confirm = PasswordField(_l("Repeat new password"),
                            validators=[DataRequired(), EqualTo("new_password", PASSWORDS_DIFFER)])
