"""The consult room page."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from ..auth.decorators import me, role_required
from ..consults import policy
from ..consults.forms import AttachmentForm
from ..models import Role
from ..video import services as video_services
from . import access

bp = Blueprint("rooms", __name__, url_prefix="/consults")


@bp.get("/<ref>/room")
@role_required(Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)
def room(ref: str):
    try:
        consult = access.enter_room(me(), ref)
    except access.RoomNotOpen as closed:
        consult = access.consult_by_ref(ref)
        return render_template("rooms/not_open.html", consult=consult, opens_at=closed.opens_at,
                               message=closed.message), closed.status
    # static/js/call.js: everyone the policy lets join; a participant who may raise a hand (a
    # trainee) joins receive-only and sends their microphone only once the lead lets them speak
    call_allowed = video_services.may_join(me(), consult)
    call_sends = (policy.allows(me(), consult, policy.Action.SEND_MEDIA)
                  and not policy.allows(me(), consult, policy.Action.RAISE_HAND))
    return render_template("rooms/room.html", call_allowed=call_allowed, call_sends=call_sends,
                           call_can_allow=policy.allows(me(), consult, policy.Action.ALLOW_SPEECH),
                           ice_servers=video_services.ice_servers(me()) if call_allowed else [],
                           call_settings=video_services.call_settings(current_app.config),
                           polite=policy.is_polite(me(), consult), consult=consult, upload_form=AttachmentForm(),
                           read_only=consult.status in access.CLOSED,
                           can_post=policy.allows(me(), consult, policy.Action.POST))
