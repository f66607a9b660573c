"""What the resync check costs the server, next to the events it is meant to be cheap beside.

    .venv/bin/python -m bench.resync_bench --db postgresql --count 2000

Every open room page asks its node for the room's latest seq every RESYNC_SECONDS ('head'), so the
check must cost far less than a chat message. This drives one joined connection with the
Flask-SocketIO test client (no network: the server's own work, handler and database) and prints,
per event, the mean wall time and the mean CPU time of this process: 'head' (one guarded
statement), 'backfill' with nothing missing (what a client would ask without 'head'), and 'send'.
The per-connection rate gate of 'head' is reset between calls (the bench asks back to back).
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/huizhen_bench_resync"


def main() -> None:
    """Run the three events --count times each and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    from tests.conftest import Factory, IsolatedSocketClient, build_app, login
    from webapp.rooms.state import room_state

    tmp = Path(tempfile.mkdtemp(prefix="resync-bench-"))
    url = PG if args.db == "postgresql" else f"sqlite:///{tmp / 'bench.db'}"
    app = build_app(url, tmp, CHAT_MESSAGES_PER_SECOND=1_000_000)
    with app.app_context():
        make = Factory()
        rural, specialist = make.rural(), make.specialist()
        consult = make.scheduled(rural, specialist)
        flask_client = app.test_client()
        login(flask_client, rural)
        sock = IsolatedSocketClient(app, flask_client, "/room")
        ref = consult.ref
        assert sock.emit("join", {"ref": ref}, namespace="/room", callback=True)["ok"]
        assert sock.emit("send", {"ref": ref, "client_id": "bench-first", "body": "first"},
                         namespace="/room", callback=True)["ok"]

        def head(i: int) -> dict:
            room_state(app).head_gate.clear()
            return sock.emit("head", {"ref": ref}, namespace="/room", callback=True)

        def backfill(i: int) -> dict:
            return sock.emit("backfill", {"ref": ref, "after_seq": last[0]},
                             namespace="/room", callback=True)

        def send(i: int) -> dict:
            ack = sock.emit("send", {"ref": ref, "client_id": f"bench-{i:08d}", "body": f"message {i}"},
                            namespace="/room", callback=True)
            last[0] = ack["message"]["seq"]
            return ack

        last = [1]
        rows = []
        for name, fn in (("send", send), ("head", head), ("backfill (nothing missing)", backfill)):
            fn(-1 if name != "send" else 10**7)  # warm up
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(args.count):
                ack = fn(i)
                assert ack["ok"], ack
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append((name, wall / args.count * 1000, cpu / args.count * 1000))

    print(f"resync_bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, db={args.db}, "
          f"{args.count} events each, one connection, test client (no network)")
    print("| event | wall ms/event | CPU ms/event | vs send (CPU) |")
    print("|---|---|---|---|")
    base = rows[0][2]
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / base:.2f} |")


if __name__ == "__main__":
    main()
