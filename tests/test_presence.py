"""The shared presence store (webapp/presence.py) on a real Redis: two stores stand for two nodes.

A node's death is what Redis does when its heartbeat key expires (the key is deleted here, so the
tests do not wait on a clock); the multi-node behaviour end to end is in
tests/deploy/test_multinode_presence.py.
"""

from __future__ import annotations

import redis

from tests.conftest import free_port
from webapp.presence import SharedPresence, Snapshot
from webapp.realtime import Connections

NS = "/room"


def node(url: str) -> tuple[SharedPresence, Connections]:
    store = SharedPresence(url, ttl=30)
    store.start_heartbeat = lambda: None  # type: ignore[method-assign]  # the tests call beat() themselves
    return store, Connections(NS, store)


def user_ids(people: list[dict]) -> list[int]:
    return [p["user_id"] for p in people]


def test_each_node_sees_the_members_of_the_other(redis_url):
    (_, a), (_, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    b.add("sid-b", 7, 2, "Dr Zhou")
    b.add("sid-b2", 7, 2, "Dr Zhou")  # a second tab
    b.add("sid-x", 8, 3, "Dr Li")     # another consult
    assert a.people(7) == b.people(7) == [{"user_id": 1, "name": "Dr Ma", "connections": 1},
                                          {"user_id": 2, "name": "Dr Zhou", "connections": 2}]
    assert sorted(b.others(7, "sid-b")) == [1, 2] and a.others(7, "sid-a") == [2, 2]
    assert a.entry("sid-b") is None and b.entry("sid-b").ref == ""  # the sid → entry map stays local

    before = a.snapshot(7).rev
    b.remove("sid-b2")
    after = a.snapshot(7)
    assert after.rev > before and [p["connections"] for p in a.people(7)] == [1, 1]


def test_a_dead_nodes_members_vanish_and_the_living_node_is_told(redis_url):
    (store_a, a), (store_b, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    b.add("sid-b", 7, 2, "Dr Zhou")
    told: list[tuple[int, Snapshot]] = []
    b.on_change(lambda consult_id, snap: told.append((consult_id, snap)))
    rev = b.snapshot(7).rev

    redis.Redis.from_url(redis_url).delete(store_a.node_key())  # node A's heartbeat expired
    store_b.beat()

    assert len(told) == 1
    consult_id, snap = told[0]
    assert consult_id == 7 and [m.user_id for m in snap.vanished] == [1] and snap.rev > rev
    assert user_ids(b.people(7)) == [2] and b.others(7, "sid-b") == []
    fields = redis.Redis.from_url(redis_url, decode_responses=True).hkeys(store_b.room_key(NS, 7))
    assert not any(f.startswith(store_a.node + "|") for f in fields)  # deleted, not only hidden
    store_b.beat()
    assert len(told) == 1  # nothing changed since: nobody is told again


def test_an_emptied_redis_is_refilled_by_the_next_heartbeat_with_a_newer_revision(redis_url):
    (store_a, a), (store_b, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    b.add("sid-b", 7, 2, "Dr Zhou")
    rev = a.snapshot(7).rev
    told: list[int] = []
    a.on_change(lambda consult_id, snap: told.append(consult_id))

    redis.Redis.from_url(redis_url).flushdb()  # Redis restarted empty
    store_a.beat()
    store_b.beat()

    assert user_ids(a.people(7)) == user_ids(b.people(7)) == [1, 2]
    assert told == [7]
    assert a.snapshot(7).rev > rev  # clients holding the old revision accept the new lists


def test_a_removed_connection_is_not_put_back_by_a_heartbeat(redis_url):
    (store_a, a), (_, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    a.remove("sid-a")
    store_a.beat()
    assert b.people(7) == []


def test_without_redis_joins_and_reads_fall_back_to_this_nodes_connections(caplog):
    down = SharedPresence(f"redis://127.0.0.1:{free_port()}/0", ttl=30)  # nothing listens there
    down.start_heartbeat = lambda: None  # type: ignore[method-assign]
    table = Connections(NS, down)
    table.add("sid-a", 7, 1, "Dr Ma", "HZ-1")
    table.add("sid-b", 7, 2, "Dr Zhou", "HZ-1")
    assert user_ids(table.people(7)) == [1, 2] and table.others(7, "sid-a") == [2]
    assert table.snapshot(7).rev is None
    assert table.entry("sid-a").ref == "HZ-1"
    assert table.remove("sid-b").user_id == 2 and user_ids(table.people(7)) == [1]
    down.beat()  # the heartbeat fails quietly too
    assert "presence store unavailable" in caplog.text


def test_a_connection_that_moves_to_another_room_leaves_the_first(redis_url):
    (_, a), (_, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    a.add("sid-a", 8, 1, "Dr Ma")
    assert b.people(7) == [] and user_ids(b.people(8)) == [1]


def test_a_withdrawal_redis_missed_is_made_by_the_next_heartbeat(redis_url):
    (store_a, a), (_, b) = node(redis_url), node(redis_url)
    a.add("sid-a", 7, 1, "Dr Ma")
    a.add("sid-a2", 7, 1, "Dr Ma")
    store_a._failed("a test outage", ConnectionError("down"))  # as after a timeout: Redis is skipped a moment
    a.remove("sid-a2")
    assert [p["connections"] for p in b.people(7)] == [2]  # Redis still has it (the node is alive)
    store_a.beat()
    assert [p["connections"] for p in b.people(7)] == [1]


def test_a_rooms_local_members_are_indexed_through_joins_moves_and_leaves():
    """The send path reads one room's members per message: the per-consult index must follow every change."""
    table = Connections("/room")
    for i in range(200):  # many rooms: a room's members never include another room's
        table.add(f"s{i}", consult_id=i % 100, user_id=i, name=f"Dr {i}")
    assert sorted(m.sid for m in table.local_members(7)) == ["s107", "s7"]
    table.add("s7", consult_id=8, user_id=7, name="Dr 7")  # moved to another room
    assert [m.sid for m in table.local_members(7)] == ["s107"]
    assert sorted(m.sid for m in table.local_members(8)) == ["s108", "s7", "s8"]
    table.remove("s107")
    assert table.local_members(7) == [] and 7 not in table._by_consult  # an emptied room leaves no entry
    assert table.snapshot(8).members == table.local_members(8)
    assert {c: sorted(s for s, _, _ in v) for c, v in table.local_rooms().items() if c in (7, 8)} == {
        8: ["s108", "s7", "s8"]}
    table.remove("no-such-sid")
    assert len(table.sids()) == 199
