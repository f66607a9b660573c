"""Production refuses guessable secret keys and origins that are not origins, and sends HSTS (issue 8, item 11)."""

from __future__ import annotations

import secrets

import pytest

from config import ProductionConfig
from tests.auth.test_http_auth import GOOD_PRODUCTION, production_env  # noqa: F401  (fixture)
from webapp import HSTS, create_app
from webapp.configcheck import origin_problem, secret_key_bits, secret_key_problem

GUESSABLE_KEYS = [
    "abcdefghij" * 4, "password1234567890password1234567890", "password" + "1234567890" * 3,
    "0123456789abcdef0123456789abcdef", "qwertyuiopasdfghjklzxcvbnm1234567890",
    "aB3$" * 10, "Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3!!", "change-me-please-this-is-my-secret-key",
    "my super secret key for huizhen production 2026", "MySecretKey!2026-Huizhen#Production$Gansu",
    "huizhen-production-secret-key-2026-huizhen-production", "x" * 80, "correcthorsebatterystaple" * 2,
]
BAD_ORIGINS = [
    "null", "huizhen.example.cn", "https://huizhen.example.cn/", "https://huizhen.example.cn/app",
    "https://huizhen.example.cn?x=1", "https://user@huizhen.example.cn", "ftp://huizhen.example.cn",
    "javascript:alert(1)", "https://", "https://huizhen.example.cn:99999", "https://huizhen.example.cn:port",
    " https://huizhen.example.cn", "https://huizhen..example.cn", "file:///etc/passwd", "*.example.cn",
]


@pytest.mark.parametrize("key", GUESSABLE_KEYS)
def test_guessable_keys_are_refused(key):
    assert secret_key_problem(key) is not None


@pytest.mark.parametrize("key", GUESSABLE_KEYS)
def test_production_does_not_start_with_a_guessable_key(production_env, key):  # noqa: F811
    with pytest.raises(RuntimeError) as info:
        create_app(ProductionConfig, {**GOOD_PRODUCTION, "SECRET_KEY": key})
    assert "Refusing to start in production" in str(info.value) and "SECRET_KEY" in str(info.value)


def test_random_keys_pass_with_a_margin():
    for _ in range(50):  # random, so many draws: none may be refused
        for key in (secrets.token_urlsafe(48), secrets.token_urlsafe(32), secrets.token_hex(32)):
            assert secret_key_problem(key) is None, key
    assert min(secret_key_bits(secrets.token_urlsafe(48)) for _ in range(50)) > 250


@pytest.mark.parametrize("origin", BAD_ORIGINS)
def test_origins_that_are_not_origins_are_refused(production_env, origin):  # noqa: F811
    assert origin_problem(origin) is not None
    with pytest.raises(RuntimeError) as info:
        create_app(ProductionConfig, {**GOOD_PRODUCTION, "ALLOWED_ORIGINS": ["https://huizhen.example.cn", origin]})
    assert "ALLOWED_ORIGINS" in str(info.value) and repr(origin) in str(info.value)


def test_production_needs_an_origin(production_env):  # noqa: F811
    with pytest.raises(RuntimeError, match="ALLOWED_ORIGINS is empty"):
        create_app(ProductionConfig, {**GOOD_PRODUCTION, "ALLOWED_ORIGINS": []})


@pytest.mark.parametrize("origin", ["https://huizhen.example.cn", "http://127.0.0.1:5000", "https://[::1]:8443",
                                    "https://xn--fiq228c.example:443", "http://localhost"])
def test_real_origins_pass(origin):
    assert origin_problem(origin) is None


@pytest.fixture
def production_app(monkeypatch, app):
    """A production app (on the test's SQLite schema, which production would refuse without HUIZHEN_ALLOW_SQLITE)."""
    monkeypatch.setenv("HUIZHEN_ALLOW_SQLITE", "1")
    prod = create_app(ProductionConfig, {
        **GOOD_PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(48), "SOCKETIO_ASYNC_MODE": "threading",
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"], "RATELIMIT_STORAGE_URI": "memory://",
        "REDIS_URL": "",
    })
    yield prod


def test_production_responses_carry_hsts(production_app):
    client = production_app.test_client()
    for path in ("/login", "/static/css/app.css", "/no-such-page"):
        response = client.get(path)
        assert response.headers.get("Strict-Transport-Security") == "max-age=31536000; includeSubDomains", path
    assert HSTS == "max-age=31536000; includeSubDomains"


def test_development_and_tests_send_no_hsts(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers  # plain-HTTP localhost stays usable
