"""The room page through faults on the multi-node harness, in headless Chromium (issue 9, "Tests").

Two gunicorn/gevent nodes behind the shipped nginx configuration, with their own PostgreSQL and
Redis (tests/cluster.py), at the DEFAULT chat rate limit (CHAT_MESSAGES_PER_SECOND is not raised):

- a node killed with SIGKILL mid-conversation while its doctor keeps typing more messages than the
  per-second limit: the page reconnects through nginx to the survivor, and both doctors' pages show
  every message exactly once, each sender's messages in the order they were typed;
- Redis stopped for 20 s while one doctor (a python-socketio client on one node) writes and the other
  (a page on the other node) only reads: every stored message is on the reader's page within
  RESYNC_SECONDS + a margin after Redis returns, without a reload;
- PostgreSQL stopped for 12 s with the page's node restarted during the outage, so the page reconnects
  while the database is down: it says so, retries by itself, and sends what was typed once it is back.
Screenshots: test-artifacts/faults-*.png.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from config import ProductionConfig
from tests.browser.test_room_chat import DESKTOP, bodies, delivered, say, sign_in_and_open_room, wait_joined
from tests.deploy.test_multinode import stored
from tests.deploy.test_multinode_presence import on_node
from tests.rooms.test_realserver import NS, Peer
from webapp.extensions import db

pytestmark = [pytest.mark.cluster, pytest.mark.browser]

# No CHAT_MESSAGES_PER_SECOND here: the nodes run the default limit the backlog must get past.
CLUSTER_ENV: dict[str, str] = {}
RATE_LIMIT = ProductionConfig.CHAT_MESSAGES_PER_SECOND
RESYNC_SECONDS = ProductionConfig.RESYNC_SECONDS
# How late a stored message may reach the reader after Redis returns: one resync interval, plus a
# margin for a loaded 2-core machine running Chromium, two nodes, PostgreSQL and nginx.
RESYNC_MARGIN_SECONDS = 10
WAIT_MS = 60_000


def open_page(browser: Browser, base: str, email: str, ref: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=DESKTOP, locale="en-GB")
    context.set_default_timeout(30_000)
    page = context.new_page()
    sign_in_and_open_room(page, base, email, ref)
    return context, page


def shown(page: Page) -> list[str]:
    """Bodies of the messages the page shows as stored, top to bottom."""
    return delivered(page).locator(".body").all_inner_texts()


def assert_each_once_in_sender_order(page: Page, typed: dict[str, list[str]]) -> None:
    everything = [text for texts in typed.values() for text in texts]
    expect(delivered(page)).to_have_count(len(everything), timeout=WAIT_MS)
    on_page = shown(page)
    assert sorted(on_page) == sorted(everything), on_page  # every message, exactly once
    for texts in typed.values():  # each sender's in the order typed
        assert [t for t in on_page if t in texts] == texts, on_page
    seqs = page.evaluate("() => Array.from(document.querySelectorAll('#messages .msg')).map(m => +m.dataset.seq)")
    assert seqs == list(range(1, len(everything) + 1)), seqs  # no hole, no repeat, in stored order


def test_a_node_killed_mid_conversation_with_a_backlog_over_the_rate_limit_shows_everything_once_in_order(
        cluster, cluster_make, parties, browser: Browser, shots):
    ref = parties["ref"]
    x = cluster.node_behind_nginx()  # the browsers' address is pinned to node x; it will be killed
    y = 1 - x
    ctx_r, rural = open_page(browser, cluster.url, parties["rural"][0], ref)  # through nginx → node x
    ctx_s, spec = open_page(browser, cluster.node_url(y), parties["specialist"][0], ref)  # node y
    typed: dict[str, list[str]] = {"rural": [], "specialist": []}

    def talk(who: str, page: Page, text: str) -> None:
        say(page, text)
        typed[who].append(text)

    try:
        for n in range(1, 4):  # a conversation across the two nodes
            talk("rural", rural, f"Rural {n:02d}: obs round {n}")
            talk("specialist", spec, f"Specialist {n:02d}: noted {n}")
        expect(delivered(spec)).to_have_count(6, timeout=WAIT_MS)

        rural.evaluate("""() => { window.maxOutbox = 0; setInterval(() => { window.maxOutbox = Math.max(
            window.maxOutbox, window.huizhenRoom.state().outbox); }, 20); }""")  # the backlog's peak
        cluster.kill9(x)  # mid-conversation: no shutdown, the rural doctor's node is gone
        backlog = 3 * RATE_LIMIT  # typed at once, more than the per-second limit
        for n in range(4, 4 + backlog):
            talk("rural", rural, f"Rural {n:02d}: obs round {n}")
            if n % 5 == 0:  # the specialist keeps talking too
                talk("specialist", spec, f"Specialist {n:02d}: noted {n}")
        rural.screenshot(path=str(shots / "faults-kill9-backlog.png"), full_page=True)

        wait_joined(rural)  # reconnected through nginx, to the survivor
        for page in (rural, spec):
            assert_each_once_in_sender_order(page, typed)
        expect(rural.locator("#messages .msg.pending, #messages .msg.failed")).to_have_count(0)
        assert rural.evaluate("() => window.huizhenRoom.state().outbox") == 0
        peak = rural.evaluate("() => window.maxOutbox")
        print(f"\nthe rural page's outbox held up to {peak} unsent messages (limit {RATE_LIMIT} per second)")
        assert peak > RATE_LIMIT, peak  # the backlog was larger than the rate limit
        in_db = stored(cluster_make, ref)
        assert [seq for seq, _ in in_db] == list(range(1, len(in_db) + 1))
        assert len(in_db) == len(typed["rural"]) + len(typed["specialist"])
        for page in (rural, spec):
            expect(bodies(page)).to_have_count(len(in_db))
        rural.screenshot(path=str(shots / "faults-kill9-after.png"), full_page=True)
    finally:
        ctx_r.close()
        ctx_s.close()
        cluster.restart(x)


def test_a_reader_sees_every_stored_message_within_the_resync_bound_after_a_20_s_redis_outage(
        cluster, cluster_make, parties, browser: Browser, shots):
    ref, (writer_email, writer_id) = parties["ref"], parties["rural"]
    client = on_node(cluster, 0, writer_email, [NS])  # the writer on node 0, a python-socketio client
    ctx, reader = open_page(browser, cluster.node_url(1), parties["specialist"][0], ref)  # reads on node 1
    bound = RESYNC_SECONDS + RESYNC_MARGIN_SECONDS
    try:
        writer = Peer(client, writer_id)
        writer.join(ref)
        written = 0

        def write(text: str) -> None:
            nonlocal written
            written += 1
            ack = writer.send(ref, f"redis-{written:03d}", text)
            assert ack["ok"], ack

        write("before the outage")
        expect(delivered(reader)).to_have_count(1, timeout=WAIT_MS)  # live, through Redis

        cluster.stop_redis()
        stopped = time.monotonic()
        while time.monotonic() - stopped < 20:  # 20 s of writing at 2 a second (under the limit)
            write(f"written while Redis is down {written:03d}")
            time.sleep(0.5)
        cluster.start_redis()  # empty: nothing of the outage is in it
        back = time.monotonic()

        total = len(stored(cluster_make, ref))
        assert total == written
        expect(delivered(reader)).to_have_count(total, timeout=bound * 1000)
        shown_after = time.monotonic() - back
        print(f"\n{total} stored messages, all on the reader's page {shown_after:.1f} s after Redis returned "
              f"(bound {bound} s)")
        assert shown_after <= bound, shown_after
        expected = ["before the outage", *(f"written while Redis is down {n:03d}" for n in range(1, written))]
        assert shown(reader) == expected  # each once, in the order written
        seqs = reader.evaluate("() => Array.from(document.querySelectorAll('#messages .msg')).map(m => +m.dataset.seq)")
        assert seqs == list(range(1, total + 1)), seqs

        write("after Redis returned")  # and what is written next arrives too
        expect(delivered(reader)).to_have_count(total + 1, timeout=bound * 1000)
        expect(delivered(reader).last).to_contain_text("after Redis returned")
        reader.screenshot(path=str(shots / "faults-redis-reader.png"), full_page=True)
    finally:
        client.disconnect()
        ctx.close()
        if cluster.redis.proc is None:
            cluster.start_redis()
        cluster.wait_healthy()


def test_a_page_reconnecting_while_postgresql_is_down_recovers_by_itself_and_sends_what_was_typed(
        cluster, cluster_make, parties, browser: Browser, shots):
    ref = parties["ref"]
    ctx, page = open_page(browser, cluster.node_url(0), parties["rural"][0], ref)
    try:
        say(page, "before the outage")
        expect(delivered(page)).to_have_count(1, timeout=WAIT_MS)

        cluster.stop_postgres()
        stopped = time.monotonic()
        cluster.restart(0)  # the page's node restarts during the outage: the page must connect again
        banner = page.locator("#conn-banner")
        expect(banner).to_contain_text("Server busy, retrying in", timeout=WAIT_MS)  # refused, not hung
        say(page, "typed during the outage")
        expect(page.locator("#messages .msg.pending")).to_have_count(1)
        time.sleep(max(0.0, 12 - (time.monotonic() - stopped)))  # the database stays down 12 s at least
        assert not page.evaluate("window.huizhenRoom.state().joined")
        page.screenshot(path=str(shots / "faults-postgres-down.png"), full_page=True)

        cluster.start_postgres()
        back = time.monotonic()
        page.wait_for_function("() => window.huizhenRoom.state().joined", timeout=WAIT_MS)
        expect(delivered(page)).to_have_count(2, timeout=WAIT_MS)
        print(f"\nthe page rejoined and sent the waiting message {time.monotonic() - back:.1f} s after "
              f"PostgreSQL returned")
        expect(page.locator("#messages .msg.pending")).to_have_count(0)
        expect(delivered(page).last).to_contain_text("typed during the outage")
        db.session.connection().invalidate()  # the test side's connection died with the server
        db.session.rollback()
        assert [seq for seq, _ in stored(cluster_make, ref)] == [1, 2]
        page.screenshot(path=str(shots / "faults-postgres-after.png"), full_page=True)
    finally:
        ctx.close()
        with contextlib.suppress(RuntimeError):  # already running unless the test failed first
            cluster.start_postgres()
        cluster.wait_healthy()
