"""The pre-call check page and its offer endpoint (answered by the media worker)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request, url_for

from ..auth.decorators import me, role_required
from ..models import Role
from ..validation import safe_local_path
from . import services

bp = Blueprint("video", __name__)
CLINICIANS = (Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)


@bp.get("/precall")
@role_required(*CLINICIANS)
def precall():
    back = request.args.get("back")  # the Back link goes to a page of this site, else the dashboard
    back = (safe_local_path(back) or url_for("dashboard.index")) if back else ""
    return render_template("video/precall.html", back=back)


@bp.post("/precall/offer")
@role_required(*CLINICIANS)
def precall_offer():
    answer = services.precall_echo(me(), request.get_json(silent=True))
    return jsonify(answer)


@bp.get("/api/ice-servers")
@role_required(*CLINICIANS)
def ice_servers():
    return jsonify({"ice_servers": services.ice_servers(me())})
