"""The JSON form of a chat message sent to clients."""

from __future__ import annotations

from typing import Any

from flask import url_for
from sqlalchemy import select

from ..extensions import db
from ..models import Consult, Message


def to_wire(message: Message) -> dict[str, Any]:
    """The JSON form of a message sent to clients (text is rendered as text by the client).

    sender_role: the sender's participant role when the message was written (a trainee's question
    is marked as such); None for messages older than the column.
    """
    role = message.sender_role
    data: dict[str, Any] = {
        "id": message.id, "seq": message.seq, "client_id": message.client_id,
        "sender_id": message.sender_id, "sender_name": message.sender.full_name,
        "sender_role": role.value if role is not None else None,
        "body": message.body, "created_at": message.created_at.isoformat(),
    }
    if message.attachment is not None:
        a = message.attachment
        consult_ref = db.session.scalar(select(Consult.ref).where(Consult.id == message.consult_id))
        data["attachment"] = {
            "id": a.id, "name": a.original_name, "content_type": a.content_type, "size": a.size_bytes,
            "url": url_for("consults.attachment", ref=consult_ref, attachment_id=a.id),
        }
    return data
