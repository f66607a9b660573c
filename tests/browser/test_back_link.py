"""The pre-call page's Back link never leaves the site (issue 8, item 9), in headless Chromium.

``/precall?back=/\\evil.example`` once rendered a link the browser resolved to
``http://evil.example/``. Any request to a host other than the test server is aborted (and
recorded) so the test never sends traffic off the machine.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("back", ["/\\evil.example", "//evil.example", "/%5Cevil.example", "/\t/evil.example"])
def test_back_link_stays_on_the_site(browser, live_server, make, back):
    user = make.rural()
    context = browser.new_context()
    off_site: list[str] = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(live_server.url).netloc:
            route.continue_()
        else:
            off_site.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/login")
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        page.goto(f"{live_server.url}/precall?back={back.replace('%', '%25')}")
        link = page.get_by_role("link", name="Back", exact=True)
        resolved = link.evaluate("a => a.href")
        assert urlsplit(resolved).netloc == urlsplit(live_server.url).netloc, resolved
        link.click()
        page.wait_for_load_state()
        assert urlsplit(page.url).netloc == urlsplit(live_server.url).netloc, page.url
        assert urlsplit(page.url).path == "/"
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        assert off_site == []
    finally:
        context.close()
