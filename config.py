"""Huizhen configuration: every setting comes from an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from limits import parse as parse_limit

BASE_DIR = Path(__file__).resolve().parent


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Per connection, for each namespace and event; a user may use SOCKET_RATE_USER_FACTOR times as
# much over all their connections. "off" means no limit of this kind (the chat's send has its own
# per-user CHAT_MESSAGES_PER_SECOND). Events not listed get SOCKET_RATE_LIMIT_DEFAULT.
DEFAULT_EVENT_LIMITS: dict[str, str] = {
    "/room join": "60 per minute",  # a join per (re)connection; benches rejoin in a loop
    "/room send": "off",
    "/room backfill": "20 per 10 seconds",
    "/room typing": "10 per 10 seconds",  # room.js sends at most one every 2 s while typing, then a stop
    "/room read": "30 per 10 seconds",
    "/notes join": "60 per minute",
    "/notes sync": "10 per 10 seconds",
    "/notes update": "300 per 10 seconds",  # keystrokes; the notes service also limits per user
    "/notes focus": "50 per 10 seconds",  # awareness: section and cursor
    "/call join": "60 per minute",
    "/call signal": "100 per 10 seconds",  # an offer/answer and a few dozen ICE candidates per setup
    "/call state": "30 per 10 seconds",
    "/call stats": "10 per 10 seconds",
    "/call leave": "60 per minute",
    "/call raise_hand": "10 per 10 seconds",  # each changed hand is a commit and a message to the whole call
    "/call allow_speech": "20 per 10 seconds",
}


def _env_rate_limits(name: str) -> dict[str, str]:
    """The default Socket.IO event limits, overridden by "/ns event=limit; ..." in the variable."""
    limits = dict(DEFAULT_EVENT_LIMITS)
    for part in os.environ.get(name, "").split(";"):
        if part.strip():
            key, _, value = part.partition("=")
            if not value.strip() or len(key.split()) != 2:
                raise RuntimeError(f"{name}: expected '/namespace event=N per period' or '=off', not {part!r}")
            if value.strip().lower() not in {"off", "none"}:
                parse_limit(value)  # a typo fails at start, not on the first event
            limits[" ".join(key.split())] = value.strip()
    return limits


class Config:
    """Settings shared by every environment."""

    ENV_NAME = "base"
    DEBUG = False
    TESTING = False
    # Unset outside production: create_app() then keeps a random key in instance/secret_key.
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'huizhen.db'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    REDIS_URL = os.environ.get("REDIS_URL", "")
    # The language of a visitor whose browser asks for neither Chinese nor English (webapp/i18n).
    DEFAULT_LOCALE = os.environ.get("DEFAULT_LOCALE", "zh_CN")

    # Uploads: checked by content, stored outside the web root under server-generated names.
    UPLOAD_DIR = os.environ.get("UPLOAD_DIR", str(BASE_DIR / "instance" / "uploads"))
    MAX_UPLOAD_BYTES = _env_int("MAX_UPLOAD_BYTES", 15 * 1024 * 1024)
    MAX_IMAGE_PIXELS = _env_int("MAX_IMAGE_PIXELS", 50_000_000)
    MAX_CONTENT_LENGTH = MAX_UPLOAD_BYTES + 1024 * 1024  # form overhead
    MAX_ATTACHMENTS_PER_CONSULT = _env_int("MAX_ATTACHMENTS_PER_CONSULT", 30)
    # Images are decoded and re-encoded (PDFs read) in a short-lived child process, never in the
    # web worker; at most IMAGE_CONVERSIONS_AT_ONCE per web process, the rest wait up to
    # IMAGE_QUEUE_SECONDS and then get 503 (docs/benchmarks.md: memory per megapixel).
    IMAGE_CONVERSIONS_AT_ONCE = _env_int("IMAGE_CONVERSIONS_AT_ONCE", 2)
    IMAGE_QUEUE_SECONDS = float(os.environ.get("IMAGE_QUEUE_SECONDS", "30"))
    IMAGE_CHECK_TIMEOUT = float(os.environ.get("IMAGE_CHECK_TIMEOUT", "60"))
    IMAGE_MEMORY_LIMIT_MB = _env_int("IMAGE_MEMORY_LIMIT_MB", 1024)

    # Sessions: rotated at login, invalidated at logout, signed out after inactivity.
    IDLE_TIMEOUT_MINUTES = _env_int("IDLE_TIMEOUT_MINUTES", 30)
    # Each process re-checks its open sockets' sessions this often (idle ones are disconnected).
    SESSION_SWEEP_SECONDS = _env_int("SESSION_SWEEP_SECONDS", 15)
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_DURATION = _env_int("REMEMBER_DAYS", 7) * 86400

    WTF_CSRF_TIME_LIMIT = _env_int("CSRF_TIME_LIMIT_SECONDS", 8 * 3600)

    # Login throttling (Flask-Limiter); storage is Redis when REDIS_URL is set.
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10 per minute")
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI") or (
        os.environ.get("REDIS_URL") or "memory://"
    )
    RATELIMIT_HEADERS_ENABLED = True

    # Browsers allowed to open the real-time socket (no wildcard).
    ALLOWED_ORIGINS = _env_list(
        "ALLOWED_ORIGINS", "http://127.0.0.1:5000,http://localhost:5000"
    )
    SOCKETIO_ASYNC_MODE = os.environ.get("SOCKETIO_ASYNC_MODE", "threading")

    # Consult-room chat.
    # Long-running servers: freeze the start-up objects out of the garbage collector and collect
    # the young generation less often (webapp/gctune.py); production turns it on.
    GC_FREEZE_AT_START = _env_bool("GC_FREEZE_AT_START", False)
    GC_THRESHOLDS = os.environ.get("GC_THRESHOLDS", "10000,20,20")
    CHAT_MAX_CHARS = _env_int("CHAT_MAX_CHARS", 4000)
    CHAT_MESSAGES_PER_SECOND = _env_int("CHAT_MESSAGES_PER_SECOND", 5)
    # PostgreSQL: the chat's send path has its own autocommit pool without pre-ping (webapp/hotdb.py)
    CHAT_HOT_POOL_SIZE = _env_int("CHAT_HOT_POOL_SIZE", 10)
    CHAT_HOT_POOL_OVERFLOW = _env_int("CHAT_HOT_POOL_OVERFLOW", 10)
    CHAT_PAGE_SIZE = _env_int("CHAT_PAGE_SIZE", 100)  # messages per history page (join, backfill, older)
    # Messages that waited in a browser's outbox (a reconnect flush) are charged here first.
    CHAT_REPLAYS_PER_MINUTE = _env_int("CHAT_REPLAYS_PER_MINUTE", 120)
    SOCKET_MAX_PAYLOAD_BYTES = _env_int("SOCKET_MAX_PAYLOAD_BYTES", 256 * 1024)
    # Presence across nodes (with REDIS_URL): a node's room members expire this long after its last
    # heartbeat (sent every third of it), so a killed node's connections vanish within it.
    PRESENCE_TTL_SECONDS = _env_int("PRESENCE_TTL_SECONDS", 15)

    # Mail (password resets, notices to account owners). Unset: mails are written to the log.
    SMTP_URL = os.environ.get("SMTP_URL", "")
    MAIL_FROM = os.environ.get("MAIL_FROM", "Huizhen <no-reply@huizhen.invalid>")
    PASSWORD_RESET_MINUTES = _env_int("PASSWORD_RESET_MINUTES", 30)
    # The public address of the site, for links in mails (set it in production: without it the
    # request's Host header is used, which a forged request could point elsewhere).
    PUBLIC_URL = os.environ.get("PUBLIC_URL", "")

    # Notifications (webapp/notifications): the delivery worker's email and webhook channels.
    NOTIFY_WEBHOOK_URL = os.environ.get("NOTIFY_WEBHOOK_URL", "")  # empty: no webhook deliveries
    NOTIFY_WEBHOOK_SECRET = os.environ.get("NOTIFY_WEBHOOK_SECRET", "")  # HMAC-SHA256 key of the signature
    NOTIFY_WEBHOOK_TIMEOUT = float(os.environ.get("NOTIFY_WEBHOOK_TIMEOUT", "10"))
    NOTIFY_BATCH = _env_int("NOTIFY_BATCH", 20)  # deliveries claimed at once by a worker
    NOTIFY_LEASE_SECONDS = _env_int("NOTIFY_LEASE_SECONDS", 300)  # a claimed delivery is retried after this
    NOTIFY_RETRY_BASE_SECONDS = _env_int("NOTIFY_RETRY_BASE_SECONDS", 30)  # 30 s, 60 s, 120 s ... capped
    NOTIFY_RETRY_MAX_SECONDS = _env_int("NOTIFY_RETRY_MAX_SECONDS", 3600)
    NOTIFY_MAX_ATTEMPTS = _env_int("NOTIFY_MAX_ATTEMPTS", 8)  # then the delivery is marked failed
    NOTIFY_POLL_SECONDS = float(os.environ.get("NOTIFY_POLL_SECONDS", "2"))  # idle worker's wait
    # Response-time targets: a request not accepted within its urgency's minutes is flagged overdue
    # and coordinators and the requester are told (fired by the delivery worker).
    RESPONSE_TARGET_MINUTES = os.environ.get("RESPONSE_TARGET_MINUTES", "emergency=15,urgent=240,routine=2880")
    # Shown to the requester at once after sending an emergency request.
    EMERGENCY_INSTRUCTION = os.environ.get(
        "EMERGENCY_INSTRUCTION",
        "If the patient cannot wait, call 120 or transfer to the nearest county hospital now.")

    # Socket.IO event rate limits, per connection, for each "namespace event" (webapp/ratelimit.py
    # has the defaults); a user gets SOCKET_RATE_USER_FACTOR times that over all their connections.
    SOCKET_RATE_LIMITS = _env_rate_limits("SOCKET_RATE_LIMITS")
    SOCKET_RATE_LIMIT_DEFAULT = os.environ.get("SOCKET_RATE_LIMIT_DEFAULT", "20 per second")
    SOCKET_RATE_USER_FACTOR = _env_int("SOCKET_RATE_USER_FACTOR", 3)
    # Refusals (access denied) of one user, consult and action: the first AUDIT_REFUSALS_PER_WINDOW
    # in a window are audited one by one, further ones only at the 100th, 1,000th ... with a count.
    AUDIT_REFUSAL_WINDOW_SECONDS = _env_int("AUDIT_REFUSAL_WINDOW_SECONDS", 60)
    AUDIT_REFUSALS_PER_WINDOW = _env_int("AUDIT_REFUSALS_PER_WINDOW", 10)

    # Recovery: every page asks its node for the room's latest seq this often (a database read, not
    # the message queue), so a stored message is shown within it whatever the queue does.
    RESYNC_SECONDS = _env_int("RESYNC_SECONDS", 5)
    SOCKET_RETRY_AFTER_MS = _env_int("SOCKET_RETRY_AFTER_MS", 2000)  # first retry after 'unavailable'

    # Page weight (webapp/assets.py): static files under content-hashed URLs are cached for a year;
    # a bare or outdated /static/ URL only this long. Pages, CSS and JS go out Brotli- or gzip-compressed.
    STATIC_SHORT_MAX_AGE = _env_int("STATIC_SHORT_MAX_AGE", 300)
    COMPRESS_ALGORITHM = ["br", "gzip"]
    COMPRESS_BR_LEVEL = 5
    COMPRESS_STREAMS = False  # streamed responses (CSV export, downloads) go out as they are
    COMPRESS_MIMETYPES = ["text/html", "text/css", "text/javascript", "application/javascript",
                          "application/json", "image/svg+xml"]

    # Video: ICE servers handed to browsers and to the media worker. No public STUN by default.
    STUN_URLS = _env_list("STUN_URLS", "")
    TURN_URLS = _env_list("TURN_URLS", "")
    TURN_SECRET = os.environ.get("TURN_SECRET", "")
    TURN_TTL_SECONDS = _env_int("TURN_TTL_SECONDS", 6 * 3600)
    FORCE_TURN_RELAY = _env_bool("FORCE_TURN_RELAY", False)  # browsers use only TURN (tests, strict sites)
    SIGNAL_MAX_SDP_BYTES = _env_int("SIGNAL_MAX_SDP_BYTES", 64 * 1024)
    MEDIA_WORKER_URL = os.environ.get("MEDIA_WORKER_URL", "http://127.0.0.1:5001")
    MEDIA_WORKER_TOKEN = os.environ.get("MEDIA_WORKER_TOKEN", "")
    MEDIA_WORKER_TIMEOUT = float(os.environ.get("MEDIA_WORKER_TIMEOUT", "20"))
    PRECALL_SESSIONS_PER_USER = _env_int("PRECALL_SESSIONS_PER_USER", 2)  # live echo peers per user
    # The call adapts to the link (static/js/adapt.js). On video, CALL_ADAPT_DOWN_SECONDS in a row
    # of an outgoing bitrate estimate under CALL_ADAPT_MIN_KBPS, or loss / round trip / jitter over
    # their maximum, switch this side to audio only; CALL_ADAPT_UP_SECONDS in a row of a link back
    # well under them (half the loss, 80 % of round trip and jitter) bring video back, twice as
    # long after each quick relapse up to CALL_ADAPT_MAX_UP_SECONDS. Defaults for rural links.
    CALL_ADAPT_ENABLED = _env_bool("CALL_ADAPT_ENABLED", True)
    CALL_ADAPT_MIN_KBPS = _env_int("CALL_ADAPT_MIN_KBPS", 150)
    CALL_ADAPT_MAX_LOSS_PCT = _env_int("CALL_ADAPT_MAX_LOSS_PCT", 10)
    CALL_ADAPT_MAX_RTT_MS = _env_int("CALL_ADAPT_MAX_RTT_MS", 1000)
    CALL_ADAPT_MAX_JITTER_MS = _env_int("CALL_ADAPT_MAX_JITTER_MS", 100)
    CALL_ADAPT_DOWN_SECONDS = _env_int("CALL_ADAPT_DOWN_SECONDS", 4)
    CALL_ADAPT_UP_SECONDS = _env_int("CALL_ADAPT_UP_SECONDS", 15)
    CALL_ADAPT_MAX_UP_SECONDS = _env_int("CALL_ADAPT_MAX_UP_SECONDS", 120)
    # A drop (nothing arrives) is not a weak link: nothing is judged for this long after one, while
    # the congestion control climbs back (the ICE restart brings the call back)
    CALL_ADAPT_QUIET_SECONDS = _env_int("CALL_ADAPT_QUIET_SECONDS", 10)
    # What each video sender may use (RTCRtpSender.setParameters): a 512 kbit/s village link keeps
    # room for Opus and for the other direction. CALL_DEGRADATION_PREFERENCE: balanced,
    # maintain-framerate or maintain-resolution.
    CALL_VIDEO_MAX_KBPS = _env_int("CALL_VIDEO_MAX_KBPS", 350)
    CALL_VIDEO_SCALE_DOWN = float(os.environ.get("CALL_VIDEO_SCALE_DOWN", "1"))
    CALL_VIDEO_MAX_FPS = _env_int("CALL_VIDEO_MAX_FPS", 20)
    CALL_DEGRADATION_PREFERENCE = os.environ.get("CALL_DEGRADATION_PREFERENCE", "balanced")
    # Opus in-band forward error correction and discontinuous transmission (SDP fmtp).
    CALL_OPUS_FEC = _env_bool("CALL_OPUS_FEC", True)
    CALL_OPUS_DTX = _env_bool("CALL_OPUS_DTX", True)
    # ICE restart: after this long "disconnected" (at once on "failed"), then again while down.
    CALL_ICE_RESTART_GRACE_SECONDS = _env_int("CALL_ICE_RESTART_GRACE_SECONDS", 3)
    # A call of three or more is a full mesh (one peer connection per pair): at most this many
    # people sending camera/microphone, and this many in all (receive-only trainees included).
    CALL_MAX_SENDERS = _env_int("CALL_MAX_SENDERS", 4)
    CALL_MAX_PARTICIPANTS = _env_int("CALL_MAX_PARTICIPANTS", 6)

    # Scheduling.
    SLOT_MINUTES = _env_int("SLOT_MINUTES", 30)
    BOOKING_HORIZON_DAYS = _env_int("BOOKING_HORIZON_DAYS", 14)
    BOOKING_MIN_LEAD_MINUTES = _env_int("BOOKING_MIN_LEAD_MINUTES", 15)
    # PostgreSQL: the longest a booking's insert may wait on a block another transaction holds
    BOOKING_LOCK_TIMEOUT_MS = _env_int("BOOKING_LOCK_TIMEOUT_MS", 1000)
    # A booked consult's room (chat and call) opens this long before the booked time.
    ROOM_OPENS_MINUTES_BEFORE = _env_int("ROOM_OPENS_MINUTES_BEFORE", 15)
    DEFAULT_TIMEZONE = os.environ.get("DEFAULT_TIMEZONE", "Asia/Shanghai")

    # GET /healthz: how long each check (database, Redis) may take before the node reports 503.
    HEALTH_TIMEOUT_SECONDS = float(os.environ.get("HEALTH_TIMEOUT_SECONDS", "2"))

    # Reverse proxy hops whose X-Forwarded-For is trusted for audit addresses.
    PROXY_FIX_HOPS = _env_int("PROXY_FIX_HOPS", 0)


class DevelopmentConfig(Config):
    """Local development on SQLite with the demo data."""

    ENV_NAME = "development"
    DEBUG = _env_bool("FLASK_DEBUG", False)


class TestingConfig(Config):
    """The test suite: a throwaway database, quick hashing, CSRF kept on."""

    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production-0123456789"
    SQLALCHEMY_DATABASE_URI = os.environ.get("TEST_DATABASE_URL", "sqlite://")
    RATELIMIT_STORAGE_URI = "memory://"
    ARGON2_FAST = True
    # Test worlds book the next free slot, within the hour: their rooms are open at once.
    # tests/rooms/test_opening.py checks the real default of 15 minutes.
    ROOM_OPENS_MINUTES_BEFORE = 24 * 60
    # The suite's clients send no Accept-Language: they read English unless a test asks for
    # Chinese (tests/i18n checks the zh_CN default itself).
    DEFAULT_LOCALE = os.environ.get("TEST_DEFAULT_LOCALE", "en")


class ProductionConfig(Config):
    """Production: PostgreSQL, a real WSGI server, secrets from the environment."""

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    SOCKETIO_ASYNC_MODE = os.environ.get("SOCKETIO_ASYNC_MODE", "gevent")
    GC_FREEZE_AT_START = _env_bool("GC_FREEZE_AT_START", True)
    # One gevent worker serves every socket event concurrently: with SQLAlchemy's default pool
    # (5 + 10 overflow) bursts kept opening and closing PostgreSQL connections (bench/chat_bench.py).
    SQLALCHEMY_ENGINE_OPTIONS: dict = {
        "pool_pre_ping": True,
        "pool_size": _env_int("DB_POOL_SIZE", 20),
        "max_overflow": _env_int("DB_MAX_OVERFLOW", 10),
    }


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_from_env() -> type[Config]:
    """The config class named by HUIZHEN_ENV (development by default)."""
    name = os.environ.get("HUIZHEN_ENV", "development")
    if name not in CONFIGS:
        raise RuntimeError(f"HUIZHEN_ENV must be one of {sorted(CONFIGS)}, not {name!r}")
    return CONFIGS[name]
