"""Role checks for views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask_login import current_user, login_required

from ..errors import Forbidden
from ..models import Role


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
                raise Forbidden("This page is for " + " and ".join(r.label.lower() + "s" for r in roles) + ".")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def me():
    """The signed-in user as a plain model object."""
    return current_user._get_current_object()
