"""Times and durations in the viewer's language: English exactly as before, Chinese with babel,
the zone always named (北京时间 for China's +08:00 zones), right across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask

from webapp.i18n import speaking
from webapp.timefmt import format_duration, format_local


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_outside_an_app_it_is_english():
    assert format_local(utc(2026, 11, 24, 1), "Asia/Shanghai") == "Tue 24 Nov 2026, 09:00 CST (Asia/Shanghai)"
    assert format_duration(3 * 86400 + 4 * 3600) == "3 d 4 h"
    assert format_local(None, "Asia/Shanghai") == "—"


def test_english_stays_exactly_as_it_was(app: Flask):
    with speaking("en"):
        assert format_local(utc(2026, 11, 24, 1), "Asia/Shanghai") == "Tue 24 Nov 2026, 09:00 CST (Asia/Shanghai)"
        assert format_local(utc(2026, 11, 24, 1), "Asia/Shanghai", with_date=False) == "09:00 CST (Asia/Shanghai)"
        assert format_local(utc(2026, 11, 24, 1), None) == "Tue 24 Nov 2026, 01:00 UTC"
        assert format_duration(3 * 86400 + 4 * 3600 + 59) == "3 d 4 h"
        assert format_duration(5 * 3600 + 12 * 60) == "5 h 12 min"
        assert format_duration(7 * 60 + 30) == "7 min"


def test_chinese_dates_name_beijing_time(app: Flask):
    with speaking("zh_CN"):
        assert format_local(utc(2026, 12, 2, 1), "Asia/Shanghai") == "2026年12月2日 星期三 09:00 (北京时间)"
        assert format_local(utc(2026, 12, 2, 1), "Asia/Shanghai", with_date=False) == "09:00 (北京时间)"
        assert format_local(utc(2026, 12, 2, 1), "Asia/Chongqing") == "2026年12月2日 星期三 09:00 (北京时间)"
        # Urumqi is in China but at +06:00: not Beijing time, named by babel and by its id
        urumqi = format_local(utc(2026, 12, 2, 1), "Asia/Urumqi")
        assert urumqi.startswith("2026年12月2日 星期三 07:00 (") and "北京时间" not in urumqi
        assert urumqi.endswith(" Asia/Urumqi)")
        assert format_local(utc(2026, 12, 2, 1), None) == "2026年12月2日 星期三 01:00 (协调世界时 UTC)"


def test_chinese_durations(app: Flask):
    with speaking("zh_CN"):
        assert format_duration(3 * 86400 + 4 * 3600) == "3 天 4 小时"
        assert format_duration(5 * 3600 + 12 * 60) == "5 小时 12 分钟"
        assert format_duration(7 * 60) == "7 分钟"


@pytest.mark.parametrize(("zone", "at", "english", "chinese"), [
    # Europe/London: GMT -> BST at 01:00 UTC on Sunday 29 March 2026
    ("Europe/London", utc(2026, 3, 29, 0, 30), "Sun 29 Mar 2026, 00:30 GMT (Europe/London)",
     "2026年3月29日 星期日 00:30 (格林尼治标准时间 Europe/London)"),
    ("Europe/London", utc(2026, 3, 29, 1, 30), "Sun 29 Mar 2026, 02:30 BST (Europe/London)",
     "2026年3月29日 星期日 02:30 (英国夏令时间 Europe/London)"),
    # America/New_York: EST -> EDT at 07:00 UTC on Sunday 8 March 2026
    ("America/New_York", utc(2026, 3, 8, 6, 30), "Sun 08 Mar 2026, 01:30 EST (America/New_York)",
     "2026年3月8日 星期日 01:30 (北美东部标准时间 America/New_York)"),
    ("America/New_York", utc(2026, 3, 8, 7, 30), "Sun 08 Mar 2026, 03:30 EDT (America/New_York)",
     "2026年3月8日 星期日 03:30 (北美东部夏令时间 America/New_York)"),
])
def test_a_specialist_in_a_zone_with_a_dst_change(app: Flask, zone, at, english, chinese):
    with speaking("en"):
        assert format_local(at, zone) == english
    with speaking("zh_CN"):
        assert format_local(at, zone) == chinese


def test_the_request_language_decides(app: Flask):
    # each request its own app context (Flask-Babel keeps the locale on g)
    with app.app_context(), app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        assert format_local(utc(2026, 12, 2, 1), "Asia/Shanghai") == "2026年12月2日 星期三 09:00 (北京时间)"
    with app.app_context(), app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert format_local(utc(2026, 12, 2, 1), "Asia/Shanghai") == "Wed 02 Dec 2026, 09:00 CST (Asia/Shanghai)"
