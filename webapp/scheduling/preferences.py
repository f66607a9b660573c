"""Reading a requester's free-text preferred times, to mark the slots that fit them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ..timefmt import local

DAY_WORDS = {
    "mon": 0, "monday": 0, "mondays": 0, "tue": 1, "tues": 1, "tuesday": 1, "tuesdays": 1,
    "wed": 2, "wednesday": 2, "wednesdays": 2, "thu": 3, "thur": 3, "thurs": 3, "thursday": 3,
    "thursdays": 3, "fri": 4, "friday": 4, "fridays": 4, "sat": 5, "saturday": 5, "saturdays": 5,
    "sun": 6, "sunday": 6, "sundays": 6,
    "周一": 0, "周二": 1, "周三": 2, "周四": 3, "周五": 4, "周六": 5, "周日": 6, "周天": 6,
    "星期一": 0, "星期二": 1, "星期三": 2, "星期四": 3, "星期五": 4, "星期六": 5, "星期日": 6, "星期天": 6,
}
GROUP_WORDS = {"weekday": range(5), "weekdays": range(5), "工作日": range(5),
               "weekend": range(5, 7), "weekends": range(5, 7), "周末": range(5, 7)}
PART_WORDS = {"morning": (6 * 60, 12 * 60), "mornings": (6 * 60, 12 * 60), "上午": (6 * 60, 12 * 60),
              "noon": (11 * 60, 14 * 60), "lunchtime": (11 * 60, 14 * 60), "中午": (11 * 60, 14 * 60),
              "afternoon": (12 * 60, 18 * 60), "afternoons": (12 * 60, 18 * 60), "下午": (12 * 60, 18 * 60),
              "evening": (18 * 60, 22 * 60), "evenings": (18 * 60, 22 * 60), "晚上": (18 * 60, 22 * 60)}
TIME = r"(\d{1,2})(?:[:.：](\d{2}))?"
RANGE_RE = re.compile(TIME + r"\s*(?:-|–|—|to|until|~|至|到)\s*" + TIME)
AFTER_RE = re.compile(r"(?:after|from|以后|之后)\s*" + TIME + r"|" + TIME + r"\s*(?:以后|之后)")
BEFORE_RE = re.compile(r"(?:before|until|by|以前|之前)\s*" + TIME + r"|" + TIME + r"\s*(?:以前|之前)")
WORD_RE = re.compile(r"[a-z]+|[\u4e00-\u9fff]+")


@dataclass
class Preference:
    """Days (0 = Monday) and minute ranges of the day, in the requester's zone; empty = any."""

    days: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.days or self.ranges)


def _minutes(hour: str | None, minute: str | None) -> int | None:
    if hour is None:
        return None
    h, m = int(hour), int(minute or 0)
    return h * 60 + m if 0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440 else None


def parse_preferences(text: str) -> Preference:
    """What can be read from text like "weekday mornings", "Tue/Thu after 14:00", "9:00-11:30"."""
    pref = Preference()
    lowered = (text or "").lower()
    for word in WORD_RE.findall(lowered):
        chunks = [word] if word.isascii() else [word[i:j] for i in range(len(word))
                                                for j in range(i + 2, min(len(word), i + 3) + 1)]
        for chunk in chunks:
            if chunk in DAY_WORDS:
                pref.days.add(DAY_WORDS[chunk])
            elif chunk in GROUP_WORDS:
                pref.days.update(GROUP_WORDS[chunk])
            elif chunk in PART_WORDS:
                pref.ranges.append(PART_WORDS[chunk])
    rest = lowered
    for m in RANGE_RE.finditer(lowered):
        start, end = _minutes(m.group(1), m.group(2)), _minutes(m.group(3), m.group(4))
        if start is not None and end is not None and start < end:
            pref.ranges.append((start, end))
        rest = rest.replace(m.group(0), " ")
    for m in AFTER_RE.finditer(rest):
        start = _minutes(m.group(1) or m.group(3), m.group(2) or m.group(4))
        if start is not None:
            pref.ranges.append((start, 1440))
    for m in BEFORE_RE.finditer(rest):
        end = _minutes(m.group(1) or m.group(3), m.group(2) or m.group(4))
        if end is not None and end > 0:
            pref.ranges.append((0, end))
    return pref


def fits(pref: Preference, starts_at: datetime, ends_at: datetime, tz_name: str) -> bool:
    """Whether the slot lies on a preferred day and inside a preferred time, in the requester's zone."""
    if not pref:
        return False
    start, end = local(starts_at, tz_name), local(ends_at, tz_name)
    if pref.days and start.weekday() not in pref.days:
        return False
    if not pref.ranges:
        return True
    first = start.hour * 60 + start.minute
    last = first + int((end - start).total_seconds() // 60)
    return any(lo <= first and last <= hi for lo, hi in pref.ranges)
