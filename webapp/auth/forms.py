"""Sign-in, registration and password forms."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import available_timezones

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
from ..models import LANGUAGES, SPECIALTIES, Role

PASSWORD_HELP = "At least 10 characters."


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
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    remember = BooleanField("Keep me signed in on this device")


class RegistrationForm(AppForm):
    full_name = StringField("Full name", validators=[DataRequired(), Length(max=120)])
    email = EmailField("Work email",
                       validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=10, max=200)],
                             description=PASSWORD_HELP)
    confirm = PasswordField("Repeat password",
                            validators=[DataRequired(), EqualTo("password", "The passwords differ.")])
    role = SelectField("I am a", choices=[(Role.RURAL_DOCTOR.value, "Rural doctor (I request consults)"),
                                          (Role.SPECIALIST.value, "Specialist (I answer consults)")])
    facility_id = SelectField("Facility", coerce=int, validators=[DataRequired("Choose your facility.")])
    specialty = SelectField("Specialty (specialists)", choices=[("", "—")] + list(SPECIALTIES.items()),
                            validators=[Optional()])
    languages = MultiCheckboxField("Consultation languages", choices=list(LANGUAGES.items()),
                                   default=["zh-CN"], validators=[DataRequired("Choose at least one language.")])
    licence_number = StringField("Medical licence number", validators=[DataRequired(), Length(max=40)])
    timezone = SelectField("Time zone", default="Asia/Shanghai")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timezone.choices = timezone_choices()


class PasswordChangeForm(AppForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)],
                                 description=PASSWORD_HELP)
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords differ.")])


class ForgotPasswordForm(AppForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(AppForm):
    new_password = PasswordField("New password", validators=[DataRequired(), Length(min=10, max=200)],
                                 description=PASSWORD_HELP)
    confirm = PasswordField("Repeat new password",
                            validators=[DataRequired(), EqualTo("new_password", "The passwords differ.")])
