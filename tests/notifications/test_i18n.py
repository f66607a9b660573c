"""Notifications speak their recipient's language: mail and webhook in the recipient's setting,
the list in the viewer's, the calendar feed in its owner's."""

from __future__ import annotations

from icalendar import Calendar

from tests.conftest import login
from tests.notifications.conftest import notifications_of
from webapp.consults import services as consults
from webapp.extensions import db
from webapp.i18n import speaking
from webapp.notifications import delivery, texts
from webapp.scheduling import calendar as feeds


def test_mail_to_a_chinese_recipient_is_chinese_and_to_an_english_one_english(app, make, smtp_server, monkeypatch):
    monkeypatch.setitem(app.config, "PUBLIC_URL", "https://huizhen.example.org")
    rural = make.rural(email="ma@clinic.example")
    spec = make.specialist(email="zhou@hospital.example", name="周医生")
    spec.locale, rural.locale = "zh_CN", "en"
    db.session.commit()
    consult = make.scheduled(rural, spec)
    consults.cancel(rural, consult.ref, "Patient transferred to the county hospital")
    assert delivery.run_once() == {"sent": 4}

    [offered, cancelled] = smtp_server.wait_for("zhou@hospital.example", 2)
    assert cancelled["Subject"] == f"会诊平台：{rural.full_name} 取消了一次会诊"
    assert offered["Subject"] == "会诊平台：有一条心血管内科的新加急会诊申请待您接诊"
    plain = cancelled.get_body(preferencelist=("plain",)).get_content()
    assert f"{rural.full_name} 取消了一次会诊。" in plain
    assert f"打开会诊平台：https://huizhen.example.org/consults/{consult.ref}" in plain
    assert "健康信息只在会诊平台中显示，绝不通过邮件发送。" in plain
    html = cancelled.get_body(preferencelist=("html",)).get_content()
    assert "打开会诊平台" in html and "通知设置" in html
    assert "Open Huizhen" not in plain and "Patient transferred" not in cancelled.as_string()

    [accepted, booked] = smtp_server.wait_for("ma@clinic.example", 2)
    assert accepted["Subject"] == "Huizhen: 周医生 accepted your consult request"
    assert booked["Subject"].startswith("Huizhen: Consultation booked by 周医生 for ")
    assert booked["Subject"].endswith(" CST (Asia/Shanghai)")
    assert "Open Huizhen: https://huizhen.example.org/" in booked.get_body(preferencelist=("plain",)).get_content()


def test_the_booking_mail_gives_the_time_in_chinese_with_its_zone(app, make, smtp_server):
    rural, spec = make.rural(email="ma@clinic.example"), make.specialist()
    rural.locale = "zh_CN"
    db.session.commit()
    make.scheduled(rural, spec)
    delivery.run_once()
    [accepted, booked] = smtp_server.wait_for("ma@clinic.example", 2)
    assert accepted["Subject"].endswith("已接受您的会诊申请")
    assert "已预约会诊，时间为 " in booked["Subject"] and booked["Subject"].endswith(" (北京时间)")
    assert "年" in booked["Subject"] and "星期" in booked["Subject"]


def test_the_list_speaks_the_viewer_language_and_the_store_keeps_no_text(app, make):
    rural, spec = make.rural(), make.specialist()
    spec.locale = "zh_CN"
    db.session.commit()
    make.requested(rural)
    [note] = notifications_of(spec, "consult.offered")
    assert note.params == {"urgency": "urgent", "specialty": "cardiology"}  # a kind and parameters, no text
    client = app.test_client()
    login(client, spec)
    page = client.get("/notifications").get_data(as_text=True)
    assert "有一条心血管内科的新加急会诊申请待您接诊" in page and "全部标为已读" in page
    prefs = client.get("/notifications/preferences").get_data(as_text=True)
    assert "邮件：有会诊申请待您接诊" in prefs and "免打扰开始" in prefs
    with speaking("en"):
        assert texts.title(note.kind, note.params) == "New urgent request in Cardiology offered to you"


def test_the_calendar_feed_speaks_its_owner_language(app, make):
    rural, spec = make.rural(), make.specialist()
    make.scheduled(rural, spec)
    rural.locale = "zh_CN"
    db.session.commit()
    with app.test_request_context("/"):
        chinese = Calendar.from_ical(feeds.feed_ics(rural))
        english = Calendar.from_ical(feeds.feed_ics(spec))
    [event] = chinese.walk("VEVENT")
    assert str(event["SUMMARY"]) == "远程会诊" and str(event["DESCRIPTION"]).startswith("在会诊平台中打开此会诊：")
    assert str(chinese["X-WR-CALNAME"]) == "远程会诊日程"
    [event] = english.walk("VEVENT")
    assert str(event["SUMMARY"]) == "Huizhen consultation"
