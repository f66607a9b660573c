"""Role checks for views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask_login import current_user, login_required

from ..errors import Forbidden
from ..i18n import N_, translate
from ..models import Role

ROLE_PLURALS = {Role.RURAL_DOCTOR: N_("rural doctors"), Role.SPECIALIST: N_("specialists"),
                Role.COORDINATOR: N_("coordinators")}


def roles_text(roles: tuple[Role, ...]) -> str:
    """'rural doctors and specialists' in the current language."""
    names = [translate(ROLE_PLURALS[r]) for r in roles]
    if not names:
        return ""
    text = names[0]
    for i, name in enumerate(names[1:], start=2):
        template = N_("%(first)s and %(last)s") if i == len(names) else N_("%(first)s, %(next)s")
        text = translate(template, {"first": text, "last": name} if i == len(names) else {"first": text, "next": name})
    return text


def role_required(*roles: Role, check_first: Callable[..., Any] | None = None) -> Callable:
    """Allow only signed-in users with one of these roles (others get 403).

    ``check_first(**view_args)`` runs before that refusal: consult pages pass their visibility
    check, so that whoever may not see the consult meets its audited 404 whatever their role,
    never a 403 that would confirm the consult exists.
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any):
            if current_user.role not in roles:
                if check_first is not None:
                    check_first(**kwargs)
                raise Forbidden("This page is for %(roles)s.", roles=roles_text(roles))
            return view(*args, **kwargs)

        return wrapped

    return decorator


def me():
    """The signed-in user as a plain model object."""
    return current_user._get_current_object()
