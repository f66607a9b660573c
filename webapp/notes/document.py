"""The notes document: its sections, and one consult's pycrdt document as held in memory."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Text

from ..i18n import N_, translate
from . import yupdate

log = logging.getLogger(__name__)

SECTIONS: tuple[str, ...] = ("history", "findings", "assessment", "plan")
SECTION_LABELS: dict[str, str] = {  # msgids: translated where shown (section_labels)
    "history": N_("History"),
    "findings": N_("Examination and findings"),
    "assessment": N_("Assessment"),
    "plan": N_("Plan"),
}
EMPTY_STATE = b"\x00\x00"  # a Yjs v1 update with no structs and no deletions


def section_labels() -> dict[str, str]:
    """Each section's label in the current language, in section order."""
    return {name: translate(SECTION_LABELS[name]) for name in SECTIONS}


@dataclass
class LiveDoc:
    """One consult's document in this process, caught up to update `upto`."""

    doc: Doc
    texts: dict[str, Text]
    upto: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    touched: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    subscriptions: list[Any] = field(default_factory=list)
    low_surrogates: set[tuple[int, int]] = field(default_factory=set)  # see yupdate.cuts_surrogate_pair

    def index(self, data: bytes) -> None:
        """Remember where the second halves of astral characters are in stored content."""
        try:
            self.low_surrogates |= yupdate.read_update(data, frozenset(SECTIONS)).low_surrogates
        except yupdate.MalformedUpdate:  # not expected for stored updates; the check is then partial
            log.warning("a stored notes update could not be indexed")

    def take_touched(self) -> dict[str, list[dict[str, Any]]]:
        """The text deltas seen since the last call, by section."""
        touched, self.touched = self.touched, {}
        return touched

    def texts_now(self) -> dict[str, str]:
        """The current text of every section (the caller holds `lock` if others may write)."""
        return {name: str(text) for name, text in self.texts.items()}


def new_live(state: bytes | None = None) -> LiveDoc:
    """A document with the notes' sections, optionally starting from a stored state."""
    doc = Doc()
    texts = {name: doc.get(name, type=Text) for name in SECTIONS}
    live = LiveDoc(doc=doc, texts=texts)
    for name, text in texts.items():
        live.subscriptions.append(text.observe(_collector(live, name)))
    if state:
        doc.apply_update(state)
        live.index(state)
        live.take_touched()
    return live


def _collector(live: LiveDoc, name: str) -> Callable[[Any], None]:
    def on_change(event: Any) -> None:
        live.touched.setdefault(name, []).extend(event.delta)

    return on_change
