"""A notes client in Python: its own pycrdt document, making edits and exchanging updates."""

from __future__ import annotations

import random
import threading

from pycrdt import Doc, Text

from webapp.notes.services import SECTIONS


class Peer:
    """One editor's replica. Edits are ASCII so positions are the same in every unit."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.doc = Doc()
        self.texts = {s: self.doc.get(s, type=Text) for s in SECTIONS}
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.tokens: list[str] = []
        self.counter = 0

    def text(self, section: str = "history") -> str:
        with self.lock:
            return str(self.texts[section])

    def state(self) -> bytes:
        with self.lock:
            return self.doc.get_state()

    def receive(self, update: bytes) -> None:
        with self.lock:
            self.doc.apply_update(update)

    def missing_for(self, state_vector: bytes) -> bytes:
        """What a replica at this state vector lacks from us (our offline edits)."""
        with self.lock:
            return self.doc.get_update(state_vector)

    def insert_token(self, section: str = "history") -> tuple[str, bytes]:
        """Insert a unique token at a random position; returns it and the update to send."""
        with self.lock:
            self.counter += 1
            token = f"<{self.name}{self.counter}>"
            before = self.doc.get_state()
            text = self.texts[section]
            text.insert(self._boundary(str(text)), token)
            self.tokens.append(token)
            return token, self.doc.get_update(before)

    def _boundary(self, current: str) -> int:
        """A random position that does not split another token."""
        spots = [0] + [i + 1 for i, ch in enumerate(current) if ch == ">"]
        return self.rng.choice(spots)

    def append(self, section: str, value: str) -> bytes:
        with self.lock:
            before = self.doc.get_state()
            self.texts[section] += value
            return self.doc.get_update(before)

    def delete(self, section: str, start: int, length: int) -> bytes:
        with self.lock:
            before = self.doc.get_state()
            del self.texts[section][start:start + length]
            return self.doc.get_update(before)
