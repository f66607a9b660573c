"""Showing UTC timestamps in each viewer's own time zone, with the zone named."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


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


def format_local(dt: datetime | None, tz_name: str | None, *, with_date: bool = True) -> str:
    """E.g. 'Tue 24 Nov 2026, 09:00 CST (Asia/Shanghai)'."""
    if dt is None:
        return "—"
    value = local(dt, tz_name)
    abbrev = value.tzname() or ""
    label = tz_name or "UTC"
    zone_part = f"{abbrev} ({label})" if abbrev and abbrev != label else label
    fmt = "%a %d %b %Y, %H:%M" if with_date else "%H:%M"
    return f"{value.strftime(fmt)} {zone_part}"


def format_duration(seconds: float) -> str:
    """A short human duration: '3 d 4 h', '5 h 12 min', '7 min'."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"
