"""The accept page groups slots by day in the viewer's zone and marks those that fit the request."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import login
from webapp.scheduling import services as scheduling
from webapp.scheduling.preferences import Preference, fits, parse_preferences


@pytest.mark.parametrize(("text", "days", "ranges"), [
    ("weekday mornings", {0, 1, 2, 3, 4}, [(360, 720)]),
    ("Tue/Thu after 14:00", {1, 3}, [(840, 1440)]),
    ("9:00-11:30", set(), [(540, 690)]),
    ("工作日下午", {0, 1, 2, 3, 4}, [(720, 1080)]),
    ("anytime, call me", set(), []),
])
def test_preferred_times_are_read_from_the_request_text(text, days, ranges):
    assert parse_preferences(text) == Preference(days, ranges)


def test_fits_is_judged_in_the_requesters_zone_across_the_dst_change():
    pref = parse_preferences("weekday mornings")
    # Monday 29 March 2027 (after Berlin's change): 09:30 UTC is 11:30 CEST, 12:00 CEST ends the morning
    assert fits(pref, datetime(2027, 3, 29, 9, 30, tzinfo=UTC), datetime(2027, 3, 29, 10, tzinfo=UTC),
                "Europe/Berlin")
    assert not fits(pref, datetime(2027, 3, 29, 10, tzinfo=UTC), datetime(2027, 3, 29, 10, 30, tzinfo=UTC),
                    "Europe/Berlin")
    # Friday 26 March 2027 (before it): 10:30 UTC is 11:30 CET
    assert fits(pref, datetime(2027, 3, 26, 10, 30, tzinfo=UTC), datetime(2027, 3, 26, 11, tzinfo=UTC),
                "Europe/Berlin")
    assert not fits(pref, datetime(2027, 3, 27, 8, tzinfo=UTC), datetime(2027, 3, 27, 8, 30, tzinfo=UTC),
                    "Europe/Berlin")  # a Saturday
    assert not fits(parse_preferences("whenever"), datetime(2027, 3, 26, 8, tzinfo=UTC),
                    datetime(2027, 3, 26, 8, 30, tzinfo=UTC), "Europe/Berlin")


def test_the_accept_page_groups_by_day_and_marks_the_fitting_slots(app, make):
    requester = make.rural(timezone="Europe/Berlin")
    specialist = make.specialist(timezone="Asia/Shanghai")
    make.availability(specialist, hours=(8, 20))
    consult = make.requested(requester, preferred_times="weekday mornings")
    client = app.test_client()
    assert login(client, specialist).status_code == 302

    r = client.get(f"/consults/{consult.ref}/accept")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    slots = scheduling.open_slots(specialist)
    shanghai, berlin = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")
    days = list(dict.fromkeys(s.starts_at.astimezone(shanghai).strftime("%A %d %B %Y") for s in slots))
    assert re.findall(r"<summary><strong>([^<]+)</strong>", page) == days
    expected = {s.starts_at.isoformat() for s in slots
                if s.starts_at.astimezone(berlin).weekday() < 5
                and s.starts_at.astimezone(berlin).hour >= 6
                and (s.ends_at.astimezone(berlin).hour, s.ends_at.astimezone(berlin).minute) <= (12, 0)}
    marked = set(re.findall(r'<li class="fits"><label><input[^>]*value="([^"]+)"', page))
    assert expected and marked == expected
    assert "weekday mornings" in page
    assert page.count('name="slot"') == len(slots) + 1  # every slot, and "answer in writing"
