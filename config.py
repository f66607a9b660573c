"""Huizhen configuration: every setting comes from an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

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

    # Uploads: checked by content, stored outside the web root under server-generated names.
    UPLOAD_DIR = os.environ.get("UPLOAD_DIR", str(BASE_DIR / "instance" / "uploads"))
    MAX_UPLOAD_BYTES = _env_int("MAX_UPLOAD_BYTES", 15 * 1024 * 1024)
    MAX_IMAGE_PIXELS = _env_int("MAX_IMAGE_PIXELS", 50_000_000)
    MAX_CONTENT_LENGTH = MAX_UPLOAD_BYTES + 1024 * 1024  # form overhead
    MAX_ATTACHMENTS_PER_CONSULT = _env_int("MAX_ATTACHMENTS_PER_CONSULT", 30)

    # Sessions: rotated at login, invalidated at logout, signed out after inactivity.
    IDLE_TIMEOUT_MINUTES = _env_int("IDLE_TIMEOUT_MINUTES", 30)
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
    CHAT_MAX_CHARS = _env_int("CHAT_MAX_CHARS", 4000)
    CHAT_MESSAGES_PER_SECOND = _env_int("CHAT_MESSAGES_PER_SECOND", 5)
    CHAT_PAGE_SIZE = _env_int("CHAT_PAGE_SIZE", 100)  # messages per history page (join, backfill, older)
    SOCKET_MAX_PAYLOAD_BYTES = _env_int("SOCKET_MAX_PAYLOAD_BYTES", 256 * 1024)
    # Recovery: every page asks its node for the room's latest seq this often (a database read, not
    # the message queue), so a stored message is shown within it whatever the queue does.
    RESYNC_SECONDS = _env_int("RESYNC_SECONDS", 5)
    SOCKET_RETRY_AFTER_MS = _env_int("SOCKET_RETRY_AFTER_MS", 2000)  # first retry after 'unavailable'

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

    # Scheduling.
    SLOT_MINUTES = _env_int("SLOT_MINUTES", 30)
    BOOKING_HORIZON_DAYS = _env_int("BOOKING_HORIZON_DAYS", 14)
    BOOKING_MIN_LEAD_MINUTES = _env_int("BOOKING_MIN_LEAD_MINUTES", 15)
    DEFAULT_TIMEZONE = os.environ.get("DEFAULT_TIMEZONE", "Asia/Shanghai")

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


class ProductionConfig(Config):
    """Production: PostgreSQL, a real WSGI server, secrets from the environment."""

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    SOCKETIO_ASYNC_MODE = os.environ.get("SOCKETIO_ASYNC_MODE", "gevent")
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
