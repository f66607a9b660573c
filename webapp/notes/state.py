"""The notes domain's per-app state: live documents, rate limiters and editors, in app.extensions.

Nothing in webapp/notes keeps mutable state at module level: each Flask app (a process serving
one app, or each app a test session builds) has its own ``NotesState``, made on first use.
``reset`` gives an app a fresh one (what a restart does to this process; the database stays).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask, current_app
from limits.strategies import MovingWindowRateLimiter

from .editors import Editors

if TYPE_CHECKING:
    from .document import LiveDoc

STATE_KEY = "huizhen.notes"


@dataclass
class DocumentCache:
    """Live documents by consult id, least recently used first; `lock` guards the dict only."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    docs: OrderedDict[int, LiveDoc] = field(default_factory=OrderedDict)


@dataclass
class NotesState:
    """Everything the notes domain keeps in memory for one app."""

    cache: DocumentCache = field(default_factory=DocumentCache)
    limiters: dict[str, MovingWindowRateLimiter] = field(default_factory=dict)  # by storage URI
    editors: Editors = field(default_factory=Editors)


def notes_state(app: Flask | None = None) -> NotesState:
    """The notes state of `app` (default: the current app), made on first use."""
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get(STATE_KEY)
    if state is None:  # dict.setdefault is atomic: two first uses at once share one state
        state = app.extensions.setdefault(STATE_KEY, NotesState())
    return state


def reset(app: Flask | None = None) -> None:
    """Give the app fresh notes state: no cached documents, limiters or editors (the database stays)."""
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    app.extensions[STATE_KEY] = NotesState()
