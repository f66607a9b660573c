"""The notes' limits: settings, the per-user update rate, and the size and shape of what clients send."""

from __future__ import annotations

from typing import Any

from flask import current_app
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..errors import DomainError, ValidationFailed
from ..i18n import N_
from ..models import User
from . import yupdate
from .document import SECTIONS
from .state import notes_state

DEFAULTS: dict[str, int] = {
    "NOTES_MAX_UPDATE_BYTES": 64 * 1024,
    "NOTES_MAX_CHARS": 60_000,  # all sections together
    "NOTES_SNAPSHOT_EVERY": 100,
    "NOTES_UPDATES_PER_SECOND": 40,
    "NOTES_CACHE_SIZE": 256,
    "NOTES_HISTORY_GROUP_SECONDS": 120,
}
MAX_STATE_VECTOR_BYTES = 64 * 1024


class TooManyUpdates(DomainError):
    status = 429
    code = "rate_limited"


def setting(name: str) -> int:
    """A notes setting from the app config, with its default."""
    return int(current_app.config.get(name, DEFAULTS[name]))


def _limiter() -> MovingWindowRateLimiter:
    """This app's limiter on its configured storage (one per storage URI)."""
    uri = current_app.config["RATELIMIT_STORAGE_URI"]
    limiters = notes_state().limiters
    limiter = limiters.get(uri)
    if limiter is None:
        limiter = limiters.setdefault(uri, MovingWindowRateLimiter(storage_from_string(uri)))
    return limiter


def check_rate(user: User) -> None:
    """Refuse a client sending more than NOTES_UPDATES_PER_SECOND (nothing is lost: it resyncs)."""
    try:
        allowed = _limiter().hit(RateLimitItemPerSecond(setting("NOTES_UPDATES_PER_SECOND")), "notes", str(user.id))
    except Exception:  # the limiter's storage is down: do not refuse clinical notes over it
        current_app.logger.warning("notes rate limiter unavailable; allowing update")
        return
    if not allowed:
        raise TooManyUpdates(N_("Edits are arriving too fast; they will be sent again in a moment."))


# what _as_bytes checks -> (not binary, too large) messages, whole sentences for the catalog
_BYTES_MESSAGES = {
    "update": (N_("The notes update must be binary."),
               N_("The notes update is too large (%(size)s bytes; the limit is %(limit)s).")),
    "state vector": (N_("The state vector must be binary."),
                     N_("The state vector is too large (%(size)s bytes; the limit is %(limit)s).")),
}


def _as_bytes(value: Any, what: str, limit: int) -> bytes:
    not_binary, too_large = _BYTES_MESSAGES[what]
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise ValidationFailed(not_binary)
    if len(value) > limit:
        raise ValidationFailed(too_large, size=len(value), limit=limit)
    return value


def check_update(data: Any) -> tuple[bytes, yupdate.UpdateShape]:
    """Validate a client update's type, size and structure (plain text in known sections only)."""
    raw = _as_bytes(data, "update", setting("NOTES_MAX_UPDATE_BYTES"))
    try:
        return raw, yupdate.read_update(raw, frozenset(SECTIONS))
    except yupdate.MalformedUpdate as exc:
        raise ValidationFailed("The notes update is not valid: %(problem)s.", problem=str(exc)) from None


def check_state_vector(data: Any) -> bytes:
    """Validate a client's state vector (empty means 'I have nothing')."""
    if data is None or data == b"":
        return b"\x00"
    raw = _as_bytes(data, "state vector", MAX_STATE_VECTOR_BYTES)
    try:
        yupdate.read_state_vector(raw)
    except yupdate.MalformedUpdate as exc:
        raise ValidationFailed("The state vector is not valid: %(problem)s.", problem=str(exc)) from None
    return raw


def reset_rate_limits() -> None:
    """Start every client's update-rate window afresh in this app (the limiters are rebuilt on use)."""
    notes_state().limiters.clear()
