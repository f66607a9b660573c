"""Second specialists' signed opinions: addenda under the lead's recommendation.

An invited specialist (policy: ADD_OPINION) writes an opinion and signs it in one step; it is
signed like the recommendation (consults.signing: time, sha256, audit event) and never changes
afterwards: a further opinion is a new addendum. The lead alone signs the recommendation.
"""

from __future__ import annotations

from ..errors import Forbidden, ValidationFailed
from ..extensions import db
from ..models import ConsultOpinion, User
from ..notifications.services import notify
from . import policy, signing
from .policy import Action
from .services import check_visible

MAX_LENGTH = 10_000  # characters of one opinion


def add_opinion(author: User, ref: str, text: str) -> ConsultOpinion:
    """An invited specialist writes and signs an opinion on the consult (immutable once signed; the
    same text again from the same author returns the one already signed)."""
    consult = check_visible(author, ref, "add_opinion", lock=True)
    if not policy.allows(author, consult, Action.ADD_OPINION):
        raise Forbidden("Only an invited specialist adds a signed opinion, while the consult is open "
                        "or answered; the lead specialist signs the recommendation.")
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Write your opinion before signing it.", fields={"text": "required"})
    if len(text) > MAX_LENGTH:
        raise ValidationFailed("An opinion is at most %(max)s characters.", fields={"text": "too_long"},
                               max=MAX_LENGTH)
    # The same text sent again (a double click, a resent form) is the opinion already signed: an
    # addendum can never be taken back, so a duplicate would stay on the record for good
    for earlier in consult.opinions:
        if earlier.author_id == author.id and earlier.text == text:
            return earlier
    opinion = ConsultOpinion(consult=consult, consult_id=consult.id, author=author, author_id=author.id, text=text)
    signing.sign(opinion, actor=author, consult=consult, event="opinion.signed",
                 detail={"role": policy.role_of(author, consult).value})
    db.session.add(opinion)
    notify(policy.participant_users(consult), "opinion.signed", {"by": author.full_name}, consult=consult,
           exclude=author)
    db.session.commit()
    return opinion


def opinions_of(consult) -> list[ConsultOpinion]:
    """The consult's signed opinions, oldest first."""
    return list(consult.opinions)


def verify(opinion: ConsultOpinion) -> bool:
    """Whether the opinion still matches the hash taken when it was signed."""
    return signing.verify(opinion)
