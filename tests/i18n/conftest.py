"""The language tests' own marker: ``pytest -m zh tests/i18n`` runs the Chinese page checks alone."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "zh: every page and error speaks Chinese to a zh-CN user (run alone: -m zh)")
