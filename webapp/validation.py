"""Shared checks for untrusted text and numbers (Socket.IO payloads, JSON bodies).

Every value a client sends must be storable and relayable as is: text without NUL characters
(PostgreSQL refuses them) or lone UTF-16 surrogates (no database driver or UTF-8 encoder takes
them), and numbers that fit the column they are compared with (a 32-bit ``INTEGER`` on
PostgreSQL, 64 bits on SQLite). A value that breaks these rules is a ``ValidationFailed`` (an
error acknowledgement, or a 422), never a driver error deep in a query (a 500).
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ValidationFailed
from .i18n import N_

DB_INT_MAX = 2**31 - 1  # INTEGER columns (ids, sequence numbers) on PostgreSQL
JSON_SAFE_INT = 2**53 - 1  # the largest integer a browser can send exactly
MAX_DEPTH = 16
# NUL, the other C0 controls except tab/newline/carriage return, and lone surrogates.
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_FORBIDDEN_ANYWHERE = re.compile(r"[\x00\ud800-\udfff]")


# Each problem text_problem() names, as a whole message about a field and about a Socket.IO payload.
_FIELD_PROBLEMS = {
    "contains a NUL character": N_("%(name)s contains a NUL character."),
    "is not valid Unicode (a lone surrogate)": N_("%(name)s is not valid Unicode (a lone surrogate)."),
    "contains a control character": N_("%(name)s contains a control character."),
}
_PAYLOAD_PROBLEMS = {
    "contains a NUL character": N_("The payload contains a NUL character."),
    "is not valid Unicode (a lone surrogate)": N_("The payload is not valid Unicode (a lone surrogate)."),
    "contains a control character": N_("The payload contains a control character."),
}


def text_problem(value: str, *, controls: bool = True) -> str | None:
    """Why a string cannot be stored or relayed (NUL, lone surrogate, control character), or None."""
    found = (_FORBIDDEN_TEXT if controls else _FORBIDDEN_ANYWHERE).search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character"
    if "\ud800" <= char <= "\udfff":
        return "is not valid Unicode (a lone surrogate)"
    return "contains a control character"


def clean_text(value: Any, name: str, *, max_len: int, optional: bool = False,
               controls: bool = True) -> str | None:
    """A string of at most max_len characters that can be stored, else ValidationFailed."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValidationFailed("%(name)s must be text.", fields={name: "invalid"}, name=name)
    if len(value) > max_len:
        raise ValidationFailed("%(name)s is longer than %(max)s characters.", fields={name: "invalid"},
                               name=name, max=max_len)
    problem = text_problem(value, controls=controls)
    if problem:
        raise ValidationFailed(_FIELD_PROBLEMS[problem], fields={name: "invalid"}, name=name)
    return value


def clean_int(value: Any, name: str, *, lo: int = 0, hi: int = DB_INT_MAX, optional: bool = False,
              default: int | None = None) -> int | None:
    """An integer (not a bool, not a float) within [lo, hi], else ValidationFailed."""
    if value is None:
        if default is not None:
            return default
        if optional:
            return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValidationFailed("%(name)s must be a whole number from %(lo)s to %(hi)s.", fields={name: "invalid"},
                               name=name, lo=lo, hi=hi)
    return value


def check_payload(data: Any) -> None:
    """Refuse a Socket.IO payload holding any value nothing downstream can take.

    Walks the decoded JSON: every key and string must be free of NUL and lone surrogates, every
    number finite and every integer within what a browser can send (±2⁵³); nesting is bounded.
    Field-specific limits (an id's range, a text's length) are checked by each use case.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValidationFailed("The payload is nested too deeply.")
        if isinstance(value, str):
            problem = text_problem(value, controls=False)
            if problem:
                raise ValidationFailed(_PAYLOAD_PROBLEMS[problem])
        elif isinstance(value, bool) or value is None or isinstance(value, (bytes, bytearray)):
            continue
        elif isinstance(value, int):
            if abs(value) > JSON_SAFE_INT:
                raise ValidationFailed("The payload holds a number that is too large.")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationFailed("The payload holds a number that is not finite.")
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, depth + 1))
                stack.append((item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        else:
            raise ValidationFailed("The payload holds a value of an unknown type.")


def safe_local_path(target: Any) -> str | None:
    """target if it is a path on this site (for a ``next``/``back`` link or redirect), else None.

    Browsers read ``/\\evil.example`` and ``//evil.example`` as another host, drop tabs and
    newlines inside a URL and strip leading spaces and control characters, so the value must start
    with exactly one '/', hold no backslash, no '//' in its path and no scheme or host, both as
    given and after percent-decoding, and contain no whitespace or control character at all.
    """
    if not isinstance(target, str) or not target or len(target) > 2048:
        return None
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target) or text_problem(target):
        return None
    for candidate in (target, unquote(target)):
        path = candidate.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/") or "//" in path or "\\" in candidate:
            return None
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return None
    return target
