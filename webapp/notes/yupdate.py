"""Reading Yjs v1 updates and state vectors before they reach the CRDT: shape checks only.

pycrdt (yrs) refuses bytes it cannot decode, but it silently *parks* an update whose
dependencies it lacks ("pending"), and it accepts content the notes never use (maps, nested
types, formatting). A parked update is invisible, is dropped by a snapshot, and would make a
rebuilt document differ from the live one, so the server reads every update's structure first:
which clients and clock ranges it carries, which items it points at, which ranges it deletes,
and which root types it writes to. The format is lib0's encoding as written by Yjs 13
(``Item.write`` / ``writeDeleteSet`` in UpdateEncoderV1).

It also refuses operations that cut a surrogate pair (an emoji or a rare CJK character is two
UTF-16 units): Yjs turns both halves into U+FFFD while yrs does something else, so the browsers
and the server would silently show different notes. The textarea binding never cuts a pair; only
a foreign or hostile client would, and its update is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_CLOCK = 2**32  # Yjs clocks are 32-bit in practice; refusing more keeps clients' numbers exact

# Content kinds (Item content "ref", the low five bits of the info byte).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
ORIGIN, RIGHT_ORIGIN, PARENT_SUB = 0x80, 0x40, 0x20


class MalformedUpdate(ValueError):
    """The bytes are not a Yjs v1 update (or state vector) the notes accept."""


@dataclass
class UpdateShape:
    """What an update carries: clock ranges per client, referenced ids, deletions, root names."""

    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    references: list[tuple[int, int]] = field(default_factory=list)
    left_origins: list[tuple[int, int]] = field(default_factory=list)
    right_origins: list[tuple[int, int]] = field(default_factory=list)
    low_surrogates: set[tuple[int, int]] = field(default_factory=set)  # ids of second halves
    deletions: list[tuple[int, int, int]] = field(default_factory=list)
    roots: set[str] = field(default_factory=set)

    @property
    def is_empty(self) -> bool:
        """No structs and no deletions: nothing to merge."""
        return not self.ranges and not self.deletions


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedUpdate("unexpected end of update")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self) -> int:
        """lib0 varUint: 7 bits per byte, little-endian, high bit = more."""
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 56:
                raise MalformedUpdate("number too large")

    def clock(self) -> int:
        value = self.uint()
        if value >= MAX_CLOCK:
            raise MalformedUpdate("clock out of range")
        return value

    def string(self) -> str:
        n = self.uint()
        if n > len(self.data) - self.pos:
            raise MalformedUpdate("string runs past the end")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedUpdate("string is not UTF-8") from None

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def utf16_length(text: str) -> int:
    """Length as Yjs counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def read_update(data: bytes, allowed_roots: frozenset[str] | set[str]) -> UpdateShape:
    """Parse a v1 update that may only hold plain text in the given root Y.Text types."""
    r = _Reader(data)
    shape = UpdateShape()
    for _ in range(r.uint()):
        n_structs = r.uint()
        client = r.uint()
        clock = r.clock()
        for _ in range(n_structs):
            info = r.byte()
            kind = info & 0x1F
            if kind == GC:
                length = r.uint()
                shape.ranges.setdefault(client, []).append((clock, clock + length))
            elif kind == SKIP:
                length = r.uint()  # a gap: these clocks are *not* carried
            else:
                if info & PARENT_SUB:
                    raise MalformedUpdate("map entries are not part of the notes")
                if info & ORIGIN:
                    shape.left_origins.append((r.uint(), r.clock()))
                    shape.references.append(shape.left_origins[-1])
                if info & RIGHT_ORIGIN:
                    shape.right_origins.append((r.uint(), r.clock()))
                    shape.references.append(shape.right_origins[-1])
                if not info & (ORIGIN | RIGHT_ORIGIN):
                    if r.uint() != 1:
                        raise MalformedUpdate("nested types are not part of the notes")
                    root = r.string()
                    if root not in allowed_roots:
                        raise MalformedUpdate(f"unknown notes section {root[:40]!r}")
                    shape.roots.add(root)
                if kind == STRING:
                    text = r.string()
                    length = utf16_length(text)
                    if length != len(text):  # astral characters: remember where their second halves are
                        unit = clock
                        for ch in text:
                            if ord(ch) > 0xFFFF:
                                shape.low_surrogates.add((client, unit + 1))
                                unit += 2
                            else:
                                unit += 1
                elif kind == DELETED:
                    length = r.uint()
                else:
                    raise MalformedUpdate("only plain text is allowed in the notes")
                if length == 0:
                    raise MalformedUpdate("empty item")
                shape.ranges.setdefault(client, []).append((clock, clock + length))
            clock += length
            if clock > MAX_CLOCK:
                raise MalformedUpdate("clock out of range")
    for _ in range(r.uint()):
        client = r.uint()
        for _ in range(r.uint()):
            start, length = r.clock(), r.clock()
            if start + length > MAX_CLOCK:
                raise MalformedUpdate("clock out of range")
            shape.deletions.append((client, start, length))
    if not r.at_end():
        raise MalformedUpdate("trailing bytes after the update")
    return shape


def read_state_vector(data: bytes) -> dict[int, int]:
    """Parse a v1 state vector: client id -> next expected clock."""
    r = _Reader(data)
    state: dict[int, int] = {}
    for _ in range(r.uint()):
        client = r.uint()
        state[client] = r.clock()
    if not r.at_end():
        raise MalformedUpdate("trailing bytes after the state vector")
    return state


def missing_dependencies(shape: UpdateShape, state: dict[int, int]) -> str | None:
    """Why the update cannot be integrated into a document at `state`, or None if it can.

    Every client's carried range must start inside what is already known (no gap), and every
    item it points at (origins) or deletes must be known or carried by the update itself.
    """
    known = dict(state)
    for client, ranges in shape.ranges.items():
        covered = state.get(client, 0)
        for start, end in sorted(ranges):
            if start > covered:
                return f"changes of client {client} from clock {covered} are missing"
            covered = max(covered, end)
        known[client] = covered
    for client, clock in shape.references:
        if clock >= known.get(client, 0):
            return f"refers to an unknown change ({client}, {clock})"
    for client, start, length in shape.deletions:
        if start + length > known.get(client, 0):
            return f"deletes unknown changes of client {client}"
    return None


def cuts_surrogate_pair(shape: UpdateShape, low_surrogates: set[tuple[int, int]]) -> bool:
    """Whether the update inserts or deletes between the two halves of a character.

    `low_surrogates` holds the ids of second halves already in the document; the update's own are
    added. An insert cuts a pair when its left origin is a first half or its right origin a second
    half; a deletion when it starts or stops between the halves.
    """
    lows = low_surrogates | shape.low_surrogates
    if any((client, clock + 1) in lows for client, clock in shape.left_origins):
        return True
    if any(origin in lows for origin in shape.right_origins):
        return True
    return any((client, start) in lows or (client, start + length) in lows
               for client, start, length in shape.deletions)
