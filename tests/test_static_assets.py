"""Page weight over HTTP: compressed pages and static files, content-hashed static URLs cached for a
year, streamed responses and Socket.IO left as they are."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import brotli
import requests

from tests.conftest import login
from webapp.extensions import db

STATIC = Path(__file__).resolve().parent.parent / "static"
BROWSER = {"Accept-Encoding": "gzip, deflate, br, zstd"}
ASSET_RE = re.compile(r'(?:src|href)="(/static/[^"]+)"')


def _room(app, make):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    client = app.test_client()
    assert login(client, rural).status_code == 302
    db.session.rollback()
    return client, f"/consults/{consult.ref}/room"


def test_room_page_is_compressed_and_every_static_url_is_hashed_and_immutable(app, make):
    client, room = _room(app, make)
    page = client.get(room, headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["Content-Encoding"] == "br"
    assert page.headers["Cache-Control"] == "no-store"
    assert "Accept-Encoding" in page.headers["Vary"]
    html = brotli.decompress(page.get_data()).decode()
    urls = ASSET_RE.findall(html)
    assert {u.split("?")[0] for u in urls} >= {"/static/css/app.css", "/static/js/room.js", "/static/js/notes.js",
                                              "/static/vendor/socket.io-client/socket.io.min.js"}
    for url in urls:
        assert re.search(r"\?v=[0-9a-f]{16}$", url), url
        raw = (STATIC / url.split("?")[0].removeprefix("/static/")).read_bytes()
        r = client.get(url, headers=BROWSER)
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        # Cacheable by anyone and never revalidated because the session cookie changed.
        assert "Set-Cookie" not in r.headers and "cookie" not in r.headers.get("Vary", "").lower()
        if len(raw) >= 512:
            assert r.headers["Content-Encoding"] == "br", url
            assert brotli.decompress(r.get_data()) == raw
            assert len(r.get_data()) < len(raw) * 0.6
        else:
            assert r.get_data() == raw
        only_gzip = client.get(url, headers={"Accept-Encoding": "gzip"})
        if len(raw) >= 512:
            assert only_gzip.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(only_gzip.get_data()) == raw
        plain = client.get(url, headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers and plain.get_data() == raw
        # A revalidation (a reload) is answered 304 without a body.
        again = client.get(url, headers={**BROWSER, "If-None-Match": r.headers["ETag"]})
        assert again.status_code == 304 and again.get_data() == b""


def test_unhashed_and_outdated_static_urls_still_work_with_a_short_cache(app):
    client = app.test_client()
    raw = (STATIC / "js/room.js").read_bytes()
    for url in ("/static/js/room.js", "/static/js/room.js?v=0123456789abcdef"):
        r = client.get(url)
        assert r.status_code == 200 and r.get_data() == raw
        assert r.headers["Cache-Control"] == f"public, max-age={app.config['STATIC_SHORT_MAX_AGE']}"
    assert client.get("/static/js/no-such-file.js").status_code == 404
    assert client.get("/static/../config.py").status_code == 404


def test_hash_follows_the_file_content(app, tmp_path, monkeypatch):
    from webapp.assets import StaticAssets

    (tmp_path / "a.js").write_text("var a = 1;\n" * 100)
    assets = StaticAssets(str(tmp_path))
    first = assets.get("a.js")
    assert assets.get("a.js") is first  # computed once
    (tmp_path / "a.js").write_text("var a = 2;\n" * 101)
    second = assets.get("a.js")
    assert second.digest != first.digest and brotli.decompress(second.bodies["br"]) == b"var a = 2;\n" * 101


def test_streamed_csv_export_is_not_compressed(app, make):
    coordinator = make.coordinator()
    client = app.test_client()
    assert login(client, coordinator).status_code == 302
    r = client.get("/admin/audit.csv", headers=BROWSER)
    assert r.status_code == 200 and r.is_streamed
    assert "Content-Encoding" not in r.headers
    assert r.get_data(as_text=True).lstrip("\ufeff").startswith("Time (UTC)")


def test_socketio_polling_is_compressed_at_most_once(app, live_server):
    r = requests.get(f"{live_server.url}/socket.io/?EIO=4&transport=polling", headers=BROWSER, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Encoding", "identity").count(",") == 0
    assert r.text.startswith("0{")  # the Engine.IO handshake, decoded by requests


def test_every_template_links_static_files_through_static_url():
    templates = Path(__file__).resolve().parent.parent / "webapp" / "templates"
    offenders = [str(p.relative_to(templates)) for p in templates.rglob("*.html")
                 if re.search(r"""url_for\(\s*['"]static['"]""", p.read_text()) or 'src="/static/' in p.read_text()
                 or 'href="/static/' in p.read_text()]
    assert offenders == []
