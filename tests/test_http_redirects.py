"""``next`` and ``back`` parameters only ever lead to a page of this site (issue 8, item 9).

A Back link or a post-login redirect to ``/\\evil.example``, ``//evil.example``, ``https:…``,
``/%5Cevil.example`` or a path hiding a tab or newline would be resolved by the browser to another
host; each falls back to the dashboard, while ordinary paths on the site are kept.
"""

from __future__ import annotations

import html
import re

import pytest

from tests.conftest import PASSWORD, csrf_token, login
from webapp.validation import safe_local_path

OFF_SITE = [
    "/\\evil.example", "\\/evil.example", "//evil.example", "///evil.example", "https://evil.example/",
    "http:evil.example", "javascript:alert(1)", "/%5Cevil.example", "/%2F/evil.example", "%2F%2Fevil.example",
    "/\t/evil.example", "/\n/evil.example", " //evil.example", "\x0b//evil.example", "evil.example",
    "/ok/..//evil.example", "data:text/html,hi", "/\u3000/evil.example", "",
]
ON_SITE = ["/", "/consults/ABCDEF/room", "/precall?x=1&y=http://z", "/consults/ABC#notes"]
BACK_LINK = re.compile(r'<a class="btn secondary" href="([^"]*)">Back</a>')


@pytest.mark.parametrize("target", OFF_SITE)
def test_off_site_targets_are_refused(target):
    assert safe_local_path(target) is None


@pytest.mark.parametrize("target", ON_SITE)
def test_paths_on_the_site_are_kept(target):
    assert safe_local_path(target) == target


def back_link(client, back: str) -> str:
    r = client.get("/precall", query_string={"back": back})
    assert r.status_code == 200
    found = BACK_LINK.search(r.get_data(as_text=True))
    assert found, "the pre-call page shows a Back link"
    return html.unescape(found.group(1))


@pytest.mark.parametrize("back", [t for t in OFF_SITE if t])
def test_precall_back_link_to_another_site_goes_to_the_dashboard(app, client, make, back):
    login(client, make.rural())
    assert back_link(client, back) == "/"


def test_precall_back_link_to_the_room_is_kept(app, client, make):
    login(client, make.rural())
    assert back_link(client, "/consults/ABCDEF/room") == "/consults/ABCDEF/room"
    assert "Back</a>" not in client.get("/precall").get_data(as_text=True)  # no back, no link


@pytest.mark.parametrize("target", [t for t in OFF_SITE if t])
def test_login_next_to_another_site_goes_to_the_dashboard(app, client, make, target):
    user = make.rural()
    token = csrf_token(client, "/login")
    r = client.post("/login", query_string={"next": target},
                    data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302
    assert r.headers["Location"] == "/", r.headers["Location"]


def test_login_next_on_the_site_is_followed(app, client, make):
    user = make.rural()
    token = csrf_token(client, "/login")
    r = client.post("/login", query_string={"next": "/precall?back=/"},
                    data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/precall?back=/"
