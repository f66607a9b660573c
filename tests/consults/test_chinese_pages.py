"""The consult pages speak Chinese to a zh-CN browser: labels, the status badge, the day headings
of the accept page, and the refusal of an action (issue 11)."""

from __future__ import annotations

import io
import re

import pytest
from flask_babel import force_locale
from flask_babel import gettext as _

from tests.conftest import login
from tests.test_http_consults import flashes, token_of
from tests.test_http_consults import text as page_text
from webapp.consults.routes import day_label

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def slot_values(response) -> list[str]:
    return [re.search(r'value="([^"]*)"', tag).group(1)
            for tag in re.findall(r"<input[^>]*>", response.get_data(as_text=True))
            if 'name="slot"' in tag and 'type="radio"' in tag]


@pytest.fixture()
def pair(make):
    requester = make.rural(timezone="Asia/Shanghai")
    specialist = make.specialist(timezone="Asia/Shanghai")
    make.availability(specialist)
    return requester, specialist


def client_of(app, user):
    client = app.test_client()
    assert login(client, user).status_code == 302
    return client


def test_the_new_request_page_is_in_chinese(app, pair):
    doctor = client_of(app, pair[0])
    r = doctor.get("/consults/new", headers=ZH)
    assert r.status_code == 200
    text = page_text(r)
    for label in ("新建会诊申请", "主诉", "现病史", "体格检查及辅助检查", "所需专科", "紧急程度", "血氧饱和度 %",
                  "保存草稿", "发送申请", "心血管内科"):
        assert label in text, label
    assert "Chief complaint" not in text and "Save draft" not in text


def test_a_refused_request_says_so_in_chinese(app, pair):
    doctor = client_of(app, pair[0])
    token = token_of(doctor.get("/consults/new", headers=ZH))
    r = doctor.post("/consults/new", headers=ZH, data={
        "csrf_token": token, "specialty": "cardiology", "urgency": "routine", "spo2": "120",
        "send": "1"})
    assert r.status_code == 422
    assert "应在 50 至 100 % 之间。" in page_text(r)  # the field's own message, in Chinese


def test_the_consult_page_shows_chinese_labels_and_status(app, make, pair):
    requester, _specialist = pair
    consult = make.requested(requester, heart_rate=88, respiratory_rate=18, spo2=96)
    r = client_of(app, requester).get(f"/consults/{consult.ref}", headers=ZH)
    assert r.status_code == 200
    text = page_text(r)
    with app.test_request_context(), force_locale("zh_CN"):
        awaiting = _("Awaiting specialist")
    assert awaiting == "待专家接诊"
    assert re.search(r'<span class="badge requested">([^<]+)</span>', text).group(1) == awaiting
    for label in ("病例", "附件", "主诉", "现病史", "生命体征", "取消该会诊", "匹配的专科医生"):
        assert label in text, label
    assert "次/分" in text  # the vitals' units as Chinese clinicians write them


def test_the_accept_page_and_its_refusals_are_in_chinese(app, make, pair):
    requester, specialist = pair
    consult = make.requested(requester)
    cardio = client_of(app, specialist)
    page = cardio.get(f"/consults/{consult.ref}/accept", headers=ZH)
    assert page.status_code == 200
    text = page_text(page)
    for label in ("接诊", "拒绝", "书面答复——无需视频通话", "病例", "体格检查及辅助检查"):
        assert label in text, label
    headings = re.findall(r"<summary><strong>([^<]+)</strong>", text)
    assert headings and all(re.fullmatch(r"\d{1,2}月\d{1,2}日 星期[一二三四五六日]", h) for h in headings)

    # An unreadable time is refused in Chinese, on the page.
    r = cardio.post(f"/consults/{consult.ref}/accept", headers=ZH,
                    data={"csrf_token": token_of(page), "slot": "not a time"})
    assert r.status_code == 422
    assert "无法识别该时间，请从列出的时段中选择。" in flashes(r)

    # A slot that became too soon while the page was open: the scheduling refusal in Chinese.
    earliest = slot_values(page)[1]
    lead = app.config["BOOKING_MIN_LEAD_MINUTES"]
    app.config["BOOKING_MIN_LEAD_MINUTES"] = lead + app.config["SLOT_MINUTES"] + 1
    try:
        r = cardio.post(f"/consults/{consult.ref}/accept", headers=ZH,
                        data={"csrf_token": token_of(page), "slot": earliest})
    finally:
        app.config["BOOKING_MIN_LEAD_MINUTES"] = lead
    assert r.status_code == 422
    with app.test_request_context(), force_locale("zh_CN"):
        too_soon = _("That time has passed or is too soon; choose a later slot.")
    assert too_soon in flashes(r)


def test_a_refused_upload_says_why_in_chinese(app, make, pair):
    requester, _specialist = pair
    draft = make.draft(requester)
    doctor = client_of(app, requester)
    token = token_of(doctor.get(f"/consults/{draft.ref}", headers=ZH))
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers=ZH, content_type="multipart/form-data",
                    data={"csrf_token": token, "file": (io.BytesIO(b"%PDF-1.4 broken"), "report.png")})
    assert r.status_code == 415
    assert "report.png：文件扩展名为“.png”，但内容是 PDF。请重命名或重新导出。" in page_text(r)
    r = doctor.post(f"/consults/{draft.ref}/attachments", headers={**ZH, "Accept": "application/json"},
                    content_type="multipart/form-data",
                    data={"csrf_token": token, "file": (io.BytesIO(b"just text"), "notes.txt")})
    assert r.status_code == 415
    assert r.get_json()["message"] == "只能添加 JPEG 或 PNG 图片以及 PDF 文档。"


def test_day_headings_follow_the_locale(app):
    from datetime import date

    with app.test_request_context(), force_locale("zh_CN"):
        assert day_label(date(2026, 12, 16)) == "12月16日 星期三"
    with app.test_request_context(), force_locale("en"):
        assert day_label(date(2026, 12, 16)) == "Wednesday 16 December 2026"
