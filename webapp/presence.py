"""Who is in which consult room across every node: room members kept in Redis, expiring with their node.

Each node (one Socket.IO worker process) writes the connections it holds into one Redis hash per
namespace and consult (`huizhen:presence:<namespace>:<consult_id>`, field `<node>|<sid>`, value
`{"u": user_id, "n": name}`, plus a `#rev` counter that grows with every change) and keeps a
heartbeat key `huizhen:presence-node:<node>` alive with `PRESENCE_TTL_SECONDS` expiry. A reader
ignores, and deletes, the entries of nodes whose heartbeat has expired, so the connections of a
node killed with SIGKILL vanish within the TTL. Every heartbeat (a third of the TTL) each node
rewrites its own entries (an emptied or restarted Redis is refilled within one heartbeat) and checks
its rooms for vanished entries, telling the namespace through a callback. Node ids are new for each
process, so a restarted node never inherits the entries of the process it replaces: those expire.
A Redis failure never breaks a join or a send: callers fall back to this node's own table (logged).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import redis

log = logging.getLogger(__name__)
PREFIX = "huizhen:presence"
REV = "#rev"
RETRY_AFTER = 1.0  # seconds without trying Redis after it failed (the heartbeat still tries)

# Apply a change to one room's hash: delete the fields ARGV[3..2+n], set the pairs after them,
# refresh the hash's expiry (ARGV[1]) and, if anything changed, bump its revision. The revision
# starts from Redis's clock (microseconds), so it keeps growing even if the hash or Redis was lost.
# Returns {revision, changed}.
_CHANGE = """
local n = tonumber(ARGV[2])
local changed = 0
for i = 3, 2 + n do changed = changed + redis.call('HDEL', KEYS[1], ARGV[i]) end
for i = 3 + n, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    changed = changed + 1
  end
end
if redis.call('HEXISTS', KEYS[1], '#rev') == 0 then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], '#rev', t[1] .. string.rep('0', 6 - #t[2]) .. t[2])
end
local rev
if changed > 0 then rev = redis.call('HINCRBY', KEYS[1], '#rev', 1) else rev = redis.call('HGET', KEYS[1], '#rev') end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return {tonumber(rev), changed}
"""


class Member(NamedTuple):
    """One connection in a room, on some node."""

    sid: str
    user_id: int
    name: str


class Snapshot(NamedTuple):
    """A room's members across the cluster and the revision they were read at (None: local only)."""

    members: list[Member]
    rev: int | None
    vanished: list[Member]


class SharedPresence:
    """This process's view of the shared presence store in Redis (one per app)."""

    def __init__(self, url: str, ttl: int) -> None:
        self.ttl = max(2, int(ttl))
        self.node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1,
                                          retry_on_timeout=False, decode_responses=True)
        self._change = self.redis.register_script(_CHANGE)
        self._write_lock = threading.Lock()  # a heartbeat's rewrite never resurrects a removed entry
        self._down_until = 0.0
        self._warned = False
        self._unremoved: set[tuple[str, int, str]] = set()  # withdrawals Redis missed: (namespace, consult, sid)
        self._tables: list[Any] = []  # the namespaces' Connections, whose entries the heartbeat rewrites
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # --- keys ---------------------------------------------------------------------------------

    @staticmethod
    def room_key(namespace: str, consult_id: int) -> str:
        return f"{PREFIX}:{namespace}:{consult_id}"

    def node_key(self, node: str | None = None) -> str:
        return f"{PREFIX}-node:{node or self.node}"

    def field(self, sid: str) -> str:
        return f"{self.node}|{sid}"

    # --- failure handling ---------------------------------------------------------------------

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        if not self._warned:
            log.warning("presence store unavailable (%s: %s); using this node's connections only", what, exc)
            self._warned = True

    def _recovered(self) -> None:
        if self._warned:
            log.warning("presence store available again")
            self._warned = False

    # --- writes -------------------------------------------------------------------------------

    def _apply(self, key: str, delete: Iterable[str] = (), put: dict[str, str] | None = None) -> tuple[int, int]:
        args: list[Any] = [self.ttl * 4, 0]
        deletions = list(delete)
        args[1] = len(deletions)
        args.extend(deletions)
        for f, v in (put or {}).items():
            args.extend((f, v))
        rev, changed = self._change(keys=[key], args=args)
        return int(rev), int(changed)

    def add(self, namespace: str, consult_id: int, sid: str, user_id: int, name: str) -> bool:
        """Publish one joined connection; False if Redis could not be reached (it is rewritten later)."""
        self.start_heartbeat()
        if not self.available():
            return False
        try:
            with self._write_lock:
                self.redis.set(self.node_key(), "1", ex=self.ttl)
                self._apply(self.room_key(namespace, consult_id),
                            put={self.field(sid): json.dumps({"u": user_id, "n": name})})
            self._recovered()
            return True
        except (redis.RedisError, OSError) as exc:
            self._failed("add", exc)
            return False

    def remove(self, namespace: str, consult_id: int, sid: str) -> bool:
        """Withdraw one connection; if Redis cannot be reached, the heartbeat withdraws it later."""
        if not self.available():
            self._unremoved.add((namespace, consult_id, sid))
            return False
        try:
            with self._write_lock:
                self._apply(self.room_key(namespace, consult_id), delete=[self.field(sid)])
            self._recovered()
            return True
        except (redis.RedisError, OSError) as exc:
            self._unremoved.add((namespace, consult_id, sid))
            self._failed("remove", exc)
            return False

    # --- reads --------------------------------------------------------------------------------

    def snapshot(self, namespace: str, consult_id: int) -> Snapshot | None:
        """The room's members on live nodes (entries of expired nodes are deleted); None if Redis fails."""
        if not self.available():
            return None
        key = self.room_key(namespace, consult_id)
        try:
            raw: dict[str, str] = self.redis.hgetall(key)
            rev = int(raw.pop(REV, 0)) or None
            by_node: dict[str, list[tuple[str, str]]] = {}
            for f, value in raw.items():
                node, _, sid = f.rpartition("|")
                by_node.setdefault(node, []).append((sid, value))
            nodes = sorted(by_node)
            alive = dict(zip(nodes, self.redis.mget([self.node_key(n) for n in nodes]), strict=True)) if nodes else {}
            members, vanished, dead_fields = [], [], []
            for node, entries in by_node.items():
                for sid, value in entries:
                    member = _member(sid, value)
                    if alive.get(node) is not None or node == self.node:
                        if member is not None:
                            members.append(member)
                    else:
                        dead_fields.append(f"{node}|{sid}")
                        if member is not None:
                            vanished.append(member)
            if dead_fields:
                rev, _ = self._apply(key, delete=dead_fields)
            self._recovered()
            return Snapshot(members, rev, vanished)
        except (redis.RedisError, OSError, ValueError) as exc:
            self._failed("read", exc)
            return None

    # --- heartbeat ----------------------------------------------------------------------------

    def watch(self, table: Any) -> None:
        """Have the heartbeat rewrite and check this namespace's table (a realtime.Connections)."""
        if table not in self._tables:
            self._tables.append(table)

    def start_heartbeat(self) -> None:
        """Start the heartbeat once, in the serving process (after gunicorn forked)."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="presence-heartbeat", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # the heartbeat must outlive any failure
                log.exception("presence heartbeat failed")

    def beat(self) -> None:
        """Refresh this node's liveness, rewrite its entries and report rooms whose members changed."""
        try:
            with self._write_lock:
                self.redis.set(self.node_key(), "1", ex=self.ttl)
                changed_rooms = []
                for namespace, consult_id, sid in list(self._unremoved):
                    self._apply(self.room_key(namespace, consult_id), delete=[self.field(sid)])
                    self._unremoved.discard((namespace, consult_id, sid))
                for table in self._tables:
                    for consult_id, entries in table.local_rooms().items():
                        put = {self.field(sid): json.dumps({"u": uid, "n": name}) for sid, uid, name in entries}
                        _, changed = self._apply(self.room_key(table.namespace, consult_id), put=put)
                        if changed:
                            changed_rooms.append((table, consult_id))
            self._down_until = 0.0
            self._recovered()
        except (redis.RedisError, OSError) as exc:
            self._failed("heartbeat", exc)
            return
        restored = set((id(t), c) for t, c in changed_rooms)
        for table in self._tables:
            for consult_id in table.local_rooms():
                snap = self.snapshot(table.namespace, consult_id)
                if snap is not None and (snap.vanished or (id(table), consult_id) in restored):
                    table.changed(consult_id, snap)


def _member(sid: str, value: str) -> Member | None:
    try:
        data = json.loads(value)
        return Member(sid, int(data["u"]), str(data.get("n", "")))
    except (ValueError, KeyError, TypeError):
        return None


def people(members: Iterable[Member]) -> list[dict[str, Any]]:
    """The users among these connections, each with their number of connections, by user id."""
    seen: dict[int, dict[str, Any]] = {}
    for m in members:
        seen.setdefault(m.user_id, {"user_id": m.user_id, "name": m.name, "connections": 0})
        seen[m.user_id]["connections"] += 1
    return sorted(seen.values(), key=lambda p: p["user_id"])


Listener = Callable[[int, Snapshot], None]
