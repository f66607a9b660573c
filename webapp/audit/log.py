"""Reading the audit log for the coordinator: filters, pages, readable details and the CSV export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import selectinload

from ..errors import Forbidden
from ..extensions import db
from ..i18n import N_, translate
from ..models import AuditEvent, Consult, Facility, Role, User
from ..timefmt import local, zone
from .labels import action_label
from .services import record

PER_PAGE = 50
LONG_DETAIL = 160  # characters: longer details are folded (expandable) on the page


@dataclass(frozen=True)
class AuditFilter:
    """What the coordinator asked to see; dates are days in the coordinator's own time zone."""

    date_from: date | None = None
    date_to: date | None = None
    user_id: int | None = None
    consult_ref: str | None = None
    action: str | None = None

    def to_detail(self) -> dict[str, Any]:
        """The filter as plain values (for the export's audit entry)."""
        return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(self).items()
                if v not in (None, "")}


@dataclass
class AuditPage:
    """One page of entries, newest first."""

    events: list[AuditEvent]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _require_coordinator(user: User) -> None:
    if user.role != Role.COORDINATOR:
        raise Forbidden("Only coordinators read the audit log.")


def _day_start_utc(day: date, tz_name: str | None, *, next_day: bool = False) -> datetime:
    """The UTC instant a local day starts (or ends); days at the ends of the calendar are clamped."""
    try:
        if next_day:
            day += timedelta(days=1)
        return datetime.combine(day, time(0), tzinfo=zone(tz_name)).astimezone(UTC)
    except OverflowError:  # 0001-01-01 in a zone east of UTC, or the day after 9999-12-31
        return datetime.max.replace(tzinfo=UTC) if next_day or day.year > 1 else datetime.min.replace(tzinfo=UTC)


def _query(flt: AuditFilter, tz_name: str | None) -> Select:
    query = select(AuditEvent)
    if flt.date_from:
        query = query.where(AuditEvent.at >= _day_start_utc(flt.date_from, tz_name))
    if flt.date_to:  # the whole last day, in the coordinator's zone
        query = query.where(AuditEvent.at < _day_start_utc(flt.date_to, tz_name, next_day=True))
    if flt.user_id is not None:
        query = query.where(AuditEvent.actor_id == flt.user_id)
    if flt.consult_ref:
        query = query.join(Consult, Consult.id == AuditEvent.consult_id).where(Consult.ref == flt.consult_ref)
    if flt.action:
        query = query.where(AuditEvent.action == flt.action)
    return query


def search(coordinator: User, flt: AuditFilter, page: int = 1, per_page: int = PER_PAGE) -> AuditPage:
    """One page of the entries matching the filter, newest first, with the total count."""
    _require_coordinator(coordinator)
    query = _query(flt, coordinator.timezone)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    last_page = max(1, -(-total // per_page))
    page = min(max(1, page), last_page)
    events = db.session.scalars(
        query.options(selectinload(AuditEvent.actor), selectinload(AuditEvent.consult))
        .order_by(AuditEvent.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return AuditPage(list(events), total, page, per_page)


def known_actions() -> list[tuple[str, str]]:
    """Every action code in the log (and every labelled one), with its label, by label."""
    from .labels import ACTION_LABELS

    codes = set(ACTION_LABELS) | set(db.session.scalars(select(AuditEvent.action).distinct()))
    return sorted(((c, action_label(c)) for c in codes), key=lambda pair: pair[1].lower())


def known_users() -> list[User]:
    """Every account, by name, for the user filter."""
    return list(db.session.scalars(select(User).order_by(User.full_name, User.id)))


USER_KEYS = {"offered_to", "specialist_id", "user_id"}  # detail keys that hold user ids
# The detail keys the application writes, as words (translated where shown); others read as their words.
DETAIL_LABELS = {
    "reason": N_("reason"), "starts_at": N_("starts at"), "sent": N_("sent"), "partner": N_("partner"),
    "first_day": N_("first day"), "last_day": N_("last day"), "facility": N_("facility"), "email": N_("email"),
    "windows": N_("windows"), "type": N_("type"), "to": N_("to"), "from": N_("from"), "status": N_("status"),
    "start_minute": N_("start minute"), "end_minute": N_("end minute"), "specialist_id": N_("specialist"),
    "user_id": N_("participant"),
    "rows": N_("rows"), "role": N_("role"), "refer_up": N_("refer up"), "offered_to": N_("offered to"),
    "note": N_("note"), "name": N_("name"), "mode": N_("mode"), "kind": N_("kind"), "filter": N_("filter"),
    "day": N_("day"), "bytes": N_("bytes"), "action": N_("action"),
}


def detail_label(key: str) -> str:
    """A detail key as words in the current language: "starts_at" reads "starts at"."""
    if key in DETAIL_LABELS:
        return translate(DETAIL_LABELS[key])
    return key.replace("_", " ").removesuffix(" id")


class Names:
    """Names for the ids an entry carries ("user:3", offered_to=[2, 5]), looked up once each."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], str] = {}

    def of(self, kind: str, ident: Any) -> str:
        model = {"user": User, "facility": Facility}.get(kind)
        if model is None or isinstance(ident, bool) or not isinstance(ident, int | str):
            return f"{kind} {ident}"
        try:
            key = (kind, int(ident))
        except ValueError:
            return f"{kind} {ident}"
        if key not in self._cache:
            row = db.session.get(model, key[1]) if -2**31 <= key[1] < 2**31 else None
            name = (row.full_name if kind == "user" else row.name) if row is not None else None
            self._cache[key] = name or translate(N_("%(kind)s #%(id)s (no longer exists)"),
                                                 {"kind": kind, "id": key[1]})
        return self._cache[key]

    def target(self, target: str | None) -> str:
        """"user:3" reads as the user's name, "facility:4" as the facility's."""
        if not target:
            return ""
        kind, sep, ident = target.partition(":")
        if sep and kind in ("user", "facility") and ident.isdigit():
            return self.of(kind, ident)
        return target


def _text(value: Any, names: Names | None = None, key: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return translate(N_("yes")) if value else translate(N_("no"))
    if names is not None and key in USER_KEYS and isinstance(value, int):
        return names.of("user", value)
    if isinstance(value, list | tuple):
        return ", ".join(_text(v, names, key) for v in value) or translate(N_("none"))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v, names, k)}" for k, v in value.items())
    return str(value)


def detail_items(detail: dict[str, Any] | None, names: Names | None = None) -> list[tuple[str, str]]:
    """An entry's detail as (label, value) pairs: "starts_at" reads "starts at", user ids as names."""
    if not detail:
        return []
    if not isinstance(detail, dict):  # stored JSON is always an object; show anything else whole
        return [(translate(N_("detail")), json.dumps(detail, ensure_ascii=False))]
    return [(detail_label(str(key)), _text(value, names, str(key))) for key, value in detail.items()]


def detail_text(detail: dict[str, Any] | None, names: Names | None = None) -> str:
    """The detail on one line, "key: value; key: value"."""
    return "; ".join(f"{k}: {v}" for k, v in detail_items(detail, names))


def is_long(detail: dict[str, Any] | None) -> bool:
    """Whether the page folds this detail behind "show all"."""
    return len(detail_text(detail)) > LONG_DETAIL or len(detail_items(detail)) > 3


def when(event: AuditEvent, tz_name: str | None) -> str:
    """The entry's time on one line in the viewer's zone, e.g. '2026-12-01 09:05:31'."""
    return local(event.at, tz_name).strftime("%Y-%m-%d %H:%M:%S")


def safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading = + - @ (or tab, CR) would start a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# The export's header row, translated when the file is written ("Time (%(zone)s)": the coordinator's zone).
CSV_COLUMNS = [N_("Time (UTC)"), N_("Time (%(zone)s)"), N_("User"), N_("User email"), N_("Role"), N_("Action"),
               N_("Action code"), N_("Consult"), N_("Consult reference"), N_("Target"), N_("Address"),
               N_("Details")]


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow([safe_cell(v) for v in values])
    return buf.getvalue()


def export_csv(coordinator: User, flt: AuditFilter) -> tuple[int, Iterator[str]]:
    """Record the export (audit.exported) and commit; then the matching rows as CSV lines, oldest first."""
    _require_coordinator(coordinator)
    tz_name = coordinator.timezone
    query = _query(flt, tz_name)
    count = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    entry = record("audit.exported", actor=coordinator, detail={"filter": flt.to_detail() or "none", "rows": count})
    db.session.commit()
    upto = entry.id  # the rows as counted: not this entry, nor any written while the file streams

    def lines() -> Iterator[str]:
        header = [translate(c, {"zone": tz_name or "UTC"} if "%(zone)s" in c else None) for c in CSV_COLUMNS]
        yield "\ufeff" + _csv_line(header)  # BOM: Excel reads UTF-8
        rows = db.session.scalars(
            query.where(AuditEvent.id < upto)
            .options(selectinload(AuditEvent.actor), selectinload(AuditEvent.consult))
            .order_by(AuditEvent.id).execution_options(yield_per=500))
        names = Names()
        untitled = translate(N_("Untitled draft"))
        for e in rows:
            yield _csv_line([
                local(e.at, "UTC").strftime("%Y-%m-%d %H:%M:%S"), when(e, tz_name),
                e.actor.full_name if e.actor else "", e.actor_email or "",
                e.actor.role.label if e.actor else "", action_label(e.action), e.action,
                (e.consult.chief_complaint or untitled) if e.consult else "",
                e.consult.ref if e.consult else "", names.target(e.target), e.ip or "", detail_text(e.detail, names),
            ])

    return count, lines()
