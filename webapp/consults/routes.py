"""Consult pages: request, view, attachments, accept or decline, book, answer, acknowledge."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from babel.dates import format_date
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext

from ..auth.decorators import me, role_required
from ..errors import DomainError, FileTooLarge, Forbidden, UnsupportedFile, ValidationFailed, wants_json
from ..extensions import db
from ..files.services import ConversionBusy, path_of
from ..i18n import N_, current_locale, translate
from ..models import ConsultStatus, Role, Urgency, specialty_choices, utcnow
from ..scheduling import services as scheduling
from ..scheduling.preferences import fits, parse_preferences
from ..timefmt import format_local, local
from ..validation import clean_int
from . import hooks, participants, policy, services
from .forms import (
    AcceptForm,
    AttachmentForm,
    CaseForm,
    EmptyForm,
    ReasonForm,
    RecommendationForm,
    RescheduleForm,
    SlotForm,
)
from .matching import eligible_specialists, first_available_for

bp = Blueprint("consults", __name__, url_prefix="/consults")
ANY_SIGNED_IN = (Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)


def _check_visible(ref: str, **_: object) -> None:
    services.check_visible(me(), ref, (request.endpoint or "").rsplit(".", 1)[-1])


def consult_role(*roles: Role):
    """role_required for a consult's pages: a user who may not see the consult gets its 404 first."""
    return role_required(*roles, check_first=_check_visible)


def _parse_slot(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed("That time could not be read; choose one of the listed slots.") from None
    if parsed.tzinfo is None:
        raise ValidationFailed("That time has no time zone; choose one of the listed slots.")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59-23:59 lies beyond what datetime can hold in UTC
        raise ValidationFailed("That time could not be read; choose one of the listed slots.") from None


def _slot_choices(specialist, viewer_tz: str) -> list[tuple[str, str]]:
    return [(s.starts_at.isoformat(), format_local(s.starts_at, viewer_tz))
            for s in scheduling.open_slots(specialist, days=scheduling.page_days())]


def _earliest(consult) -> dict | None:
    """The earliest free times across an urgent request's specialty (partner hospitals first, or the
    earliest overall with ?earliest=overall); None where the page does not show them."""
    if consult is None or consult.urgency == Urgency.ROUTINE or not consult.specialty:
        return None
    overall = request.args.get("earliest") == "overall"
    return {"slots": first_available_for(consult, prefer_partner=not overall), "overall": overall}


def _form_error(form, exc: DomainError) -> int:
    db.session.rollback()
    if wants_json(request):
        raise exc  # scripts get the JSON error body from the one error handler
    for field in exc.fields:
        if field in form:  # the service's word for this field, else its one message
            form[field].errors = [*form[field].errors, exc.field_messages.get(field, exc.message)]
    flash(exc.message, "error")
    return exc.status


def _case_form_error(form: CaseForm, exc: DomainError) -> int:
    """Put a refused case at its fields: one message each, and a short summary above the form."""
    db.session.rollback()
    for name, code in exc.fields.items():
        if name in form:
            label = services.REQUIRED_TO_SUBMIT.get(name)
            form[name].errors = [_("Fill in %(what)s to send the request.", what=translate(label))
                                 if code == "required" and label else exc.message]
    flash(_("The request was not sent: %(reason)s", reason=exc.message) if form.send.data else exc.message,
          "error")
    return exc.status


# A refused file of a multi-file upload, and what was kept of the files before it.
REFUSED_FILE = N_("%(name)s: %(reason)s")
KEPT_ONE = N_("%(name)s: %(reason)s The file before it was attached.")
KEPT_MANY = N_("%(name)s: %(reason)s The %(count)s files before it were attached.")

# What a refused file gets back at the file field (not a permission refusal: that stays a 404/403).
UPLOAD_REFUSALS = (FileTooLarge, UnsupportedFile, ValidationFailed, ConversionBusy)


def _upload_error(form: AttachmentForm, exc: DomainError) -> int:
    """A refused upload: its reason at the file field of the re-rendered page."""
    db.session.rollback()
    form.file.errors = [exc.message]
    return exc.status


def _attach_files(ref: str, form: AttachmentForm) -> int:
    """Store each chosen file in turn (each checked and committed by the service); how many."""
    files = [f for f in request.files.getlist(form.file.name) if f and f.filename]
    if not files:
        raise ValidationFailed("Choose a file to upload.", fields={"file": "required"})
    for done, upload in enumerate(files):
        try:
            services.add_attachment(me(), ref, upload.stream, upload.filename, form.description.data or "")
        except UPLOAD_REFUSALS as exc:  # name the file; say what was kept of a multi-file upload
            if not done:
                message = REFUSED_FILE
            elif done == 1:
                message = KEPT_ONE
            else:
                message = KEPT_MANY
            raise type(exc)(message, fields={"file": exc.code}, name=upload.filename, reason=exc.message,
                            count=done) from exc
    return len(files)


def _edit_page(form: CaseForm, consult, upload_form: AttachmentForm, status: int, *, unsaved: bool):
    # unsaved: the page shows text that is not stored (the leave-page warning is armed at once)
    return render_template("consults/edit.html", form=form, consult=consult, upload_form=upload_form,
                           preview=eligible_specialists(consult) if consult else [],
                           earliest=_earliest(consult), unsaved=unsaved), status


@bp.route("/new", methods=["GET", "POST"])
@role_required(Role.RURAL_DOCTOR)
def new():
    form = CaseForm()
    status = 422 if request.method == "POST" else 200
    if form.validate_on_submit():
        if form.send.data:
            try:
                consult = services.create_and_submit(me(), form.to_case())
            except DomainError as exc:
                status = _case_form_error(form, exc)
            else:
                flash(_("Your request was sent to the matching specialists."), "success")
                return redirect(url_for(".view", ref=consult.ref))
        else:
            consult = services.create_draft(me(), form.to_case())
            flash(_("Draft saved. Add attachments below, then send the request."), "success")
            return redirect(url_for(".edit", ref=consult.ref))
    return render_template("consults/edit.html", form=form, consult=None,
                           unsaved=request.method == "POST"), status


@bp.route("/<ref>/edit", methods=["GET", "POST"])
@consult_role(Role.RURAL_DOCTOR)
def edit(ref: str):
    consult = services.view_consult(me(), ref)
    if not policy.can_edit_case(me(), consult):
        flash(_("This request can no longer be edited: a specialist has taken it."), "info")
        return redirect(url_for(".view", ref=ref))
    form = CaseForm(obj=consult if request.method == "GET" else None)
    upload_form = AttachmentForm(meta={"csrf": False})  # part of the case form (one CSRF token)
    if request.method == "GET":
        form.urgency.data = consult.urgency.value
        form.patient_sex.data = consult.patient_sex.value if consult.patient_sex else ""
        form.specialty.data = consult.specialty or ""
    status = 200
    if form.validate_on_submit():
        try:
            services.update_case(me(), ref, form.to_case())
        except DomainError as exc:
            return _edit_page(form, consult, upload_form, _case_form_error(form, exc), unsaved=True)
        if request.form.get("attach"):
            # Without JavaScript, "Attach file" sends the whole form: the text was saved above.
            try:
                count = _attach_files(ref, upload_form)
            except UPLOAD_REFUSALS as exc:
                return _edit_page(form, consult, upload_form, _upload_error(upload_form, exc), unsaved=False)
            flash(ngettext("File attached.", "%(num)d files attached.", count), "success")
            return redirect(url_for(".edit", ref=ref) + "#attachments")
        try:
            if form.send.data and consult.status == ConsultStatus.DRAFT:
                services.submit(me(), ref)
                flash(_("Your request was sent to the matching specialists."), "success")
                return redirect(url_for(".view", ref=ref))
        except DomainError as exc:
            status = _case_form_error(form, exc)
        else:
            flash(_("Saved."), "success")
            return redirect(url_for(".edit", ref=ref) if consult.status == ConsultStatus.DRAFT
                            else url_for(".view", ref=ref))
    elif request.method == "POST":
        return _edit_page(form, consult, upload_form, 422, unsaved=True)
    return _edit_page(form, consult, upload_form, status, unsaved=False)


# config.py's default EMERGENCY_INSTRUCTION, so that the catalog translates it; an instruction set
# in the environment is shown as written (a deployment writes it in its users' language).
DEFAULT_EMERGENCY_INSTRUCTION = N_("If the patient cannot wait, call 120 or transfer to the nearest county "
                                   "hospital now.")


@bp.get("/<ref>")
@consult_role(*ANY_SIGNED_IN)
def view(ref: str):
    return render_template("consults/view.html", **_view_context(ref, AttachmentForm()))


def _view_context(ref: str, upload_form: AttachmentForm) -> dict:
    user = me()
    consult = services.view_consult(user, ref)
    context = {
        "consult": consult,
        "upload_form": upload_form,
        "reason_form": ReasonForm(),
        "empty_form": EmptyForm(),
        "can_attach": policy.can_attach(user, consult),
        "can_edit": policy.can_edit_case(user, consult),
        "can_cancel": policy.can_cancel(user, consult),
        "can_book": policy.can_book(user, consult),
        "can_reschedule": policy.can_reschedule(user, consult),
        "booking_history": scheduling.history_of(consult),
        "can_answer": policy.can_answer(user, consult),
        "offer": policy.pending_offer(user, consult),
        "now": utcnow(),
        "emergency_instruction": translate(current_app.config["EMERGENCY_INSTRUCTION"]),
        "show_matching": policy.allows(user, consult, policy.Action.SEE_MATCHING),
        "participant_name": lambda user_id: policy.name_in(consult, user_id),
        "participants": participants.history(consult),
        "invitation": (lambda p: p if p is not None and p.is_invited else None)(policy.participation(user, consult)),
        "may_remove": lambda row: policy.remove_allowed(user, consult, row),
        "preview": eligible_specialists(consult) if consult.status == ConsultStatus.DRAFT else [],
        "earliest": _earliest(consult) if policy.allows(user, consult, policy.Action.SEE_MATCHING)
        and (consult.is_open or consult.status == ConsultStatus.DRAFT) else None,
        "signature_ok": (services.verify_signature(consult.recommendation)
                         if consult.recommendation and consult.recommendation.is_signed else None),
    }
    context.update(hooks.page_context(user, consult))  # the room's opening, the calls (rooms, video)
    if user.role == Role.COORDINATOR and consult.is_open:
        context["assign_choices"] = eligible_specialists(consult)
    return context


@bp.post("/<ref>/submit")
@consult_role(Role.RURAL_DOCTOR)
def submit(ref: str):
    services.submit(me(), ref)
    flash(_("Your request was sent to the matching specialists."), "success")
    return redirect(url_for(".view", ref=ref))


@bp.post("/<ref>/attachments")
@consult_role(*ANY_SIGNED_IN)
def upload(ref: str):
    """One file as JSON for the page's script (Accept: application/json), or a form without it."""
    form = AttachmentForm()
    if wants_json(request):
        if not form.validate():
            errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)  # translated already
            raise ValidationFailed(errors, fields={name: "invalid" for name in form.errors})
        item = services.add_attachment(me(), ref, form.file.data.stream, form.file.data.filename,
                                       form.description.data or "")
        return jsonify(_attachment_json(ref, item)), 201
    back = request.form.get("back")
    try:
        if not form.validate():
            raise ValidationFailed(str(next(e for errs in form.errors.values() for e in errs)),
                                   fields={name: "invalid" for name in form.errors})
        count = _attach_files(ref, form)
    except UPLOAD_REFUSALS as exc:
        if back == "edit":  # an older edit page: its form is now the case form itself
            raise
        status = _upload_error(form, exc)
        return render_template("consults/view.html", **_view_context(ref, form)), status
    flash(ngettext("File attached.", "%(num)d files attached.", count), "success")
    return redirect(url_for(".edit", ref=ref) if back == "edit" else url_for(".view", ref=ref) + "#attachments")


def _attachment_json(ref: str, item) -> dict:
    return {"id": item.id, "name": item.original_name, "content_type": item.content_type,
            "size": item.size_bytes, "size_text": current_app.jinja_env.filters["filesize"](item.size_bytes),
            "description": item.description, "is_image": item.is_image,
            "width": item.width, "height": item.height, "page_count": item.page_count,
            "url": url_for(".attachment", ref=ref, attachment_id=item.id)}


@bp.get("/<ref>/attachments/<int:attachment_id>")
@consult_role(*ANY_SIGNED_IN)
def attachment(ref: str, attachment_id: int):
    item = services.open_attachment(me(), ref, attachment_id)
    try:
        path = path_of(item.stored_name)
    except ValueError:
        abort(404)
    if not path.exists():
        abort(404)
    response = send_file(path, mimetype=item.content_type, download_name=item.original_name,
                         as_attachment=request.args.get("download") == "1", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/<ref>/accept", methods=["GET", "POST"])
@consult_role(Role.SPECIALIST)
def accept(ref: str):
    consult = services.review_offer(me(), ref)
    form = AcceptForm()
    form.slot.choices = [("", _("Answer in writing — no call needed"))] + _slot_choices(me(), me().timezone)
    status = 200
    if form.validate_on_submit():
        try:
            services.accept(me(), ref, _parse_slot(form.slot.data))
        except DomainError as exc:
            status = _form_error(form, exc)
        else:
            flash(_("You accepted the consult. The time is booked.") if form.slot.data else
                  _("You accepted the consult. Write your recommendation when ready."), "success")
            return redirect(url_for(".view", ref=ref))
    elif request.method == "POST":
        status = 422
    return render_template("consults/accept.html", consult=consult, form=form, reason_form=ReasonForm(),
                           slot_days=_slots_by_day(form, consult), earliest=_earliest(consult)), status


def _slots_by_day(form: AcceptForm, consult) -> list[tuple[str, list[tuple[object, bool]]]]:
    """The slot choices grouped by day in the viewer's zone, each marked if it fits the request's
    preferred times (read in the requester's zone)."""
    pref = parse_preferences(consult.preferred_times or "")
    length = timedelta(minutes=current_app.config["SLOT_MINUTES"])
    days: dict[str, list[tuple[object, bool]]] = {}
    for sub in form.slot:
        if not sub.data:
            continue  # "answer in writing" is shown on its own
        starts = _parse_slot(sub.data)
        assert starts is not None
        label = day_label(local(starts, me().timezone).date())
        days.setdefault(label, []).append(
            (sub, fits(pref, starts, starts + length, consult.requester.timezone)))
    return list(days.items())


# How a day of slots is headed, by locale ("Wednesday 16 December 2026", "12月16日 星期三").
DAY_FORMATS = {"en": "EEEE dd MMMM y", "zh_CN": "M月d日 EEEE"}


def day_label(day: date) -> str:
    """A day's heading in the current language."""
    locale = current_locale()
    return format_date(day, DAY_FORMATS.get(locale, "full"), locale=locale)


@bp.post("/<ref>/decline")
@consult_role(Role.SPECIALIST)
def decline(ref: str):
    form = ReasonForm()
    if not form.validate():
        raise ValidationFailed("Say why you decline, so the coordinator can route the case.",
                               fields={"reason": "required"})
    services.decline(me(), ref, form.reason.data)
    flash(_("You declined the request. The coordinator can see your reason."), "info")
    return redirect(url_for("dashboard.index"))


@bp.route("/<ref>/book", methods=["GET", "POST"])
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def book(ref: str):
    if request.method == "POST" and wants_json(request):  # the page's script (static/js/book.js)
        return _slot_json(ref, SlotForm(formdata=request.form), N_("Choose a time."),
                          lambda form, when: services.book(me(), ref, when),
                          N_("The consultation time is booked."))
    consult = services.view_consult(me(), ref)
    if not policy.entitled(me(), consult, policy.Action.BOOK):  # not the requester or the lead
        raise Forbidden(N_("You cannot book a time for this consult now."))
    if not policy.can_book(me(), consult) or consult.specialist is None:
        flash(_("A time can be booked once a specialist has accepted, and only once."), "info")
        return redirect(url_for(".view", ref=ref))
    return _slot_page(consult, SlotForm(), "consults/book.html", N_("Choose a time."),
                      lambda form, when: services.book(me(), ref, when), N_("The consultation time is booked."))


@bp.route("/<ref>/reschedule", methods=["GET", "POST"])
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def reschedule(ref: str):
    if request.method == "POST" and wants_json(request):  # the page's script (static/js/book.js)
        return _slot_json(ref, RescheduleForm(formdata=request.form), N_("Choose a new time."),
                          lambda form, when: services.reschedule(me(), ref, when, form.reason.data),
                          N_("The consultation has a new time."))
    consult = services.view_consult(me(), ref)
    if not policy.entitled(me(), consult, policy.Action.RESCHEDULE):  # not the requester or the lead
        raise Forbidden(N_("You cannot reschedule this consult now."))
    if not policy.can_reschedule(me(), consult) or consult.specialist is None:
        flash(_("Only a booked consultation can be moved, by its requester or its specialist."), "info")
        return redirect(url_for(".view", ref=ref))
    return _slot_page(consult, RescheduleForm(), "consults/reschedule.html", N_("Choose a new time."),
                      lambda form, when: services.reschedule(me(), ref, when, form.reason.data),
                      N_("The consultation has a new time."))


def _slot_page(consult, form, template: str, missing: str, act, done: str):
    """A page that picks one of the specialist's open slots (book, reschedule): act(form, when) on a
    valid choice, else the form again with the message at its field.

    The open slots are listed only when the page is shown (the choice is checked by the service,
    not against the list), so a POST that books computes none, and a refused one (e.g. the slot
    was just taken) lists the slots still open once, after the refusal."""
    status = 200
    if form.validate_on_submit():
        try:
            when = _parse_slot(form.slot.data)
            if when is None:
                raise ValidationFailed(missing, fields={"slot": "required"})
            act(form, when)
        except DomainError as exc:
            status = _form_error(form, exc)
        else:
            flash(translate(done), "success")
            return redirect(url_for(".view", ref=consult.ref))
    elif request.method == "POST":
        status = 422
    form.slot.choices = _slot_choices(consult.specialist, me().timezone)
    return render_template(template, consult=consult, form=form), status


def _slot_json(ref: str, form, missing: str, act, done: str):
    """A slot chosen by the page's script (Accept: application/json): {"ok", "redirect"} when booked.

    A refusal is the one error handler's JSON ({"error": code, "message": translated}, its status:
    409 when the slot was just taken), answered without a template and without listing the open
    slots (the script asks /open-slots for them), so that the losers of a race on one slot are
    refused in a few milliseconds each. The service checks who may act (404 / 403, audited as on
    the page); the consult is not read first to render anything. The form is read from the posted
    form fields only (book.js sends FormData): a JSON body, which Flask-WTF would otherwise take
    field by field with any type, is a missing choice, not a 500."""
    if not form.validate():  # the CSRF token (X-CSRFToken) is checked before this by CSRFProtect
        raise ValidationFailed(str(next(e for errs in form.errors.values() for e in errs)),
                               fields={name: "invalid" for name in form.errors})
    when = _parse_slot(form.slot.data)
    if when is None:
        raise ValidationFailed(missing, fields={"slot": "required"})
    try:
        act(form, when)
    except DomainError:
        # The refusal's language is chosen now, from the signed-in user's row: the rollback (which
        # ends the consult's row lock and the slot's claim at once) expires that row, and reading it
        # again for the message would cost a loser one more query.
        current_locale()
        db.session.rollback()
        raise
    flash(translate(done), "success")  # shown on the consult page the script goes to
    return jsonify({"ok": True, "redirect": url_for(".view", ref=ref)})


@bp.get("/<ref>/open-slots")
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def open_slots(ref: str):
    """The times still open, as the book and reschedule pages list them, for their script after a refusal."""
    _consult, slots = services.open_slots_for(me(), ref)
    tz = me().timezone
    return jsonify({"slots": [{"value": s.starts_at.isoformat(), "label": format_local(s.starts_at, tz)}
                              for s in slots]})


# What was filled from the shared notes (the fields in services.FROM_NOTES order).
FILLED = {
    ("assessment",): N_("Filled the assessment from the shared notes. Check, then save or sign. "
                        "Nothing is saved yet."),
    ("plan",): N_("Filled the plan from the shared notes. Check, then save or sign. Nothing is saved yet."),
    ("assessment", "plan"): N_("Filled the assessment and the plan from the shared notes. Check, then save "
                               "or sign. Nothing is saved yet."),
}


@bp.route("/<ref>/answer", methods=["GET", "POST"])
@consult_role(Role.SPECIALIST)
def answer(ref: str):
    consult = services.view_consult(me(), ref)
    if not policy.entitled(me(), consult, policy.Action.SIGN):  # not the lead: refused outright
        raise Forbidden(N_("Only the consult's lead specialist writes and signs the recommendation."))
    if not policy.can_answer(me(), consult):
        flash(_("Only the consult's specialist can answer it, before it is signed."), "info")
        return redirect(url_for(".view", ref=ref))
    form = RecommendationForm(obj=consult.recommendation if request.method == "GET" else None)
    notes = services.notes_for_answer(me(), consult)
    status, kept = 200, []
    submitted = form.validate_on_submit()
    if submitted and "from_notes" in request.form:
        choice = request.form["from_notes"]  # "empty": fill the empty fields; a field's name: replace it
        data, filled, kept = services.fill_from_notes(form.to_data(), notes, None if choice == "empty" else choice)
        form.assessment.data, form.plan.data = data.assessment, data.plan
        if filled:
            flash(translate(FILLED[tuple(filled)]), "info")
        elif not kept:
            flash(_("The shared notes have nothing more to add."), "info")
    elif submitted:
        try:
            services.save_recommendation(me(), ref, form.to_data(), sign=bool(form.sign.data))
        except DomainError as exc:
            status = _form_error(form, exc)
        else:
            if form.sign.data:
                flash(_("Recommendation signed and sent. The consult is now read-only."), "success")
                return redirect(url_for(".view", ref=ref))
            flash(_("Draft saved."), "success")
            return redirect(url_for(".answer", ref=ref))
    elif request.method == "POST":
        status = 422
    return render_template("consults/answer.html", consult=consult, form=form, notes=notes, kept=kept), status


@bp.post("/<ref>/acknowledge")
@consult_role(Role.RURAL_DOCTOR)
def acknowledge(ref: str):
    services.acknowledge(me(), ref)
    flash(_("Recommendation acknowledged."), "success")
    return redirect(url_for(".view", ref=ref))


@bp.post("/<ref>/cancel")
@consult_role(Role.RURAL_DOCTOR, Role.COORDINATOR)
def cancel(ref: str):
    form = ReasonForm()
    if not form.validate():
        raise ValidationFailed("Give a reason for cancelling.", fields={"reason": "required"})
    services.cancel(me(), ref, form.reason.data)
    flash(_("The consult was cancelled."), "info")
    return redirect(url_for(".view", ref=ref))


# --- participants: invite, answer an invitation, remove ----------------------------------------------


def _form_int(value: str | None, name: str, *, optional: bool = False) -> int | None:
    """A whole number typed in a form or a query (digits only), checked like any integer input."""
    if optional and not value:
        return None
    if value is None or not value.isdigit():
        return clean_int(value, name, lo=1)  # refuses it with the usual message
    return clean_int(int(value), name, lo=1)


@bp.get("/<ref>/invite")
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def invite_page(ref: str):
    specialty = request.args.get("specialty") or None
    if specialty is not None and specialty not in dict(specialty_choices()):
        raise ValidationFailed("Choose a specialty from the list.", fields={"specialty": "unknown"})
    facility_id = _form_int(request.args.get("facility"), "facility", optional=True)
    consult, found = participants.candidates(me(), ref, specialty=specialty, facility_id=facility_id)
    return render_template("consults/invite.html", consult=consult, candidates=found, specialty=specialty,
                           facility_id=facility_id, specialties=specialty_choices(),
                           facilities=participants.facilities(), empty_form=EmptyForm())


@bp.post("/<ref>/participants")
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def invite(ref: str):
    if not EmptyForm().validate():
        raise ValidationFailed("The form expired; reload the page and try again.")
    user_id = _form_int(request.form.get("user_id"), "user_id")
    row = participants.invite(me(), ref, user_id, request.form.get("role", ""))
    flash(_("%(name)s is invited as %(role)s.", name=row.user.full_name, role=row.role.label), "success")
    return redirect(url_for(".view", ref=ref))


@bp.post("/<ref>/invitation")
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST)
def answer_invitation(ref: str):
    if not EmptyForm().validate():
        raise ValidationFailed("The form expired; reload the page and try again.")
    accept = request.form.get("answer") == "accept"
    if not accept and request.form.get("answer") != "decline":
        raise ValidationFailed("Accept or decline the invitation.", fields={"answer": "invalid"})
    participants.respond(me(), ref, accept=accept)
    if accept:
        flash(_("You take part in this consult now."), "success")
        return redirect(url_for(".view", ref=ref))
    flash(_("You declined the invitation."), "info")
    return redirect(url_for("dashboard.index"))


@bp.post("/<ref>/participants/<int:user_id>/remove")
@consult_role(Role.RURAL_DOCTOR, Role.SPECIALIST, Role.COORDINATOR)
def remove_participant(ref: str, user_id: int):
    if not EmptyForm().validate():
        raise ValidationFailed("The form expired; reload the page and try again.")
    row = participants.remove(me(), ref, user_id)
    flash(_("%(name)s no longer takes part in this consult.", name=row.user.full_name), "info")
    return redirect(url_for(".view", ref=ref))
