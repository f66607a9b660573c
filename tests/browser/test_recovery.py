"""The room page recovers by itself from outages, in headless Chromium.

Redis: two node processes share a Redis of the test's own, stopped while the writer (on one node)
writes chat and notes; the reader's page (on the other node) shows all of it within the resync
bound, while Redis is still down, and live delivery after it returns.

Session: a page whose session ended (signed out in another tab) is sent to sign in, not retried.

Join: a join that fails (a table locked past the database's lock_timeout) is retried with backoff.

Database: the page's node reaches PostgreSQL through a relay the test cuts for ~10 s. The page's socket
reconnects during the outage: the server refuses the namespace connect as 'unavailable' (the user
cannot be loaded), the page says so and retries with backoff; a message typed meanwhile waits in
the outbox. Once the database is back the page rejoins, sends it and shows it as stored.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import create_engine, select, text

from config import TestingConfig
from tests.browser.test_room_chat import delivered, say, sign_in_and_open_room
from tests.conftest import POSTGRES_URL, Factory, NodeProcess, TcpRelay, build_app, postgres_available, require
from webapp.extensions import db, socketio
from webapp.models import Message
from webapp.realtime import SERVER_KEY

pytestmark = pytest.mark.browser


@pytest.fixture
def database_behind_relay(app, tmp_path):
    """A PostgreSQL database of this test's own, reached through a relay the test can cut."""
    url = f"{POSTGRES_URL}_relay"
    require(postgres_available(url), f"PostgreSQL is not reachable at {url}")
    target = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    relay = TcpRelay(target.port or 5432, target.hostname or "127.0.0.1").up()
    relayed = url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{relay.port}")
    built = build_app(relayed, tmp_path)  # the schema, through the relay
    yield built, relay
    relay.down()
    socketio.server = app.extensions[SERVER_KEY]  # build_app() pointed the singleton at `built`
    with built.app_context():
        db.engine.dispose()


def test_the_room_recovers_by_itself_after_a_database_outage_and_sends_what_was_typed(
        browser: Browser, database_behind_relay, tmp_path):
    built, relay = database_behind_relay
    with built.app_context():
        make = Factory()
        rural, specialist = make.rural(), make.specialist()
        consult = make.scheduled(rural, specialist)
        ref, email = consult.ref, rural.email
    node = NodeProcess({"SQLALCHEMY_DATABASE_URI": built.config["SQLALCHEMY_DATABASE_URI"],
                        "UPLOAD_DIR": str(tmp_path / "uploads"), "LOGIN_RATE_LIMIT": "1000 per minute"},
                       tmp_path / "node.log").start()
    context = browser.new_context(locale="en-GB")
    try:
        page = context.new_page()
        sign_in_and_open_room(page, node.url, email, ref)
        say(page, "before the outage")
        expect(delivered(page)).to_have_count(1)

        relay.down()  # PostgreSQL is unreachable from the node
        page.evaluate("window.huizhenRoom.socket.io.engine.close()")  # the page's connection drops
        banner = page.locator("#conn-banner")
        expect(banner).to_contain_text("Server busy, retrying in", timeout=15000)
        say(page, "typed during the outage")
        expect(page.locator("#messages .msg.pending")).to_have_count(1)
        time.sleep(10)  # the outage goes on; the page keeps retrying, backing off
        assert not page.evaluate("window.huizhenRoom.state().joined")
        expect(banner).to_contain_text("retrying in")

        relay.up()  # the database is back: the page recovers without a reload
        back = time.monotonic()
        page.wait_for_function("() => window.huizhenRoom.state().joined", timeout=45000)
        expect(delivered(page)).to_have_count(2, timeout=30000)
        print(f"\npage rejoined, sent the waiting message {time.monotonic() - back:.1f} s after the database returned")
        expect(page.locator("#messages .msg.pending")).to_have_count(0)
        expect(delivered(page).last).to_contain_text("typed during the outage")
        with built.app_context():
            bodies = db.session.scalars(select(Message.body).order_by(Message.seq)).all()
        assert bodies == ["before the outage", "typed during the outage"]
        assert "refusing a socket connect while the database fails" in node.log()
    finally:
        context.close()
        node.stop()


def test_a_reader_on_another_node_sees_chat_and_notes_written_while_redis_is_down(
        browser: Browser, make, own_redis, two_nodes):
    writer_node, reader_node = two_nodes
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    bound_ms = (TestingConfig.RESYNC_SECONDS + 8) * 1000  # the check interval; a browser on a loaded machine
    contexts = [browser.new_context(locale="en-GB") for _ in range(2)]
    try:
        writer, reader = (context.new_page() for context in contexts)
        sign_in_and_open_room(writer, writer_node.url, rural.email, consult.ref)
        sign_in_and_open_room(reader, reader_node.url, specialist.email, consult.ref)
        for page in (writer, reader):  # the notes start (and load Yjs) once they are in view
            page.locator("#notes").scroll_into_view_if_needed()
        say(writer, "before the outage")
        expect(delivered(reader)).to_have_count(1)  # live, through Redis
        expect(writer.locator("#notes-status")).to_have_text("All changes saved", timeout=bound_ms)

        own_redis.stop()
        for i in range(3):
            say(writer, f"written while Redis is down {i}")
        notes = writer.locator("textarea[data-section=history]")
        notes.click()
        writer.keyboard.type("Typed while Redis was down.", delay=10)
        expect(writer.locator("#notes-status")).to_have_text("All changes saved", timeout=bound_ms)
        expect(delivered(reader)).to_have_count(4, timeout=bound_ms)  # from the database, not the queue
        expect(delivered(reader).last).to_contain_text("written while Redis is down 2")
        expect(reader.locator("textarea[data-section=history]")).to_have_value(
            "Typed while Redis was down.", timeout=bound_ms)
        assert own_redis.proc is None  # all of it while Redis was still down

        own_redis.start()
        say(writer, "after Redis returned")
        expect(delivered(reader)).to_have_count(5, timeout=bound_ms)
        expect(delivered(reader).last).to_contain_text("after Redis returned")
    finally:
        for context in contexts:
            context.close()


def test_a_failed_join_is_retried_until_it_succeeds(browser: Browser, database_behind_relay, tmp_path):
    """The socket connects, but its join fails (the consults table is locked, and the database
    gives up waiting after 2 s): the page retries the join with backoff and says so, then joins."""
    built, _ = database_behind_relay
    with built.app_context():
        make = Factory()
        rural, specialist = make.rural(), make.specialist()
        consult = make.scheduled(rural, specialist)
        ref, email = consult.ref, rural.email
        database = db.engine.url.database
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" SET lock_timeout = \'2s\''))
    node = NodeProcess({"SQLALCHEMY_DATABASE_URI": built.config["SQLALCHEMY_DATABASE_URI"],
                        "UPLOAD_DIR": str(tmp_path / "uploads"), "LOGIN_RATE_LIMIT": "1000 per minute"},
                       tmp_path / "node.log").start()
    context = browser.new_context(locale="en-GB")
    locker = create_engine(built.config["SQLALCHEMY_DATABASE_URI"])
    try:
        page = context.new_page()
        sign_in_and_open_room(page, node.url, email, ref)
        with locker.connect() as conn:
            conn.execute(text("LOCK TABLE consults IN ACCESS EXCLUSIVE MODE"))  # held until rollback
            page.evaluate("window.huizhenRoom.socket.io.engine.close()")  # the page reconnects and joins
            banner = page.locator("#conn-banner")
            expect(banner).to_contain_text("Could not join the room, retrying in", timeout=20000)
            say(page, "typed while the join failed")
            time.sleep(3)
            assert not page.evaluate("window.huizhenRoom.state().joined")
            conn.rollback()  # the table is free again
        page.wait_for_function("() => window.huizhenRoom.state().joined", timeout=45000)
        expect(delivered(page)).to_have_count(1, timeout=30000)
        expect(delivered(page).last).to_contain_text("typed while the join failed")
    finally:
        context.close()
        node.stop()
        locker.dispose()
        with built.app_context(), db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" RESET lock_timeout'))


def test_a_page_whose_session_ended_goes_to_sign_in_instead_of_retrying(browser: Browser, live_server, make):
    rural, specialist = make.rural(), make.specialist()
    consult = make.scheduled(rural, specialist)
    context = browser.new_context(locale="en-GB")
    try:
        room = context.new_page()
        sign_in_and_open_room(room, live_server.url, rural.email, consult.ref)
        other = context.new_page()  # another tab of the same browser signs out
        other.goto(f"{live_server.url}/")
        other.get_by_role("button", name="Sign out").click()
        expect(other.get_by_role("button", name="Sign in")).to_be_visible()
        room.evaluate("window.huizhenRoom.socket.io.engine.close()")  # the room's socket reconnects
        room.wait_for_url("**/login?next=*", timeout=20000)  # refused as 'unauthorized': sign in
        assert f"/consults/{consult.ref}/room" in room.url.replace("%2F", "/")
    finally:
        context.close()
