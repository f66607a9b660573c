"""Checks of production settings: how guessable the secret key is, what an allowed origin looks like."""

from __future__ import annotations

import math
import re
from collections import Counter
from urllib.parse import urlsplit

MIN_SECRET_BITS = 128
_ZXCVBN_CHUNK = 72  # zxcvbn looks at no more than this many characters at once
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)$")


MIN_SECRET_CHARS = 32
# Words an operator is likely to build a key from, besides zxcvbn's own dictionaries.
PROJECT_WORDS = ["huizhen", "telemedicine", "consult", "specialist", "flask", "secret", "production", "key",
                 "gansu", "hospital", "doctor", "password", "django", "changeme"]


def shannon_bits(key: str) -> float:
    """Length × the Shannon entropy of the key's own character distribution (repeats score low)."""
    if not key:
        return 0.0
    counts = Counter(key)
    return -sum(n * math.log2(n / len(key)) for n in counts.values())


def pattern_bits(key: str) -> float:
    """Bits to guess the key for an attacker who knows the patterns people use.

    zxcvbn splits the key into words (its dictionaries and PROJECT_WORDS, also reversed or in
    l33t), repeats, sequences, keyboard walks and dates, each costing log2(its guesses); what is
    left is counted as random characters at the key's own Shannon entropy per character.
    """
    from zxcvbn import zxcvbn

    per_char = shannon_bits(key) / max(len(key), 1)
    bits = 0.0
    for start in range(0, len(key), _ZXCVBN_CHUNK):
        result = zxcvbn(key[start:start + _ZXCVBN_CHUNK], user_inputs=PROJECT_WORDS, max_length=_ZXCVBN_CHUNK)
        for match in result["sequence"]:
            if match["pattern"] == "bruteforce":
                bits += len(match["token"]) * per_char
            else:
                bits += min(math.log2(max(float(match["guesses"]), 1.0)), len(match["token"]) * per_char)
    return bits


def secret_key_bits(key: str) -> float:
    """The entropy estimate of a key: the lower of its pattern-aware and Shannon estimates."""
    return min(pattern_bits(key), shannon_bits(key)) if key else 0.0


def secret_key_problem(key: object) -> str | None:
    """Why a SECRET_KEY is guessable (unset, short, repetitive, dictionary-like, patterned), or None.

    Needs at least 32 characters and an estimated 128 bits of entropy (``secret_key_bits``):
    ``secrets.token_urlsafe(48)`` scores about 300.
    """
    if not isinstance(key, str) or not key:
        return "is unset"
    if len(key) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    bits = secret_key_bits(key)
    if bits < MIN_SECRET_BITS:
        return (f"is guessable: about {bits:.0f} bits of entropy, {MIN_SECRET_BITS} needed (words, repeats, "
                "sequences, keyboard patterns and dates count for little)")
    return None


def origin_problem(origin: object) -> str | None:
    """Why a value cannot be a browser Origin (``scheme://host[:port]``, http or https), or None."""
    if not isinstance(origin, str) or not origin:
        return "is empty"
    if origin != origin.strip() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in origin):
        return "contains whitespace or control characters"
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// origin"
    try:
        port = parts.port
    except ValueError:
        return "has an invalid port"
    host = parts.hostname or ""
    rebuilt = f"{parts.scheme}://{parts.netloc}"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "contains user information"
    if rebuilt != origin or parts.path or parts.query or parts.fragment:
        return "has a path, query or fragment (an origin is scheme://host[:port] only)"
    netloc_host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if not host or not _HOST.match(netloc_host):
        return "has no valid host"
    if port is not None and not 0 < port < 65536:
        return "has an invalid port"
    return None
