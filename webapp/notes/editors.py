"""Who is in which consult's notes and where they are typing (one app's connections)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Editor:
    """One connection's place in a consult's notes."""

    consult_id: int
    user_id: int
    name: str
    section: str | None = None
    cursor: str | None = None

    def wire(self) -> dict[str, Any]:
        """The editor as sent to the other clients."""
        return {"user_id": self.user_id, "name": self.name, "section": self.section, "cursor": self.cursor}


class Editors:
    """Which connection is in which consult's notes and where it is typing, in this app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Editor] = {}

    def join(self, sid: str, consult_id: int, user_id: int, name: str) -> None:
        """The connection now edits this consult's notes (any earlier one is left)."""
        with self._lock:
            self._by_sid[sid] = Editor(consult_id, user_id, name)

    def remove(self, sid: str) -> Editor | None:
        """Forget a connection; what it was editing, if anything."""
        with self._lock:
            return self._by_sid.pop(sid, None)

    def consult_of(self, sid: str) -> int | None:
        """The consult whose notes the connection joined, if any."""
        with self._lock:
            entry = self._by_sid.get(sid)
            return entry.consult_id if entry else None

    def focus(self, sid: str, section: str | None, cursor: str | None) -> None:
        """Where the connection is typing now (None: nowhere)."""
        with self._lock:
            entry = self._by_sid.get(sid)
            if entry is not None:
                entry.section, entry.cursor = section, cursor

    def in_consult(self, consult_id: int, *, except_sid: str | None = None) -> list[dict[str, Any]]:
        """The editors of a consult who are typing somewhere, for a client that joins."""
        with self._lock:
            return [e.wire() for sid, e in self._by_sid.items()
                    if e.consult_id == consult_id and sid != except_sid and e.section]
