"""Recording and reading the append-only audit log."""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context, request
from flask_login import current_user
from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditEvent, Consult, User, utcnow
from .chain import normalise_detail, queue


def _actor() -> User | None:
    if has_request_context() and current_user and current_user.is_authenticated:
        return current_user._get_current_object()  # type: ignore[attr-defined]
    return None


def record(
    action: str,
    *,
    actor: User | None = None,
    consult: Consult | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit entry to the current transaction; the caller's commit chains and persists it.

    The entry is queued on the session, not flushed: at commit it gets its place in the hash
    chain (audit/chain.py) under the chain lock, so the lock is held only at the very end.
    """
    actor = actor or _actor()
    event = AuditEvent(
        at=utcnow(),
        action=action,
        actor_id=actor.id if actor else None,
        actor_email=actor.email if actor else None,
        consult_id=consult.id if consult is not None else None,
        target=target,
        ip=request.remote_addr if has_request_context() else None,
        detail=normalise_detail(detail),
    )
    queue(db.session(), event)
    return event


def record_now(action: str, **kwargs: Any) -> AuditEvent:
    """Record an audit entry in a transaction of its own (views and refused access)."""
    event = record(action, **kwargs)
    db.session.commit()
    return event


def _power_of_ten(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1


def record_refusal(action: str, *, actor: User, consult: Consult | None = None,
                   detail: dict[str, Any] | None = None) -> AuditEvent | None:
    """Audit a refused access, rate-limited so that a flood of refusals cannot flood the log.

    The first AUDIT_REFUSALS_PER_WINDOW refusals of a user, consult, action and detail in a window
    of AUDIT_REFUSAL_WINDOW_SECONDS are recorded one by one, at once. Further ones are counted (in
    the rate limiter's storage: across processes with Redis) and recorded only at the 100th,
    1,000th ... refusal, with the count so far in ``detail["count"]``; the first row of the next
    window carries the previous window's total (``previous_window_count``) when it was over the
    allowance. Rows are never updated (the log stays append-only). If the counter is unavailable
    every refusal is recorded. Returns the row written, or None when the refusal was only counted.
    """
    from ..ratelimit import count_refusal

    window = int(current_app.config["AUDIT_REFUSAL_WINDOW_SECONDS"])
    allowance = int(current_app.config["AUDIT_REFUSALS_PER_WINDOW"])
    key = f"{action}/{actor.id}/{consult.id if consult is not None else '-'}/{sorted((detail or {}).items())}"
    try:
        count, previous = count_refusal(key, window)
    except Exception:
        current_app.logger.warning("refusal counter unavailable; auditing %s individually", action)
        return record_now(action, actor=actor, consult=consult, detail=detail)
    if count <= allowance:
        extra: dict[str, Any] = {"previous_window_count": previous} if previous > allowance else {}
        return record_now(action, actor=actor, consult=consult, detail={**(detail or {}), **extra} or None)
    if not _power_of_ten(count):
        return None
    return record_now(action, actor=actor, consult=consult,
                      detail={**(detail or {}), "count": count, "window_seconds": window})


def list_events(
    *, page: int = 1, per_page: int = 50, consult_ref: str | None = None,
    action: str | None = None, actor_email: str | None = None,
) -> tuple[list[AuditEvent], int]:
    """One page of audit entries, newest first, with the total count."""
    query = select(AuditEvent)
    if consult_ref:
        query = query.join(Consult, Consult.id == AuditEvent.consult_id).where(
            Consult.ref == consult_ref
        )
    if action:
        query = query.where(AuditEvent.action.startswith(action, autoescape=True))
    if actor_email:
        query = query.where(AuditEvent.actor_email == actor_email.strip().lower())
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(
        query.order_by(AuditEvent.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return list(rows), total
