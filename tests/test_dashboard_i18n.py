"""The home pages, the availability and calendar pages speak a Chinese user's language."""

from __future__ import annotations

import re

from tests.conftest import login, post_form
from webapp.extensions import db
from webapp.scheduling import services as scheduling


def chinese(user) -> None:
    user.locale = "zh_CN"
    db.session.commit()


def page_of(app, user, path: str = "/") -> str:
    client = app.test_client()
    login(client, user)
    return client.get(path).get_data(as_text=True)


def test_a_chinese_rural_doctor_dashboard_is_chinese(app, make):
    rural, spec = make.rural(), make.specialist()
    chinese(rural)
    make.draft(rural, chief_complaint="活动后胸闷3周")
    make.scheduled(rural, spec)
    page = page_of(app, rural)
    assert '<html lang="zh-CN"' in page
    assert "我的会诊申请" in page and "新建会诊申请" in page and "即将进行的会诊" in page
    assert "待您处理：完成并提交会诊申请" in page
    assert re.search(r'<span class="badge action">\d+ 项待您处理</span>，已在下方标出并排在最前。', page)
    assert "(北京时间)" in page and "星期" in page  # times in Chinese, the zone named
    assert "60 岁，男" in page
    for english in ("My consult requests", "Your action", "Upcoming consultations", "Nothing booked", " CST "):
        assert english not in page, english


def test_a_chinese_specialist_and_coordinator_see_chinese(app, make):
    rural, spec, coord = make.rural(), make.specialist(), make.coordinator()
    chinese(spec)
    chinese(coord)
    make.requested(rural)
    page = page_of(app, spec)
    assert "待您接诊的会诊申请" in page and "待您处理：接诊或拒绝" in page and "心血管内科" in page
    assert "您还没有发布出诊时间" in page and "Requests offered to you" not in page
    home = page_of(app, coord)
    assert "项目概览" in home and "尚无专科医生的会诊申请" in home and "待您处理：尚无专科医生接诊：分派或等待" in home
    assert "剩余 " in home and " 小时" in home  # the response time left, in Chinese
    assert "Programme overview" not in home


def test_an_english_user_keeps_english_next_to_a_chinese_one(app, make):
    rural, other = make.rural(), make.rural()
    chinese(other)
    make.draft(rural)
    page = page_of(app, rural)
    assert "My consult requests" in page and "Your action: Finish and send the request" in page
    assert "我的会诊申请" not in page


def test_the_availability_page_and_its_errors_are_chinese(app, make):
    spec = make.specialist()
    chinese(spec)
    scheduling.set_availability(spec, [scheduling.Window(d, 9 * 60, 12 * 60) for d in range(7)])
    client = app.test_client()
    login(client, spec)
    page = client.get("/availability").get_data(as_text=True)
    assert "每周出诊时间" in page and "星期四" in page and "休假与加诊" in page and "保存出诊时间" in page
    assert "个空闲时段" in page
    r = post_form(client, "/availability", {"windows-0-weekday": "3", "windows-0-start": "540",
                                            "windows-0-end": "720", "windows-1-weekday": "3",
                                            "windows-1-start": "600", "windows-1-end": "660", "save": "1"},
                  token_from="/availability")
    assert r.status_code == 422
    assert "星期四有两个时段重叠。" in r.get_data(as_text=True)
    calendar = client.get("/calendar").get_data(as_text=True)
    assert "日历订阅" in calendar and "创建我的订阅" in calendar
