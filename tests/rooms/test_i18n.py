"""The consult room speaks the viewer's language: the room page, the notes history, the page of a
room not open yet, and the Socket.IO refusals (issue 11)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import login
from tests.notes.peers import Peer
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.i18n import speaking
from webapp.models import User
from webapp.notes import services as notes
from webapp.timefmt import format_local

NS = "/room"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}

pytestmark = pytest.mark.usefixtures("generous_chat")


def speaks_chinese(user: User) -> User:
    """The user's own language setting is Chinese (it beats the browser's)."""
    db.session.get(User, user.id).locale = "zh_CN"
    db.session.commit()
    return user


def test_the_room_page_is_in_chinese_for_a_chinese_reader(app, make):
    rural, specialist = make.rural(), make.specialist()
    consult = make.accepted(rural, specialist)
    client = app.test_client()
    login(client, rural)
    page = client.get(f"/consults/{consult.ref}/room", headers=ZH)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for chinese in ("视频通话", "加入通话", "共享病例笔记", "聊天", "发送", "输入消息…", "修订历史", "现病史"):
        assert chinese in html, chinese
    for english in (">Join call<", ">Send<", "Shared case notes", "Write a message…", "Revision history"):
        assert english not in html, english
    assert 'id="chat-send"' in html and 'id="call-join"' in html  # the scripts' hooks are unchanged

    english = client.get(f"/consults/{consult.ref}/room").get_data(as_text=True)  # no Accept-Language
    assert ">Join call<" in english and "Shared case notes" in english


def test_the_notes_history_page_is_in_chinese_for_a_chinese_reader(app, make):
    rural, specialist = make.rural(), make.specialist()
    consult = make.accepted(rural, specialist)
    peer = Peer("a")
    notes.apply_update(rural, consult, peer.append("history", "Chest pain"))
    notes.apply_update(rural, consult, peer.append("plan", " and more"))
    client = app.test_client()
    login(client, speaks_chinese(specialist))
    html = client.get(f"/consults/{consult.ref}/notes/history", headers={"Accept-Language": "en"}).get_data(
        as_text=True)
    for chinese in ("病例笔记——修订历史", "修订记录", "返回会诊室", "当前笔记", "2 次编辑", "查看此次修订后的笔记",
                    "现病史", "诊疗计划"):
        assert chinese in html, chinese
    for english in ("Revisions", "Current notes", "2 edits", "Back to the room"):
        assert english not in html, english


def test_the_room_not_open_page_says_when_in_chinese(app, make, monkeypatch):
    monkeypatch.setitem(app.config, "ROOM_OPENS_MINUTES_BEFORE", 5)
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    opening = consult.appointment.starts_at - timedelta(minutes=5)
    client = app.test_client()
    login(client, speaks_chinese(rural))
    r = client.get(f"/consults/{consult.ref}/room")
    assert r.status_code == 403
    html = r.get_data(as_text=True)
    assert "会诊室尚未开放" in html and "The room is not open yet" not in html
    with speaking("zh_CN"):
        when = format_local(opening, rural.timezone)  # in Chinese: 2026年12月2日 星期三 09:00 (北京时间)
    assert "年" in when and f"会诊室将于 {when} 开放。" in html
    assert "提前 5 分钟开放" in html


def test_a_refused_send_is_acknowledged_in_the_senders_language(app, make, sio):
    rural, specialist = speaks_chinese(make.rural()), make.specialist()
    consult = make.scheduled(rural, specialist)
    rural_sock, specialist_sock = sio(rural), sio(specialist)

    ack = rural_sock.emit("send", {"ref": consult.ref, "client_id": "too-early-1", "body": "hi"}, namespace=NS,
                          callback=True)
    assert ack["ok"] is False and ack["error"] == "invalid_input"
    assert ack["message"] == "请先进入会诊室，再发送消息。", ack

    assert rural_sock.emit("join", {"ref": consult.ref}, namespace=NS, callback=True)["ok"]
    assert specialist_sock.emit("join", {"ref": consult.ref}, namespace=NS, callback=True)["ok"]
    too_long = "x" * (app.config["CHAT_MAX_CHARS"] + 1)
    ack = rural_sock.emit("send", {"ref": consult.ref, "client_id": "too-long-1", "body": too_long}, namespace=NS,
                          callback=True)
    assert ack["ok"] is False and ack["message"].startswith("每条消息最多 "), ack

    consults.cancel(rural, consult.ref, "transferred")
    for sock, expected in ((rural_sock, "本次会诊已关闭，聊天为只读。"),
                           (specialist_sock, "This consult is closed; its chat is read-only.")):
        ack = sock.emit("send", {"ref": consult.ref, "client_id": "after-closing", "body": "x"}, namespace=NS,
                        callback=True)
        assert ack["ok"] is False and ack["error"] == "forbidden"
        assert ack["message"] == expected, ack  # each in their own language
