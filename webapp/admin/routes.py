"""Coordinator pages: registrations, facilities, partnerships, queue, audit log."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _

from ..audit import log as auditlog
from ..auth import services as accounts
from ..auth.decorators import me, role_required
from ..consults import services as consults
from ..consults.forms import EmptyForm
from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..models import Facility, FacilityLevel, Role, utcnow
from . import services
from .forms import AssignForm, AuditFilterForm, FacilityForm, PartnershipForm, RejectForm, SuspendForm

bp = Blueprint("admin", __name__, url_prefix="/admin")
coordinator_only = role_required(Role.COORDINATOR)


def _first_error(form) -> str:
    return next((e for errs in form.errors.values() for e in errs), _("Check the form."))


@bp.get("/registrations")
@coordinator_only
def registrations():
    return render_template("admin/registrations.html", pending=accounts.pending_registrations(),
                           users=services.list_users(), empty_form=EmptyForm(), reject_form=RejectForm(),
                           suspend_form=SuspendForm(), status_label=accounts.status_label)


@bp.post("/registrations/<int:user_id>/approve")
@coordinator_only
def approve(user_id: int):
    user = accounts.approve(me(), user_id)
    flash(_("%(name)s can now sign in.", name=user.full_name), "success")
    return redirect(url_for(".registrations"))


@bp.post("/registrations/<int:user_id>/reject")
@coordinator_only
def reject(user_id: int):
    form = RejectForm()
    if not form.validate():
        raise ValidationFailed(_first_error(form), fields={"note": "required"})
    user = accounts.reject(me(), user_id, form.note.data)
    flash(_("The registration of %(name)s was rejected.", name=user.full_name), "info")
    return redirect(url_for(".registrations"))


@bp.post("/users/<int:user_id>/suspend")
@coordinator_only
def suspend(user_id: int):
    form = SuspendForm()
    if not form.validate():
        raise ValidationFailed(_first_error(form), fields={"reason": "required"})
    user = accounts.suspend(me(), user_id, form.reason.data)
    flash(_("%(name)s is suspended and was signed out everywhere.", name=user.full_name), "success")
    return redirect(url_for(".registrations"))


@bp.post("/users/<int:user_id>/reinstate")
@coordinator_only
def reinstate(user_id: int):
    user = accounts.reinstate(me(), user_id)
    flash(_("%(name)s can sign in again.", name=user.full_name), "success")
    return redirect(url_for(".registrations"))


@bp.post("/users/<int:user_id>/reset-link")
@coordinator_only
def reset_link(user_id: int):
    user, link = accounts.issue_reset_link(me(), user_id)
    return render_template("admin/reset_link.html", user=user, link=link,
                           minutes=current_app.config["PASSWORD_RESET_MINUTES"])


def _facility_choices() -> list[tuple[int, str]]:
    return [(f.id, _("%(name)s (%(level)s)", name=f.name, level=f.level.label)) for f in services.list_facilities()]


@bp.route("/facilities", methods=["GET", "POST"])
@coordinator_only
def facilities():
    form = FacilityForm()
    pair_form = PartnershipForm()
    pair_form.facility_id.choices = pair_form.partner_id.choices = _facility_choices()
    status = 200
    if request.method == "POST":
        if not form.validate_on_submit():
            raise ValidationFailed(_first_error(form))
        services.save_facility(me(), form.name.data, FacilityLevel(form.level.data), form.region.data)
        flash(_("Facility added."), "success")
        return redirect(url_for(".facilities"))
    return render_template("admin/facilities.html", form=form, pair_form=pair_form,
                           facilities=services.list_facilities(),
                           partnerships=services.list_partnerships(), empty_form=EmptyForm()), status


@bp.route("/facilities/<int:facility_id>/edit", methods=["GET", "POST"])
@coordinator_only
def edit_facility(facility_id: int):
    facility = db.session.get(Facility, facility_id)
    if facility is None:
        raise NotFound("No such facility.")
    form = FacilityForm(obj=facility if request.method == "GET" else None)
    if request.method == "GET":
        form.level.data = facility.level.value
    if form.validate_on_submit():
        services.save_facility(me(), form.name.data, FacilityLevel(form.level.data), form.region.data,
                               facility_id=facility_id)
        flash(_("Facility saved."), "success")
        return redirect(url_for(".facilities"))
    return render_template("admin/facility_edit.html", form=form, facility=facility)


@bp.post("/partnerships")
@coordinator_only
def add_partnership():
    form = PartnershipForm()
    form.facility_id.choices = form.partner_id.choices = _facility_choices()
    if not form.validate():
        raise ValidationFailed(_first_error(form))
    services.add_partnership(me(), form.facility_id.data, form.partner_id.data)
    flash(_("Partnership added: routing now prefers the partner's specialists."), "success")
    return redirect(url_for(".facilities"))


@bp.post("/partnerships/<int:partnership_id>/delete")
@coordinator_only
def remove_partnership(partnership_id: int):
    services.remove_partnership(me(), partnership_id)
    flash(_("Partnership removed."), "info")
    return redirect(url_for(".facilities"))


@bp.get("/queue")
@coordinator_only
def queue():
    return render_template("admin/queue.html", queue=consults.unassigned_queue(),
                           figures=services.figures())


@bp.post("/consults/<ref>/assign")
@coordinator_only
def assign(ref: str):
    form = AssignForm()
    form.specialist_id.choices = [(s.id, s.full_name) for s in services.approved_specialists()]
    if not form.validate():
        raise ValidationFailed("Choose an approved specialist.", fields={"specialist_id": "invalid"})
    consults.assign(me(), ref, form.specialist_id.data)
    flash(_("Consult assigned."), "success")
    return redirect(url_for("consults.view", ref=ref))


def _audit_filter_form() -> AuditFilterForm:
    form = AuditFilterForm(request.args)
    form.user.choices = [("", _("Anyone"))] + [(str(u.id), f"{u.full_name} ({u.email})")
                                               for u in auditlog.known_users()]
    form.action.choices = [("", _("Any action"))] + auditlog.known_actions()
    return form


@bp.get("/audit")
@coordinator_only
def audit_log():
    form = _audit_filter_form()
    page = min(max(1, request.args.get("page", 1, type=int) or 1), 1_000_000)  # the offset must fit the database
    status = 200
    if form.validate():
        result = auditlog.search(me(), form.to_filter(), page)
    else:
        result, status = auditlog.AuditPage([], 0, 1, auditlog.PER_PAGE), 422
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template("admin/audit.html", form=form, result=result, args=args,
                           detail_items=auditlog.detail_items, is_long=auditlog.is_long, names=auditlog.Names(),
                           when=auditlog.when), status


@bp.get("/audit.csv")
@coordinator_only
def audit_export():
    form = _audit_filter_form()
    if not form.validate():
        raise ValidationFailed(_first_error(form), fields={name: "invalid" for name in form.errors})
    _, lines = auditlog.export_csv(me(), form.to_filter())
    name = f"huizhen-audit-{utcnow():%Y%m%d-%H%M%S}.csv"
    return Response(stream_with_context(lines), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
