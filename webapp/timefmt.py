"""Showing UTC timestamps in each viewer's own time zone, with the zone named, in the viewer's language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime, get_timezone_name

from .i18n import N_, current_locale, translate

# Mainland China's zones: shown as 北京时间 when they are at +08:00 (Urumqi is at +06:00).
CHINA_ZONES = frozenset({"Asia/Shanghai", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "Asia/Urumqi",
                         "Asia/Kashgar", "PRC"})
BEIJING_OFFSET = timedelta(hours=8)
# babel patterns of the languages other than English (English keeps its strftime format)
PATTERNS = {"zh_CN": ("y年M月d日 EEEE HH:mm", "HH:mm")}


def zone(name: str | None) -> ZoneInfo:
    """The ZoneInfo for a name, falling back to UTC for an unknown one."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(dt: datetime, tz_name: str | None) -> datetime:
    """A UTC datetime converted into the named zone."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(zone(tz_name))


def _zone_label(value: datetime, label: str, locale: str) -> str:
    """The zone named for a reader of the locale: 北京时间, or babel's name and the IANA id."""
    if label in CHINA_ZONES and value.utcoffset() == BEIJING_OFFSET:
        return translate(N_("Beijing time"))
    try:
        name = get_timezone_name(value, locale=locale)
    except (LookupError, ValueError):
        name = ""
    return f"{name} {label}" if name and name != label else label


def format_local(dt: datetime | None, tz_name: str | None, *, with_date: bool = True) -> str:
    """E.g. 'Tue 24 Nov 2026, 09:00 CST (Asia/Shanghai)'; in Chinese '2026年11月24日 星期二 09:00 (北京时间)'."""
    if dt is None:
        return "—"
    value = local(dt, tz_name)
    label = tz_name or "UTC"
    locale = current_locale()
    if locale in PATTERNS:
        pattern = PATTERNS[locale][0 if with_date else 1]
        return f"{format_datetime(value, pattern, tzinfo=value.tzinfo, locale=locale)} " \
               f"({_zone_label(value, str(zone(tz_name).key) if tz_name else 'UTC', locale)})"
    abbrev = value.tzname() or ""
    zone_part = f"{abbrev} ({label})" if abbrev and abbrev != label else label
    fmt = "%a %d %b %Y, %H:%M" if with_date else "%H:%M"
    return f"{value.strftime(fmt)} {zone_part}"


def format_duration(seconds: float) -> str:
    """A short human duration: '3 d 4 h', '5 h 12 min', '7 min' (in Chinese '3 天 4 小时', ...)."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return translate(N_("%(days)s d %(hours)s h"), {"days": days, "hours": hours})
    if hours:
        return translate(N_("%(hours)s h %(minutes)s min"), {"hours": hours, "minutes": minutes})
    return translate(N_("%(minutes)s min"), {"minutes": minutes})

