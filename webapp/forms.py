"""The base of every form: one message per field."""

from __future__ import annotations

from flask_wtf import FlaskForm


class AppForm(FlaskForm):
    """A Flask-WTF form that keeps only the first failing check's message for each field.

    WTForms runs every validator of a field even after one failed (and after the value could not
    be read at all), so "abc" for a temperature said both "Not a valid decimal value" and "Between
    30 and 45 °C". The first message is the one that explains the problem; the rest follow from it.
    Every form of the application derives from this class (tests/test_forms.py checks it).
    """

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        for f in self:
            # A plain field's errors are messages; FieldList/FormField errors are per entry.
            if isinstance(f.errors, list) and len(f.errors) > 1 and all(isinstance(e, str) for e in f.errors):
                f.errors = f.errors[:1]
        return ok
