import re

from tests.conftest import login


def test_login_and_dashboard(client, make):
    doctor = make.rural()
    r = login(client, doctor)
    assert r.status_code == 302
    r = client.get("/")
    assert r.status_code == 200
    assert b"My consult requests" in r.data


def test_the_site_icon_is_served_without_signing_in(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 301 and r.headers["Location"].endswith("/static/favicon.svg")
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and icon.data.startswith(b"<svg")
    page = client.get("/login").get_data(as_text=True)
    assert re.search(r'<link rel="icon" href="/static/favicon\.svg\?v=[0-9a-f]{16}"', page)  # content-hashed
