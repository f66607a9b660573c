"""Sign-in, registration and password mail in Chinese (issue 11): a browser that asks for zh-CN
sees Chinese labels, validation messages and flashes; registration keeps the language the
clinician registered in; mail goes out in the recipient's language, not the requester's."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from tests.conftest import CSRF_RE, PASSWORD, login, mail_text, post_form, set_last_activity
from webapp.extensions import db
from webapp.models import AccountStatus, User

ZH = "zh-CN"


def chinese_client(app):
    """A browser whose Accept-Language asks for Chinese on every request."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH
    return client


def body(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response) -> list[str]:
    return [html.unescape(m) for m in re.findall(
        r'<div class="flash [a-z]+" role="status">(.*?)</div>', response.get_data(as_text=True))]


def test_a_chinese_browser_registers_and_signs_in_in_chinese(app, make):
    facility = make.facility("会宁县中川镇卫生院")
    client = chinese_client(app)

    page = client.get("/register")
    text = body(page)
    assert page.status_code == 200
    for label in ("医生注册", "姓名", "工作邮箱", "再次输入密码", "医师执业证书编号", "会诊语言",
                  "选择您所在的医疗机构…"):
        assert label in text, label
    assert "Work email" not in text and "Register as a clinician" not in text

    form = {"full_name": "马琳", "email": "ma.lin@example.cn", "password": PASSWORD, "confirm": PASSWORD + "x",
            "role": "rural_doctor", "facility_id": str(facility.id), "specialty": "",
            "languages": ["zh-CN"], "licence_number": "620100000123", "timezone": "Asia/Shanghai"}
    token = CSRF_RE.search(page.get_data(as_text=True)).group(1)
    r = client.post("/register", data={**form, "csrf_token": token})
    assert r.status_code == 422
    assert "两次输入的密码不一致。" in body(r)  # the form's own message, translated

    r = client.post("/register", data={**form, "confirm": PASSWORD, "csrf_token": token})
    assert r.status_code == 201 and "注册申请已收到" in body(r)
    db.session.rollback()
    user = db.session.scalar(select(User).where(User.email == "ma.lin@example.cn"))
    assert user.locale == "zh_CN"  # mail and notifications will speak Chinese to this clinician

    r = post_form(client, "/login", {"email": "ma.lin@example.cn", "password": PASSWORD}, token_from="/login")
    assert r.status_code == 403 and flashes(r) == ["您的注册正在等待协调员审核。"]

    user.status = AccountStatus.APPROVED
    db.session.commit()
    login_page = client.get("/login")
    assert "登录" in body(login_page) and "电子邮件" in body(login_page) and "在此设备上保持登录" in body(login_page)
    r = post_form(client, "/login", {"email": "ma.lin@example.cn", "password": "wrong-password-123"},
                  token_from="/login")
    assert r.status_code == 401 and flashes(r) == ["邮箱或密码不正确。"]
    r = post_form(client, "/login", {"email": "ma.lin@example.cn", "password": PASSWORD}, token_from="/login")
    assert r.status_code == 302

    r = post_form(client, "/logout", follow_redirects=True)
    assert "您已退出登录。" in flashes(r)


def test_an_english_browser_still_reads_english(app, make):
    make.facility()
    text = body(app.test_client().get("/register"))
    assert "Register as a clinician" in text and "Work email" in text and "医生注册" not in text


def test_a_password_reset_mail_to_a_chinese_user_is_in_chinese(app, make, smtp_server):
    user = make.rural(email="zh.user@test.example", name="王医生")
    user.locale = "zh_CN"
    db.session.commit()

    # Asked from an English browser: the mail follows the account's language, not the requester's.
    r = post_form(app.test_client(), "/password/forgot", {"email": user.email}, token_from="/password/forgot")
    assert r.status_code == 302
    [mail] = smtp_server.wait_for(user.email)
    text = mail_text(mail)
    assert mail["Subject"] != "Reset your Huizhen password"
    assert "王医生，您好：" in text
    assert "有人（可能是您本人）申请重置您会诊平台账号的密码" in text and "仅可使用一次" in text
    assert "/password/reset/" in text
    assert "Someone (perhaps you)" not in text


def test_a_password_reset_mail_to_an_english_user_is_in_english_from_a_chinese_browser(app, make, smtp_server):
    user = make.rural(email="en.user@test.example", name="Dr Lee")
    user.locale = "en"
    db.session.commit()

    r = post_form(chinese_client(app), "/password/forgot", {"email": user.email}, token_from="/password/forgot")
    assert r.status_code == 302
    [mail] = smtp_server.wait_for(user.email)
    assert mail["Subject"] == "Reset your Huizhen password"
    assert "Hello Dr Lee," in mail_text(mail) and "您好" not in mail_text(mail)


def test_the_idle_sign_out_is_said_in_the_users_language(app, make):
    user = make.rural()
    user.locale = "zh_CN"
    db.session.commit()
    client = app.test_client()  # the browser asks for no language: the account's setting decides
    login(client, user)
    set_last_activity(client, app.config["IDLE_TIMEOUT_MINUTES"] * 60 + 60)
    r = client.get("/consults/new")
    assert r.status_code == 302
    page = client.get(r.headers["Location"])
    assert "由于长时间未操作，您已退出登录。请重新登录。" in flashes(page)


def test_coordinator_pages_and_refusals_in_chinese(app, make):
    coordinator, doctor = make.coordinator(), make.rural(status=AccountStatus.SUSPENDED, name="Dr Zhao")
    coordinator.locale = doctor.locale = "zh_CN"
    db.session.commit()
    coord = app.test_client()
    login(coord, coordinator)
    text = body(coord.get("/admin/registrations"))
    assert "全部账号" in text and "已停用" in text and "恢复" in text and "Suspended" not in text

    r = post_form(coord, f"/admin/users/{doctor.id}/suspend", {"reason": "再次停用"})
    assert r.status_code == 409
    assert "只有已批准的账号才能停用；该账号当前状态为：已停用。" in body(r)

    audit = body(coord.get("/admin/audit"))
    assert "审计日志" in audit and "登录" in audit  # the action label of auth.login, by its code

    other = make.rural()
    other.locale = "zh_CN"
    db.session.commit()
    client = app.test_client()
    login(client, other)
    r = client.get("/admin/registrations")
    assert r.status_code == 403 and "此页面仅供协调员使用。" in body(r)
