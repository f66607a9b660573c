"""Booking under contention: N rural doctors book the same slot of one specialist at the same moment.

    .venv/bin/python -m bench.booking_race --clients 100 --rounds 5 --db postgresql

Prepares a fresh database (migrations, one specialist with availability around the clock, and
N + rounds - 1 accepted consults, one per rural doctor, all with that specialist, through the
services), starts Huizhen with the production config under gunicorn (gevent, one worker by default),
signs every rural doctor in through the login form and opens their booking page (GET, for the CSRF
token), then in each round releases all N POST /consults/<ref>/book of one slot at once (each client
on its own keep-alive connection, released together after a barrier). Latency is measured from the
common release to each response. Exactly one may win (302 to the consult); every other must get the
"just booked" refusal (409) and leave its consult ACCEPTED without an appointment; the database is
checked after each round. The next round's slot is the next free one, booked by the N consults
still without a time.

`--mode form` posts the page's form as a browser without JavaScript does (302 for the winner, the
409 page for the losers); `--mode json` posts as the page's script does (static/js/book.js: fetch with
Accept: application/json and the token in X-CSRFToken; 200 {"ok", "redirect"} for the winner, a 409
JSON refusal for the losers); `--mode form,json` (the default) runs `--rounds` rounds of each on the
same server, one mode after the other, and prints both.

Prints per round and overall p50 / p95 / p99 / max of the winner and of the losers (`--json FILE`
keeps every number). Before the booking rounds, the same clients each GET /healthz at once, as many
rounds: the floor one worker sets for N simultaneous requests that do almost nothing. After them,
the server CPU of one request alone (`--serial` times each: a loser's POST, GET /healthz). `--profile DIR`
records a py-spy folded profile of the server over the floor and booking rounds (not the sign-in).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.chat_bench import (
    BIN,
    PASSWORD,
    ROOT,
    database_url,
    fresh_database,
    pct,
    postgres_pids,
    start_server,
    stop_server,
    tree_cpu,
)

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def prepare(url: str, consults_wanted: int) -> tuple[str, list[tuple[str, str]]]:
    """Migrate a fresh database; one specialist, and one accepted consult without a time per rural doctor."""
    from flask_migrate import upgrade

    from config import DevelopmentConfig
    from webapp import create_app
    from webapp.auth.services import Registration, create_user
    from webapp.consults import services as consults
    from webapp.extensions import db
    from webapp.models import AccountStatus, Facility, FacilityLevel, Partnership, Role, Sex, Urgency, User
    from webapp.scheduling import services as scheduling

    fresh_database(url)
    overrides: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": url, "ARGON2_FAST": True,
                                 "SECRET_KEY": secrets.token_urlsafe(48)}
    if url.startswith("postgresql"):  # setup only
        overrides["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"options": "-c synchronous_commit=off"}}
    app = create_app(DevelopmentConfig, overrides)
    made = []
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        county = Facility(name="Bench County Hospital", level=FacilityLevel.COUNTY_HOSPITAL, region="Gansu")
        regional = Facility(name="Bench Regional Centre", level=FacilityLevel.REGIONAL_MEDICAL_CENTRE,
                            region="Gansu")
        db.session.add_all([county, regional])
        db.session.flush()
        db.session.add(Partnership(facility_id=county.id, partner_id=regional.id))
        db.session.commit()

        def person(email: str, role: Role, facility: Facility, n: int) -> User:
            return create_user(Registration(
                email=email, password=PASSWORD, full_name=f"{role.label} {n}", role=role,
                facility_id=facility.id, licence_number=f"BENCH{n:06d}", timezone="Asia/Shanghai",
                languages=("zh-CN",), specialty="cardiology" if role == Role.SPECIALIST else None,
            ), status=AccountStatus.APPROVED)

        specialist = person("specialist@bench.test", Role.SPECIALIST, regional, 0)
        db.session.commit()
        # office hours on weekdays: 160 bookable 30-minute slots over the 14-day horizon
        scheduling.set_availability(specialist, [scheduling.Window(day, start * 60, end * 60)
                                                 for day in range(5) for start, end in ((8, 12), (14, 18))])
        for i in range(consults_wanted):
            rural = person(f"rural{i}@bench.test", Role.RURAL_DOCTOR, county, i + 1)
            db.session.commit()
            consult = consults.create_draft(rural, consults.CaseData(
                specialty="cardiology", urgency=Urgency.ROUTINE, patient_age_years=50 + i % 40,
                patient_sex=Sex.FEMALE if i % 2 else Sex.MALE, chief_complaint="Palpitations",
                history="Two months of intermittent palpitations.", findings="ECG: sinus rhythm.",
                question="Holter monitoring or referral?",
            ))
            consults.submit(rural, consult.ref)
            consults.accept(specialist, consult.ref)  # accepted, no time yet: the requester books it
            made.append((consult.ref, rural.email))
        spec_id = specialist.id
        db.session.remove()
        db.engine.dispose()
    return str(spec_id), made


def free_slots(url: str, specialist_id: int, count: int) -> list[str]:
    """The specialist's next open slots (ISO, as the booking form posts them), two days ahead and on."""
    from config import DevelopmentConfig
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import User
    from webapp.scheduling import services as scheduling

    app = create_app(DevelopmentConfig, {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": secrets.token_urlsafe(48)})
    with app.app_context():
        slots = scheduling.open_slots(db.session.get(User, specialist_id))
        # every other slot from the 20th on: each round's slot shares no block with another's
        picked = [s.starts_at.isoformat() for s in slots[20::2][:count]]
        db.session.remove()
        db.engine.dispose()
    return picked


def check_round(url: str, refs: list[str], slot: str) -> dict[str, Any]:
    """What the database holds after a round: appointments on the slot, consults of the round by status."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        holders = conn.execute(text(
            "SELECT c.ref FROM appointments a JOIN consults c ON c.id = a.consult_id "
            "WHERE a.starts_at = :s AND a.cancelled_at IS NULL"), {"s": datetime.fromisoformat(slot)}).scalars().all()
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM consults WHERE ref = ANY(:r) GROUP BY status"
            if url.startswith("postgresql") else
            "SELECT status, count(*) FROM consults GROUP BY status"), {"r": refs}).all())
    engine.dispose()
    return {"holders": list(holders), "statuses": {str(k): v for k, v in statuses.items()}}


class Client:
    def __init__(self, ref: str, email: str) -> None:
        self.ref, self.email = ref, email
        self.http: Any = None
        self.token = ""
        self.booked = False


async def sign_in(base: str, client: Client) -> None:
    import aiohttp

    client.http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1, force_close=False),
        cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.http.get(f"{base}/login") as r:
        token = CSRF_RE.search(await r.text()).group(1)
    async with client.http.post(f"{base}/login", allow_redirects=False,
                                data={"email": client.email, "password": PASSWORD, "csrf_token": token}) as r:
        if r.status != 302:
            raise RuntimeError(f"login of {client.email} failed: HTTP {r.status}")
    async with client.http.get(f"{base}/consults/{client.ref}/book") as r:
        page = await r.text()
        if r.status != 200:
            raise RuntimeError(f"book page of {client.ref}: HTTP {r.status}")
    client.token = CSRF_RE.search(page).group(1)


async def warm(base: str, client: Client) -> None:
    async with client.http.get(f"{base}/healthz") as r:
        await r.read()


async def floor(base: str, clients: list[Client]) -> list[float]:
    """The same clients each GET /healthz at once (no sign-in, one database round trip): what one
    worker needs for N simultaneous requests that do almost nothing; ms since the release each."""
    release = asyncio.Event()
    times: list[float] = []
    t0 = 0.0

    async def one(c: Client) -> None:
        await release.wait()
        async with c.http.get(f"{base}/healthz") as r:
            await r.read()
            times.append((time.perf_counter() - t0) * 1000)

    tasks = [asyncio.create_task(one(c)) for c in clients]
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    release.set()
    await asyncio.gather(*tasks)
    return times


WON = {"form": 302, "json": 200}  # the winner's status per mode
MODES = {"form": "the form, no script", "json": "book.js: fetch, Accept: application/json, X-CSRFToken"}


def book_request(base: str, c: Client, slot: str, mode: str) -> dict[str, Any]:
    """The booking POST as the page sends it: its form (no script), or book.js's fetch (JSON)."""
    request: dict[str, Any] = {"url": f"{base}/consults/{c.ref}/book", "allow_redirects": False,
                               "data": {"slot": slot, "csrf_token": c.token}}
    if mode == "json":
        request["headers"] = {"Accept": "application/json", "X-CSRFToken": c.token}
    return request


def just_booked(body: str) -> bool:
    """Whether a refusal says the slot was just taken (English or Chinese, a page or JSON)."""
    if body.startswith("{"):
        body = json.loads(body).get("message", "")
    return "just been booked" in body or "该时间刚被另一会诊预约" in body


async def race(base: str, clients: list[Client], slot: str, mode: str) -> list[dict[str, Any]]:
    """All clients POST the same slot at once; (status, ms since release) each."""
    release = asyncio.Event()
    results: list[dict[str, Any]] = []
    t0 = 0.0

    async def one(c: Client) -> None:
        await release.wait()
        async with c.http.post(**book_request(base, c, slot, mode)) as r:
            body = await r.text()
            results.append({"ref": c.ref, "status": r.status, "ms": (time.perf_counter() - t0) * 1000,
                            "just_booked": just_booked(body)})

    tasks = [asyncio.create_task(one(c)) for c in clients]
    await asyncio.sleep(0.2)  # every task waits on the event
    t0 = time.perf_counter()
    release.set()
    await asyncio.gather(*tasks)
    return results


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99),
            "max": max(values)}


def fmt(s: dict[str, float]) -> str:
    if not s:
        return "-"
    return f"{s['p50']:.0f} / {s['p95']:.0f} / {s['p99']:.0f} / {s['max']:.0f}"


async def run(args: argparse.Namespace, base: str, db_url: str, made: list[tuple[str, str]],
              slots: list[str], server_pids: list[int]) -> dict[str, Any]:
    clients = [Client(ref, email) for ref, email in made]
    for i in range(0, len(clients), 20):
        await asyncio.gather(*(sign_in(base, c) for c in clients[i:i + 20]))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--format", "raw", "--subprocesses",
                                "--rate", "500", "-o", str(Path(args.profile) / "server.folded"),
                                "--pid", str(server_pids[0])], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
        await asyncio.sleep(2)  # py-spy attached
    floors = []
    for _ in range(args.rounds):
        await asyncio.gather(*(warm(base, c) for c in clients))
        floors.append(await floor(base, clients[:args.clients]))
        await asyncio.sleep(args.pause)
    by_mode: dict[str, dict[str, Any]] = {}
    pg = postgres_pids()
    booked = 0
    for m, mode in enumerate(args.modes):
        rounds = []
        cpu0, pg0 = tree_cpu(server_pids), tree_cpu(pg)
        for slot in slots[m * args.rounds:(m + 1) * args.rounds]:
            if args.warmup_gets:  # every client's keep-alive connection open and warm before the race
                await asyncio.gather(*(warm(base, c) for c in clients if not c.booked))
            racers = [c for c in clients if not c.booked][:args.clients]
            results = await race(base, racers, slot, mode)
            for r in results:
                if r["status"] == WON[mode]:
                    next(c for c in racers if c.ref == r["ref"]).booked = True
            booked += 1
            db = check_round(db_url, [c.ref for c in racers], slot)
            winners = [r for r in results if r["status"] == WON[mode]]
            losers = [r for r in results if r["status"] != WON[mode]]
            ok = (len(winners) == 1 and len(db["holders"]) == 1 and db["holders"][0] == winners[0]["ref"]
                  and all(r["status"] == 409 and r["just_booked"] for r in losers)
                  and db["statuses"].get("ConsultStatus.SCHEDULED", db["statuses"].get("scheduled", 0)) <= booked)
            rounds.append({"slot": slot, "results": results, "db": db, "correct": ok,
                           "winner": summary([r["ms"] for r in winners]),
                           "losers": summary([r["ms"] for r in losers]),
                           "statuses": sorted({r["status"] for r in results})})
            await asyncio.sleep(args.pause)
        by_mode[mode] = {"rounds": rounds, "server_cpu_s": tree_cpu(server_pids) - cpu0,
                         "postgres_cpu_s": tree_cpu(pg) - pg0}
    # The cost of one request alone: a loser's POST (a taken slot) in each mode and GET /healthz, one at a time.
    loser = next(c for c in clients if not c.booked)
    cost = {}
    requests = [(f"loser POST ({mode})", "post", book_request(base, loser, slots[0], mode)) for mode in args.modes]
    requests.append(("GET /healthz", "get", {"url": f"{base}/healthz"}))
    for name, method, request in requests:
        before, t = tree_cpu(server_pids), time.perf_counter()
        for _ in range(args.serial):
            async with getattr(loser.http, method)(**request) as r:
                await r.read()
        cost[name] = {"cpu_ms": (tree_cpu(server_pids) - before) * 1000 / args.serial,
                      "wall_ms": (time.perf_counter() - t) * 1000 / args.serial}
    if args.profile:
        spy.send_signal(2)
        spy.wait(timeout=60)
    for c in clients:
        await c.http.close()
    return {"modes": by_mode, "floor_ms": [x for f in floors for x in f], "serial": cost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--db-name", default="huizhen_booking_bench")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=5391)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--warmup-gets", action="store_true", default=True)
    parser.add_argument("--serial", type=int, default=50, help="requests for the one-at-a-time cost")
    parser.add_argument("--json")
    parser.add_argument("--profile", help="directory for a py-spy folded profile of the server")
    parser.add_argument("--mode", default="form,json",
                        help="form (the page without script), json (book.js's fetch), or both: form,json")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not args.modes or any(m not in WON for m in args.modes):
        parser.error("--mode takes form, json or form,json")

    workdir = Path(tempfile.mkdtemp(prefix="booking-race-"))
    db_url = database_url(args.db, workdir, args.db_name)
    t = time.time()
    races = args.rounds * len(args.modes)
    spec_id, made = prepare(db_url, args.clients + races - 1)
    slots = free_slots(db_url, int(spec_id), races)
    print(f"world: 1 specialist, {len(made)} accepted consults in {time.time() - t:.1f} s; db {args.db}")
    # each doctor's browser keeps its connection from loading the booking page (gunicorn's default 2 s
    # keep-alive would close it between rounds)
    os.environ["GUNICORN_CMD_ARGS"] = "--keep-alive 120"
    server = start_server("gevent", "huizhen", args.port, db_url, "", workdir, 1000, args.workers)
    try:
        load0 = os.getloadavg()
        out = asyncio.run(run(args, server.url, db_url, made, slots, [server.proc.pid]))
        load1 = os.getloadavg()
    finally:
        stop_server(server)
    floor = summary(out["floor_ms"])
    print(f"\n{args.clients} concurrent POST /consults/<ref>/book of one slot, gunicorn gevent "
          f"x{args.workers}, {args.db}; ms from the common release (p50 / p95 / p99 / max); "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    for mode, result in out["modes"].items():
        rows = result["rounds"]
        print(f"\nmode {mode} ({MODES[mode]})\n")
        print("| round | correct | statuses | winner ms | losers ms (p50 / p95 / p99 / max) |")
        print("| --- | --- | --- | --- | --- |")
        for i, r in enumerate(rows, 1):
            print(f"| {i} | {'yes' if r['correct'] else 'NO'} | {r['statuses']} | "
                  f"{r['winner'].get('max', float('nan')):.0f} | {fmt(r['losers'])} |")
        all_losers = [x["ms"] for r in rows for x in r["results"] if x["status"] != WON[mode]]
        all_winners = [x["ms"] for r in rows for x in r["results"] if x["status"] == WON[mode]]
        every = all_losers + all_winners
        print(f"| all | {'yes' if all(r['correct'] for r in rows) else 'NO'} | | {fmt(summary(all_winners))} | "
              f"{fmt(summary(all_losers))} |")
        print(f"\n{mode}: all booking requests {fmt(summary(every))} ms; server CPU {result['server_cpu_s']:.2f} s "
              f"({result['server_cpu_s'] * 1000 / max(1, len(every)):.1f} ms/request), postgres CPU "
              f"{result['postgres_cpu_s']:.2f} s")
    print(f"\nfloor: {args.clients} x GET /healthz at once, {args.rounds} rounds: {fmt(floor)} ms")
    for name, c in out["serial"].items():
        print(f"one at a time ({args.serial}x): {name}: server CPU {c['cpu_ms']:.1f} ms, "
              f"response {c['wall_ms']:.1f} ms")
    print(f"server log: {server.log}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "machine": platform.platform(), "cpus": os.cpu_count(),
            "python": sys.version, **out}, indent=1, default=str))
    return 0 if all(r["correct"] for m in out["modes"].values() for r in m["rounds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
