"""The chat's own rate limit: messages per second per sender, and an allowance for replays."""

from __future__ import annotations

from flask import current_app
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.strategies import MovingWindowRateLimiter

from ..errors import DomainError
from ..ratelimit import LocalMovingWindow
from .state import room_state


class TooManyMessages(DomainError):
    status = 429
    code = "rate_limited"


def chat_limiter() -> MovingWindowRateLimiter | LocalMovingWindow:
    """This app's chat limiter on RATELIMIT_STORAGE_URI (Redis: shared by every process)."""
    return room_state().limiter(current_app.config["RATELIMIT_STORAGE_URI"])


def check_rate(user_id: int, *, replay: bool = False) -> None:
    """Refuse a sender over CHAT_MESSAGES_PER_SECOND (per user, across processes with Redis).

    A replay (a message that waited in the browser's outbox) is first charged to a separate
    allowance of CHAT_REPLAYS_PER_MINUTE, so a reconnect flush of a normal backlog is not refused;
    once that is spent it counts against the per-second limit like a new message.
    """
    limit = RateLimitItemPerSecond(current_app.config["CHAT_MESSAGES_PER_SECOND"])
    try:
        limiter = chat_limiter()
        if replay and limiter.hit(RateLimitItemPerMinute(current_app.config["CHAT_REPLAYS_PER_MINUTE"]),
                                  "chat-replay", str(user_id)):
            return
        allowed = limiter.hit(limit, "chat", str(user_id))
    except Exception:  # the limiter's storage is down: do not lose clinical messages over it
        current_app.logger.warning("chat rate limiter unavailable; allowing message")
        return
    if not allowed:
        raise TooManyMessages("You are sending messages too fast; wait a moment.")
