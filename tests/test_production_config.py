"""Production refuses guessable secret keys and origins that are not origins, and sends HSTS (issue 8, item 11)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from config import BASE_DIR, ProductionConfig
from tests.auth.test_http_auth import GOOD_PRODUCTION, production_env  # noqa: F401  (fixture)
from webapp import HSTS, create_app, gctune
from webapp.configcheck import origin_problem, secret_key_bits, secret_key_problem
from webapp.gctune import parse_thresholds, settle_garbage_collector

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


def test_production_settles_the_garbage_collector_in_its_own_process(tmp_path):
    """A production worker freezes its start-up objects and sets GC_THRESHOLDS (run in a child: it is process-wide)."""
    script = (
        "import gc\n"
        "from config import ProductionConfig\n"
        "from webapp import create_app\n"
        "create_app(ProductionConfig, {{'SECRET_KEY': {!r}, 'SOCKETIO_ASYNC_MODE': 'threading',\n"
        "  'SQLALCHEMY_DATABASE_URI': 'sqlite:///{}', 'ALLOWED_ORIGINS': ['https://huizhen.example.cn'],\n"
        "  'RATELIMIT_STORAGE_URI': 'memory://', 'REDIS_URL': ''}})\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 10000)\n"
    ).format(secrets.token_urlsafe(48), tmp_path / "gc.db")
    env = {**os.environ, "GC_FREEZE_AT_START": "1", "GC_THRESHOLDS": "7000,15,12", "HUIZHEN_ALLOW_SQLITE": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "(7000, 15, 12) True"


def test_tests_and_development_leave_the_collector_alone(production_app):
    assert production_app.config["GC_FREEZE_AT_START"] is False  # tests/__init__.py: never freeze the test process
    assert settle_garbage_collector(production_app) is False


@pytest.mark.parametrize("value", ["10000,20", "a,b,c", "-1,10,10", "", "10000,20,20,5", "0,10,10"])
def test_bad_gc_thresholds_are_refused(production_env, value):  # noqa: F811
    with pytest.raises(ValueError):
        parse_thresholds(value)
    with pytest.raises(RuntimeError) as info:
        create_app(ProductionConfig, {**GOOD_PRODUCTION, "GC_THRESHOLDS": value})
    assert "GC_THRESHOLDS" in str(info.value)


def test_long_collections_are_written_to_stderr(capfd, monkeypatch):
    monkeypatch.setattr(gctune, "LONG_COLLECTION_MS", 0.0)
    gctune._report_long_collections("start", {"generation": 2})
    gctune._report_long_collections("stop", {"generation": 2, "collected": 3})
    err = capfd.readouterr().err
    assert err.startswith("huizhen gc: ") and "generation 2 collection took" in err and "(3 collected)" in err
