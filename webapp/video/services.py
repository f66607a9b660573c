"""Video calls: per-user TURN credentials, signaling validation, call records."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from flask import current_app
from flask_babel import lazy_ngettext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..audit.services import record
from ..consults import policy
from ..consults.policy import Action
from ..errors import DomainError, Forbidden, ValidationFailed
from ..extensions import db
from ..i18n import N_
from ..models import CallSession, Consult, ConsultStatus, User, utcnow
from ..validation import text_problem

CALL_STATUSES = (ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED)
SIGNAL_TYPES = ("offer", "answer", "candidate", "candidates", "bye")
# A "candidates" signal carries the ICE candidates a page gathered in one short tick (call.js)
MAX_BATCHED_CANDIDATES = 32
STATE_KEYS: dict[str, type] = {"muted": bool, "camera": bool, "audio_only": bool, "screen": bool,
                               "reconnecting": bool, "auto_audio": bool,
                               # what this party receives from the other: video height and bitrates
                               "recv_height": int, "recv_kbps": int, "recv_audio_kbps": int}
STATE_MAX_NUMBER = 100_000
DEGRADATION_PREFERENCES = ("balanced", "maintain-framerate", "maintain-resolution")


def turn_credentials(user: User, *, now: float | None = None) -> dict[str, Any] | None:
    """Short-lived TURN REST credentials (coturn use-auth-secret); the secret never leaves the server."""
    secret = current_app.config["TURN_SECRET"]
    if not secret or not current_app.config["TURN_URLS"]:
        return None
    ttl = current_app.config["TURN_TTL_SECONDS"]
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{user.id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode(), "ttl": ttl}


def ice_servers(user: User) -> list[dict[str, Any]]:
    """The RTCIceServer list for this user: configured STUN, and TURN with fresh credentials."""
    servers: list[dict[str, Any]] = []
    if current_app.config["STUN_URLS"]:
        servers.append({"urls": list(current_app.config["STUN_URLS"])})
    creds = turn_credentials(user)
    if creds:
        servers.append({"urls": list(current_app.config["TURN_URLS"]),
                        "username": creds["username"], "credential": creds["credential"]})
    return servers


def may_join(user: User, consult: Consult) -> bool:
    """Whether the policy lets the user join the consult's call now (a trainee only receive-only)."""
    return policy.allows(user, consult, Action.JOIN_CALL)


def require_call_party(user: User, consult: Consult) -> None:
    """Only the consult's participants take part in its call, while it is open."""
    if not policy.is_participant(user, consult):
        raise Forbidden("Only the consult's doctors can join its call.")
    if not may_join(user, consult):
        raise Forbidden("The call is available once the consult is accepted and until it is signed off.")


class CallFull(DomainError):
    """A join beyond the call's caps (CALL_MAX_SENDERS, CALL_MAX_PARTICIPANTS)."""

    status = 409
    code = "call_full"


def _present_users(consult: Consult, user_ids: set[int]) -> list[User]:
    return [p.user for p in policy.active_participants(consult) if p.user_id in user_ids]


def check_caps(user: User, consult: Consult, present: set[int]) -> None:
    """Refuse a join that would take the call past its caps: distinct people in it, and among
    them those sending media (a receive-only trainee counts only in the first)."""
    others = present - {user.id}
    if user.id in present:  # already in the call (another tab, a resumed or repeated join)
        return
    config = current_app.config
    total = config["CALL_MAX_PARTICIPANTS"]
    if len(others) + 1 > total:
        raise CallFull(N_("This call is full: %(num)s people are in it, the most it allows. "
                          "You can join once someone leaves."), num=total)
    if policy.allows(user, consult, Action.SEND_MEDIA):
        senders = config["CALL_MAX_SENDERS"]
        sending = [u for u in _present_users(consult, others) if policy.allows(u, consult, Action.SEND_MEDIA)]
        if len(sending) + 1 > senders:
            raise CallFull(N_("This call already has %(num)s people on camera and microphone, the most "
                              "it allows. You can join once someone leaves."), num=senders)


def call_people(consult: Consult, user_ids: list[int]) -> list[dict[str, Any]]:
    """Who is in the call, for the tiles: id, name, role, and whether they may send media."""
    people = []
    for p in policy.active_participants(consult):
        if p.user_id in user_ids:
            people.append({"user_id": p.user_id, "name": p.user.full_name, "role": p.role.value,
                           "sends": policy.allows(p.user, consult, Action.SEND_MEDIA)})
    return people


def hands(consult: Consult) -> list[dict[str, Any]]:
    """The call's raised hands and leaves to speak, trainee by trainee (the call order)."""
    return [{"user_id": p.user_id, "name": p.user.full_name, "raised": p.hand_raised_at is not None,
             "allowed": p.speech_allowed_at is not None}
            for p in policy.active_participants(consult)
            if p.hand_raised_at is not None or p.speech_allowed_at is not None]


def raise_hand(user: User, consult: Consult, raised: bool) -> bool:
    """A receive-only participant raises (or lowers) a hand to ask the lead to let them speak;
    whether that changed anything (a hand raised twice is one hand)."""
    if not policy.allows(user, consult, Action.RAISE_HAND):
        raise Forbidden("Only a trainee in the call raises a hand.")
    p = policy.participation(user, consult)
    assert p is not None  # RAISE_HAND is a participant's action
    if (p.hand_raised_at is not None) == raised:
        return False
    p.hand_raised_at = utcnow() if raised else None
    db.session.commit()
    return True


def allow_speech(actor: User, consult: Consult, user_id: Any, allow: bool, present: set[int]) -> None:
    """The lead lets a trainee in the call speak (their microphone), or withdraws it; a trainee
    let to speak counts as a sender against CALL_MAX_SENDERS (present: the users in the call)."""
    if not policy.allows(actor, consult, Action.ALLOW_SPEECH):
        raise Forbidden("Only the lead specialist lets a trainee speak.")
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise ValidationFailed("%(name)s must be a user id.", name="user_id")
    target = policy.participation(user_id, consult)
    if target is None or not target.is_active or not policy.allows(target.user, consult, Action.RAISE_HAND):
        raise ValidationFailed("Only a trainee of this consult can be let to speak.")
    if allow and user_id not in present:
        raise ValidationFailed("Only a trainee in the call can be let to speak.")
    if allow and target.speech_allowed_at is None:
        senders = current_app.config["CALL_MAX_SENDERS"]
        sending = [u for u in _present_users(consult, present) if policy.allows(u, consult, Action.SEND_MEDIA)]
        if len(sending) + 1 > senders:
            raise CallFull(N_("This call already has %(num)s people on camera and microphone, the most "
                              "it allows. You can join once someone leaves."), num=senders)
    target.speech_allowed_at = utcnow() if allow else None
    target.hand_raised_at = None
    record("call.speech_allowed" if allow else "call.speech_withdrawn", actor=actor, consult=consult,
           target=str(target.user_id))
    db.session.commit()


def leave_speech(user: User, consult: Consult) -> bool:
    """A trainee who hangs up (or whose last connection to the call goes) lowers their hand and
    gives back their leave to speak."""
    p = policy.participation(user, consult)
    if p is None or (p.hand_raised_at is None and p.speech_allowed_at is None):
        return False
    p.hand_raised_at = p.speech_allowed_at = None
    db.session.commit()
    return True


def sends_media(sdp: str) -> bool:
    """Whether a session description offers to send audio or video (a direction other than
    recvonly or inactive on any media section; no direction attribute means sendrecv)."""
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        lines = section.split("\n")
        if not lines[0].startswith(("audio", "video")):
            continue
        directions = {line.strip()[2:] for line in lines[1:]} & {"sendrecv", "sendonly", "recvonly", "inactive"}
        if not directions or directions & {"sendrecv", "sendonly"}:
            return True
    return False


def check_media(user: User, consult: Consult, signal: dict[str, Any]) -> None:
    """Refuse a description that would send media from a participant the policy keeps receive-only."""
    if (signal.get("type") in ("offer", "answer") and not policy.allows(user, consult, Action.SEND_MEDIA)
            and sends_media(signal["sdp"])):
        raise Forbidden("You join this call receive-only: your camera and microphone stay off.")


def validate_signal(data: dict[str, Any]) -> dict[str, Any]:
    """A clean copy of an offer/answer/candidate(s)/bye message, or ValidationFailed."""
    kind = data.get("type")
    if kind not in SIGNAL_TYPES:
        raise ValidationFailed("Signal type must be one of %(types)s.", types=", ".join(SIGNAL_TYPES))
    if kind in ("offer", "answer"):
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise ValidationFailed("The session description is not valid SDP.")
        if len(sdp) > current_app.config["SIGNAL_MAX_SDP_BYTES"] or text_problem(sdp, controls=False):
            raise ValidationFailed("The session description is too large or not valid text.")
        if len(sdp.encode()) > current_app.config["SIGNAL_MAX_SDP_BYTES"]:
            raise ValidationFailed("The session description is too large.")
        if any(ord(ch) < 9 for ch in sdp):
            raise ValidationFailed("The session description contains control characters.")
        return {"type": kind, "sdp": sdp}
    if kind == "candidate":
        return {"type": kind, "candidate": _candidate(data.get("candidate"))}
    if kind == "candidates":
        batch = data.get("candidates")
        if not isinstance(batch, list) or not batch:
            raise ValidationFailed("The ICE candidates must be a list of at least one.")
        if len(batch) > MAX_BATCHED_CANDIDATES:
            raise ValidationFailed("At most %(max)s ICE candidates go in one signal.", max=MAX_BATCHED_CANDIDATES)
        return {"type": kind, "candidates": [_candidate(cand) for cand in batch]}
    return {"type": "bye"}


def _candidate(cand: Any) -> dict[str, Any] | None:
    """A clean copy of one ICE candidate (RTCIceCandidateInit), None for the end of candidates."""
    if cand is None:  # end of candidates
        return None
    if not isinstance(cand, dict):
        raise ValidationFailed("An ICE candidate must be an object.")
    text = cand.get("candidate")
    mid = cand.get("sdpMid")
    index = cand.get("sdpMLineIndex")
    if (not isinstance(text, str) or len(text) > 1024 or (text and not text.startswith("candidate:"))
            or text_problem(text)):
        raise ValidationFailed("The ICE candidate is not valid.")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64 or text_problem(mid)):
        raise ValidationFailed("sdpMid must be a short string.")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 64):
        raise ValidationFailed("sdpMLineIndex must be a small number.")
    return {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index}


def validate_state(data: dict[str, Any]) -> dict[str, bool | int]:
    """The media state a party announces (muted, camera, audio-only and whether the link chose it,
    screen share, reconnecting) and what it receives (video height, video and audio kbit/s)."""
    state: dict[str, bool | int] = {}
    for key, kind in STATE_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if kind is bool and not isinstance(value, bool):
            raise ValidationFailed("%(name)s must be true or false.", name=key)
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)
                            or not 0 <= value <= STATE_MAX_NUMBER):
            raise ValidationFailed("%(name)s is out of range.", name=key)
        state[key] = value
    return state


def call_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The call page's adaptation thresholds, video sender caps and Opus options from the config."""
    preference = config["CALL_DEGRADATION_PREFERENCE"]
    return {
        "adapt": {"enabled": bool(config["CALL_ADAPT_ENABLED"]), "min_kbps": config["CALL_ADAPT_MIN_KBPS"],
                  "max_loss_pct": config["CALL_ADAPT_MAX_LOSS_PCT"], "max_rtt_ms": config["CALL_ADAPT_MAX_RTT_MS"],
                  "max_jitter_ms": config["CALL_ADAPT_MAX_JITTER_MS"],
                  "down_seconds": config["CALL_ADAPT_DOWN_SECONDS"], "up_seconds": config["CALL_ADAPT_UP_SECONDS"],
                  "max_up_seconds": config["CALL_ADAPT_MAX_UP_SECONDS"],
                  "quiet_seconds": config["CALL_ADAPT_QUIET_SECONDS"]},
        "video": {"max_kbps": config["CALL_VIDEO_MAX_KBPS"],
                  "scale_down": max(1.0, float(config["CALL_VIDEO_SCALE_DOWN"])),
                  "max_fps": config["CALL_VIDEO_MAX_FPS"],
                  "degradation": preference if preference in DEGRADATION_PREFERENCES else "balanced"},
        "opus": {"fec": bool(config["CALL_OPUS_FEC"]), "dtx": bool(config["CALL_OPUS_DTX"])},
        "ice": {"grace_seconds": config["CALL_ICE_RESTART_GRACE_SECONDS"]},
    }


def _open_call(consult: Consult) -> CallSession | None:
    return db.session.scalar(
        select(CallSession).where(CallSession.consult_id == consult.id, CallSession.ended_at.is_(None))
    )


def start_call(user: User, consult: Consult, *, audit: str | None = None) -> CallSession:
    """Open a call record (or reuse the open one), auditing the join in the same commit."""
    call, created = _open_or_create_call(user, consult, audit=audit)
    if created or audit:
        db.session.commit()
    return call


def _open_or_create_call(user: User, consult: Consult, *, audit: str | None) -> tuple[CallSession, bool]:
    """The open call record (inserted if there is none, in a savepoint) and whether it is new;
    the audit entry queued. Nothing committed."""
    require_call_party(user, consult)
    call = _open_call(consult)
    created = call is None
    if created:
        # The partial unique index keeps one open call per consult: when the other doctor's join
        # inserted it first, the savepoint's insert fails and theirs is the call
        try:
            with db.session.begin_nested():
                call = CallSession(consult_id=consult.id, started_by_id=user.id)
                db.session.add(call)
        except IntegrityError:
            call = _open_call(consult)
            if call is None:
                raise
    if created:  # a new call: raised hands and leaves to speak of an earlier one do not carry over
        for p in consult.participants:
            p.hand_raised_at = p.speech_allowed_at = None
    if audit:
        record(audit, actor=user, consult=consult)
    assert call is not None
    return call, created


@dataclass(frozen=True)
class JoinedCall:
    """What a join tells the others and the joiner, read before its one commit (plain values: the
    commit expires every ORM object, and nothing here costs a database round trip afterwards)."""

    call_id: int
    user_id: int
    name: str
    me: dict[str, Any]  # the joiner as the others' tiles show them (call_people's shape)
    others: list[int]  # the other users in the call, by id
    polite_to: dict[str, bool]  # the joiner's politeness towards each of them (perfect negotiation)
    polite: bool
    people: list[dict[str, Any]]  # the others, as call_people gives them
    hands: list[dict[str, Any]]
    sends: bool
    ice_servers: list[dict[str, Any]]

    def announcement(self) -> dict[str, Any]:
        """peer-joined / peer-resumed for the others: each one's politeness towards the joiner."""
        return {"user_id": self.user_id, "name": self.name, **self.me,
                "polite_to": {uid: not polite for uid, polite in self.polite_to.items()}}


def join_call(user: User, consult: Consult, present: set[int], *, audit: str = "call.joined",
              offer: dict[str, Any] | None = None) -> JoinedCall:
    """A join, in its turn (present: the users already in the call): the caps checked, the call
    record opened (or the open one reused) and the join audited, in one commit.

    Call it with objects read inside the turn (the caller commits before taking the turn, which
    expires what it read before): the membership, the caps and the participants are judged on
    what is true now, not on what was true before waiting. Everything the relay and the join's
    acknowledgement need is read before the commit, so that after it the offer can go at once.
    offer: the join's offer, checked against the leave to speak as it stands after the call record
    is opened (a new call clears it); a refused one rolls the new record back with the join.
    """
    check_caps(user, consult, present)
    call, _created = _open_or_create_call(user, consult, audit=audit)
    if offer is not None:  # a new call clears every leave to speak: the offer is judged after that
        check_media(user, consult, offer)
    db.session.flush()  # the new record's id (a reused one has it)
    others = sorted(present - {user.id})
    me = call_people(consult, [user.id])
    joined = JoinedCall(
        call_id=call.id, user_id=user.id, name=user.full_name, me=me[0] if me else {}, others=others,
        polite_to={str(uid): policy.is_polite(user, consult, uid) for uid in others},
        polite=policy.is_polite(user, consult), people=call_people(consult, others), hands=hands(consult),
        sends=policy.allows(user, consult, Action.SEND_MEDIA), ice_servers=ice_servers(user))
    db.session.commit()
    return joined


def _number(data: dict[str, Any], key: str, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= hi:
        raise ValidationFailed("%(name)s is out of range.", name=key)
    return value


def record_stats(user: User, consult: Consult, data: dict[str, Any]) -> CallSession:
    """Store what a browser measured: setup time, TURN relay, round trip, loss, bitrate."""
    call = start_call(user, consult)
    setup = _number(data, "setup_ms", 600_000)
    relayed = data.get("relayed")
    if relayed is not None and not isinstance(relayed, bool):
        raise ValidationFailed("relayed must be true or false.")
    if data.get("connected") is True and call.connected_at is None:
        call.connected_at = utcnow()
        if setup is not None:
            call.setup_ms = int(setup)
    if relayed is not None:
        call.relayed = bool(call.relayed) or relayed
    rtt = _number(data, "rtt_ms", 60_000)
    loss = _number(data, "packet_loss_pct", 100)
    bitrate = _number(data, "bitrate_kbps", 100_000)
    if rtt is not None:
        call.rtt_ms = int(rtt)
    if loss is not None:
        call.packet_loss_pct = float(loss)
    if bitrate is not None:
        call.bitrate_kbps = int(bitrate)
    if data.get("audio_only") is True:
        call.audio_only = True
    db.session.commit()
    return call


def end_call(user: User, consult: Consult, *, others_stay: bool = False) -> CallSession | None:
    """Close the open call record when a participant hangs up, unless others_stay (two or more
    others are still talking in it: a mesh call goes on)."""
    call = db.session.scalar(
        select(CallSession).where(CallSession.consult_id == consult.id, CallSession.ended_at.is_(None))
    )
    if call is None or others_stay or not policy.is_participant(user, consult):
        return None
    call.ended_at = utcnow()
    db.session.commit()
    return call


def calls_of(consult: Consult) -> list[CallSession]:
    """The consult's calls, newest first."""
    return list(db.session.scalars(
        select(CallSession).where(CallSession.consult_id == consult.id).order_by(CallSession.id.desc())
    ))


class MediaWorkerUnavailable(DomainError):
    status = 503
    code = "media_worker_unavailable"


class PrecallQuotaExceeded(DomainError):
    """Too many connection tests of one user at once; its message is a plural (lazy_ngettext)."""

    status = 429
    code = "too_many_precall_tests"

    @property
    def message(self) -> str:
        """The message in the current request's language, in the plural form for its number."""
        return str(self.template)


def precall_echo(user: User, offer: Any) -> dict[str, str]:
    """Hand a browser's offer to the media worker's echo peer, with this user's ICE servers and quota."""
    if not isinstance(offer, dict) or offer.get("type") != "offer":
        raise ValidationFailed("Send an SDP offer.")
    clean = validate_signal(offer)
    per_user = current_app.config["PRECALL_SESSIONS_PER_USER"]
    body = json.dumps({"type": "offer", "sdp": clean["sdp"], "ice_servers": ice_servers(user),
                       "user": str(user.id), "max_per_user": per_user}).encode()
    # Waiting on another process for up to MEDIA_WORKER_TIMEOUT: end the request's transaction
    # first (on SQLite it holds the write lock) and touch no database object after the call.
    db.session.commit()
    request = urllib.request.Request(
        current_app.config["MEDIA_WORKER_URL"].rstrip("/") + "/echo/offer", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Worker-Token": current_app.config["MEDIA_WORKER_TOKEN"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=current_app.config["MEDIA_WORKER_TIMEOUT"]) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            raise ValidationFailed("The test server could not use that offer.") from None
        if exc.code == 429:
            raise PrecallQuotaExceeded(lazy_ngettext(
                "You already have %(num)s connection test running. "
                "Close the other pre-call check tabs or wait a minute, then try again.",
                "You already have %(num)s connection tests running. "
                "Close the other pre-call check tabs or wait a minute, then try again.", per_user)) from None
        raise MediaWorkerUnavailable(N_("The connection test server is busy or misconfigured; try again.")) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError):
        raise MediaWorkerUnavailable(N_("The connection test server is not reachable right now.")) from None
    if not isinstance(answer, dict) or answer.get("type") != "answer" or not isinstance(answer.get("sdp"), str):
        raise MediaWorkerUnavailable(N_("The connection test server gave an unexpected answer."))
    return {"type": "answer", "sdp": answer["sdp"]}
