"""What the domains above consults plug into it, per app: consults never imports rooms, video or notes.

The consult is the lower domain: rooms, video and notes build on it (and import it), never the other
way round. Where consults needs something of theirs, it asks through these hooks, which the app
factory fills (webapp/__init__.py, ``register_consult_hooks``):

- ``page_context``: extra values for the consult page (the room's opening time, the calls...);
- ``on_sign_off``: work that must be part of the sign-off's transaction (the notes are fixed);
- ``shared_notes``: the shared notes' current text by section, for the answer form.

tests/consults/test_layering.py checks the rule on every module of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from ..models import Consult, User

HOOKS_KEY = "huizhen.consult_hooks"

PageContext = Callable[[User, Consult], dict[str, Any]]
SignOff = Callable[[Consult], Any]
SharedNotes = Callable[[Consult], dict[str, str]]


@dataclass
class ConsultHooks:
    """One app's hooks, in the order they were added."""

    page_context: list[PageContext] = field(default_factory=list)
    on_sign_off: list[SignOff] = field(default_factory=list)
    shared_notes: SharedNotes | None = None


def hooks_of(app: Flask | None = None) -> ConsultHooks:
    """The consult hooks of `app` (default: the current app), made empty on first use."""
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(HOOKS_KEY)
    if found is None:
        found = app.extensions.setdefault(HOOKS_KEY, ConsultHooks())
    return found


def add_page_context(app: Flask, provider: PageContext) -> None:
    """Let a domain add values to the consult page's template context."""
    hooks_of(app).page_context.append(provider)


def add_sign_off(app: Flask, step: SignOff) -> None:
    """Let a domain take part in the sign-off: `step(consult)` runs inside its transaction, before the commit."""
    hooks_of(app).on_sign_off.append(step)


def provide_shared_notes(app: Flask, provider: SharedNotes) -> None:
    """Say where the shared notes' current text comes from (one provider per app)."""
    hooks_of(app).shared_notes = provider


def page_context(user: User, consult: Consult) -> dict[str, Any]:
    """What the domains add to the consult page for this viewer."""
    context: dict[str, Any] = {}
    for provider in hooks_of().page_context:
        context.update(provider(user, consult))
    return context


def sign_off(consult: Consult) -> None:
    """Run the domains' sign-off steps (inside the sign-off transaction)."""
    for step in hooks_of().on_sign_off:
        step(consult)


def shared_notes(consult: Consult) -> dict[str, str]:
    """The shared notes' current text by section (empty when the app has no notes domain)."""
    provider = hooks_of().shared_notes
    return provider(consult) if provider is not None else {}
