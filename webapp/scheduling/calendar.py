"""Private iCalendar feeds of a user's booked consultations, and mail invitations (no clinical content)."""

from __future__ import annotations

import secrets
from datetime import datetime
from email.utils import parseaddr

from flask import current_app, url_for
from icalendar import Calendar, Event, vCalAddress, vText
from sqlalchemy import delete, func, select

from ..audit.services import record
from ..auth.sessions import hash_key
from ..consults import policy
from ..extensions import db
from ..i18n import N_, speaking, translate, user_locale
from ..models import Appointment, CalendarFeed, Consult, ConsultStatus, User, utcnow

SUMMARY = N_("Huizhen consultation")
CALENDAR_NAME = N_("Huizhen consultations")


def feed_of(user: User) -> CalendarFeed | None:
    """The user's feed, if one is issued."""
    return db.session.scalar(select(CalendarFeed).where(CalendarFeed.user_id == user.id))


def issue_feed(user: User) -> str:
    """A new secret feed token for the user (any earlier feed URL stops working); shown once."""
    token = secrets.token_urlsafe(32)
    db.session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == user.id))
    db.session.add(CalendarFeed(user_id=user.id, token_hash=hash_key(token)))
    record("calendar.feed_issued", actor=user, target=f"user:{user.id}")
    db.session.commit()
    return token


def revoke_feed(user: User) -> None:
    """Revoke the user's feed: its URL answers 404 from now on."""
    db.session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == user.id))
    record("calendar.feed_revoked", actor=user, target=f"user:{user.id}")
    db.session.commit()


def owner_of(token: str) -> User | None:
    """The user whose feed this token opens (None for an unknown or revoked token)."""
    if not token or len(token) > 128:
        return None
    feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.token_hash == hash_key(token)))
    return db.session.get(User, feed.user_id) if feed is not None else None


def _uid(consult: Consult) -> str:
    return f"consult-{consult.ref}@huizhen"


def _changes(consult: Consult, appointment: Appointment, count: int) -> tuple[int, bool]:
    """SEQUENCE and cancelled flag: each reschedule and a cancellation bump the sequence."""
    cancelled = consult.status == ConsultStatus.CANCELLED or appointment.cancelled_at is not None
    return count - 1 + (1 if cancelled else 0), cancelled


def consult_event(consult: Consult, appointment: Appointment, count: int, link: str, now: datetime) -> Event:
    """One consult as a VEVENT (the feed's and the invitation's): stable UID, SEQUENCE, neutral text.

    `appointment` is the consult's latest appointment and `count` how many it has had.
    """
    sequence, cancelled = _changes(consult, appointment, count)
    event = Event()
    event.add("uid", _uid(consult))
    event.add("sequence", sequence)
    event.add("dtstamp", now)
    event.add("dtstart", appointment.starts_at)
    event.add("dtend", appointment.ends_at)
    event.add("summary", translate(SUMMARY))
    event.add("description", translate(N_("Open the consultation in Huizhen: %(link)s"), {"link": link}))
    event.add("url", link)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    return event


def _latest(consult: Consult) -> tuple[Appointment, int] | None:
    """The consult's latest appointment and how many it has had (None if never booked)."""
    count = db.session.scalar(select(func.count()).where(Appointment.consult_id == consult.id))
    if not count:
        return None
    latest = db.session.scalars(select(Appointment).where(Appointment.consult_id == consult.id)
                                .order_by(Appointment.id.desc()).limit(1)).one()
    return latest, count


def invitation_ics(consult: Consult, attendee: str, link: str, *,
                   now: datetime | None = None) -> tuple[bytes, str] | None:
    """An iTIP invitation for one consult's current booking: (the .ics, METHOD), or None if unbooked.

    METHOD:REQUEST for a booked or moved time, METHOD:CANCEL once cancelled; the event is the
    feed's (same UID and SEQUENCE), so a calendar that has either updates the same entry.
    """
    found = _latest(consult)
    if found is None:
        return None
    appointment, count = found
    event = consult_event(consult, appointment, count, link, now or utcnow())
    method = "CANCEL" if str(event["status"]) == "CANCELLED" else "REQUEST"
    organizer = vCalAddress(f"mailto:{parseaddr(current_app.config['MAIL_FROM'])[1]}")
    organizer.params["cn"] = vText("Huizhen")
    event.add("organizer", organizer)
    event.add("attendee", vCalAddress(f"mailto:{attendee}"),
              parameters={"role": "REQ-PARTICIPANT", "rsvp": "FALSE"})
    cal = Calendar()
    cal.add("prodid", "-//Huizhen//Consultations//EN")
    cal.add("version", "2.0")
    cal.add("method", method)
    cal.add_component(event)
    return cal.to_ical(), method


def feed_ics(user: User, *, now: datetime | None = None) -> bytes:
    """The user's booked consultations as iCalendar: one event per consult, UID stable.

    The event follows the consult's latest appointment; SEQUENCE counts its changes (each
    reschedule, and a cancellation) and a cancelled consult has STATUS:CANCELLED. Only the time,
    a neutral title and a link: no patient data, complaint or other clinical text. The texts are
    in the feed owner's language (a calendar fetches the feed without a session).
    """
    with speaking(user_locale(user)):
        return _feed_ics(user, now=now)


def _feed_ics(user: User, *, now: datetime | None = None) -> bytes:
    now = now or utcnow()
    counts = (select(Appointment.consult_id, func.count().label("n"), func.max(Appointment.id).label("last"))
              .group_by(Appointment.consult_id).subquery())
    rows = db.session.execute(
        select(Consult, Appointment, counts.c.n)
        .join(counts, counts.c.consult_id == Consult.id)
        .join(Appointment, Appointment.id == counts.c.last)
        .where(policy.consults_of(user))
        .order_by(Appointment.starts_at)
    ).all()
    cal = Calendar()
    cal.add("prodid", "-//Huizhen//Consultations//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", translate(CALENDAR_NAME))
    for consult, appointment, count in rows:
        link = url_for("consults.view", ref=consult.ref, _external=True)
        cal.add_component(consult_event(consult, appointment, count, link, now))
    return cal.to_ical()
